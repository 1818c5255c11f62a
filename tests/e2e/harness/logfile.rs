//! [`LogFile`]: an application's log file as the application writes it — opened with
//! `O_APPEND` and kept open — rotated by rename or by copytruncate like logrotate does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A log file held open for appending.
pub struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    /// Creates (or opens) `path` for appending.
    pub fn create(path: &Path) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            file: open_append(path),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends each line with a newline, in one write.
    pub fn append(&mut self, lines: &[String]) {
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .expect("append to the log file");
    }

    /// Appends bytes as they are (e.g. half a line).
    pub fn append_raw(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).expect("append to the log file");
    }

    /// logrotate's default: renames the file to `to`. This handle still writes to the
    /// renamed file, as an application does until it reopens; see [`LogFile::reopen`].
    pub fn rename_to(&self, to: &Path) {
        std::fs::rename(&self.path, to).expect("rename the log file");
    }

    /// What the application does after a rename: opens a new file at the old path.
    pub fn reopen(&mut self) {
        self.file = open_append(&self.path);
    }

    /// logrotate's `copytruncate`: copies the file to `to`, then truncates it in place.
    /// The application keeps writing to the same (now empty) file.
    pub fn copytruncate_to(&self, to: &Path) {
        std::fs::copy(&self.path, to).expect("copy the log file");
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| f.set_len(0))
            .expect("truncate the log file");
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for appending: {e}", path.display()))
}
