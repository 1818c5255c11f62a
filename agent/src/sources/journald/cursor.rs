//! The cursor file: the `__CURSOR` of the last journal entry durable in the WAL. Owns the
//! file's format and its crash-atomic replacement; the reader decides when to save.
//!
//! `state_dir/journal_cursor.json`, replaced whole through [`crate::durable::write_atomic`]
//! (temporary file, fsync, rename, directory fsync):
//!
//! ```json
//! {"version":1,"cursor":"s=…;i=2a;b=…;m=…;t=…;x=…"}
//! ```
//!
//! | field    | meaning |
//! |----------|---------|
//! | `cursor` | every entry up to and including this one is durable in the WAL; `null`: none yet, read from the journal's start |
//!
//! No file means the source never started: `read_from` applies. Saved only after the
//! append holding the entry completed, so a crash costs duplicates, never a gap.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name in the source's state directory.
pub const CURSOR_FILE: &str = "journal_cursor.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    cursor: Option<String>,
}

/// Reads and writes the cursor file of one source.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    /// The cursor file in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        CursorFile {
            path: state_dir.join(CURSOR_FILE),
        }
    }

    /// `None`: no file (first start). `Some(None)`: started, no entry durable yet.
    pub fn load(&self) -> crate::Result<Option<Option<String>>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(crate::Error::io("read journal cursor", &self.path, e)),
        };
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
            crate::Error::io(
                "parse journal cursor",
                &self.path,
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })?;
        Ok(Some(doc.cursor))
    }

    /// Replaces the file, durably.
    pub fn save(&self, cursor: Option<&str>) -> crate::Result<()> {
        let doc = Document {
            version: VERSION,
            cursor: cursor.map(str::to_string),
        };
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        crate::durable::write_atomic(&self.path, &bytes)
            .map_err(|e| crate::Error::io("write journal cursor", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_a_first_start_and_a_saved_cursor_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = CursorFile::new(dir.path());
        assert_eq!(f.load().unwrap(), None);
        f.save(None).unwrap();
        assert_eq!(f.load().unwrap(), Some(None));
        f.save(Some("s=1;i=2")).unwrap();
        assert_eq!(f.load().unwrap(), Some(Some("s=1;i=2".into())));
        assert!(!dir.path().join("journal_cursor.tmp").exists());
    }
}
