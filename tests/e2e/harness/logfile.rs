//! [`LogFile`]: an application's log file as the application writes it — opened with
//! `O_APPEND` and kept open — rotated by rename or by copytruncate like logrotate does;
//! [`LogWriter`]: one written from another thread, as traffic that something (a reload)
//! happens in the middle of.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{numbered_lines, wait_until, SHORT};

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

/// Lines appended to a log file from another thread, a few every few milliseconds, until
/// stopped.
pub struct LogWriter {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<(LogFile, Vec<String>)>,
}

impl LogWriter {
    /// Starts appending [`numbered_lines`] with `prefix` to `log`.
    pub fn start(mut log: LogFile, prefix: &'static str) -> LogWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || {
                let mut all = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let lines = numbered_lines(prefix, all.len(), 5);
                    log.append(&lines);
                    all.extend(lines);
                    written.store(all.len(), Ordering::Relaxed);
                    // Pacing, not waiting: about 1,000 lines a second.
                    std::thread::sleep(Duration::from_millis(5));
                }
                (log, all)
            })
        };
        LogWriter {
            stop,
            written,
            thread,
        }
    }

    /// Waits until `more` lines were written after this call.
    pub async fn wait_for_more(&self, more: usize) {
        let target = self.written.load(Ordering::Relaxed) + more;
        wait_until(SHORT, format!("{target} lines written"), async || {
            self.written.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    /// Stops writing; the log file and every line written.
    pub fn stop(self) -> (LogFile, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer thread")
    }
}
