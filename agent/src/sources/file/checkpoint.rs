//! The checkpoint file: how far each followed file is durable in the WAL. Owns the file's
//! format, its crash-atomic replacement and its loading; the tailer decides what goes in.
//!
//! `state_dir/checkpoints.json`, replaced whole by writing `checkpoints.json.tmp` and
//! renaming it over, so a reader sees the old or the new file, never a mix:
//!
//! ```json
//! {"version":1,"files":[{"dev":2049,"ino":1311,"created":1700000000123456789,
//!   "fp_len":1024,"fp_hash":1234567890,"path":"/var/log/app/app.log","offset":52817,
//!   "before_len":1024,"before_hash":987654321,"size":60000}]}
//! ```
//!
//! | field      | meaning |
//! |------------|---------|
//! | `dev`,`ino`| the file's device and inode |
//! | `created`  | birth time in ns since the epoch, if the file system has one (else absent) |
//! | `fp_len`   | bytes the fingerprint covers (up to 1024) |
//! | `fp_hash`  | FNV-1a 64 of those bytes |
//! | `path`     | where the file was last seen (for logs, and to look for it after a rename) |
//! | `offset`   | every byte before it is durable in the WAL; reading resumes here |
//! | `before_len`,`before_hash` | the anchor: FNV-1a 64 of the `before_len` (= min(offset, 1024)) bytes just before `offset`; reading resumes at `offset` only if they are unchanged (absent in older files: the file is read again from its start unless the first-bytes fingerprint covers `offset`) |
//! | `size`     | the file's size when last seen; if the file is gone at the next start, `size - offset` bytes were lost and a `source_overflow` gap record says so (absent in older files: 0) |
//!
//! `kill -9` needs only the rename. Against power loss the temporary file and the
//! directory are also synced, at most once per [`SYNC_EVERY`]: a lost rename then costs
//! duplicates, never a gap, because an older checkpoint only ever holds smaller offsets.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fingerprint::{FileId, Fingerprint};

/// The file name in the source's state directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";
const TMP_FILE: &str = "checkpoints.json.tmp";
/// Longest time between syncs of the checkpoint file and its directory.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
const VERSION: u32 = 1;

/// One followed file's durable position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Birth time, ns since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Bytes the fingerprint covers.
    pub fp_len: u32,
    /// FNV-1a 64 of those bytes.
    pub fp_hash: u64,
    /// Where the file was last seen.
    pub path: String,
    /// First byte not yet durable in the WAL.
    pub offset: u64,
    /// Bytes the anchor covers (those just before `offset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_len: Option<u32>,
    /// FNV-1a 64 of those bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<u64>,
    /// The file's size when last seen: if the file is gone at the next start, the bytes
    /// between `offset` and this were lost (reported as a `source_overflow` gap).
    #[serde(default)]
    pub size: u64,
}

impl Entry {
    /// The file's device and inode.
    pub fn id(&self) -> FileId {
        FileId {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// The fingerprint it recorded.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            len: self.fp_len,
            hash: self.fp_hash,
        }
    }

    /// The anchor it recorded (the fingerprint of the bytes just before `offset`), if any.
    pub fn anchor(&self) -> Option<Fingerprint> {
        Some(Fingerprint {
            len: self.before_len?,
            hash: self.before_hash?,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    files: Vec<Entry>,
}

/// What was found at start.
#[derive(Debug)]
pub struct Loaded {
    /// No checkpoint file existed: the source starts for the first time, and
    /// `read_from = "end"` applies to the files present now.
    pub first_start: bool,
    /// The recorded positions.
    pub entries: Vec<Entry>,
}

/// Writes the checkpoint file of one source.
#[derive(Debug)]
pub struct CheckpointFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    last_sync: Option<Instant>,
    /// A write since the last sync.
    unsynced: bool,
    buf: Vec<u8>,
}

impl CheckpointFile {
    /// The checkpoint file in `dir`.
    pub fn new(dir: &Path) -> Self {
        CheckpointFile {
            dir: dir.to_path_buf(),
            path: dir.join(CHECKPOINT_FILE),
            tmp: dir.join(TMP_FILE),
            last_sync: None,
            unsynced: false,
            buf: Vec::new(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint. A file that cannot be parsed (damaged outside our control)
    /// is renamed aside to `checkpoints.json.bad` and loads as empty but not first start:
    /// every file is then read from its beginning — duplicates, never a gap.
    pub fn load(&self) -> crate::Result<Loaded> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    first_start: true,
                    entries: Vec::new(),
                })
            }
            Err(e) => return Err(crate::Error::io("read checkpoints", &self.path, e)),
        };
        match serde_json::from_slice::<Document>(&bytes) {
            Ok(doc) if doc.version == VERSION => Ok(Loaded {
                first_start: false,
                entries: doc.files,
            }),
            Ok(doc) => {
                self.set_aside(&format!("unknown version {}", doc.version));
                Ok(Loaded {
                    first_start: false,
                    entries: Vec::new(),
                })
            }
            Err(e) => {
                self.set_aside(&e.to_string());
                Ok(Loaded {
                    first_start: false,
                    entries: Vec::new(),
                })
            }
        }
    }

    fn set_aside(&self, reason: &str) {
        let bad = self.dir.join("checkpoints.json.bad");
        tracing::error!(
            path = %self.path.display(),
            moved_to = %bad.display(),
            reason,
            "checkpoint file unreadable; moved aside, files are read again from their start (duplicates, no gap)"
        );
        if let Err(e) = fs::rename(&self.path, &bad) {
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "could not move the unreadable checkpoint file aside",
            );
        }
    }

    /// Replaces the checkpoint with `entries`: write a temporary file, rename it over.
    /// Syncs the temporary file and the directory when `sync` is asked or the last sync is
    /// older than [`SYNC_EVERY`].
    pub fn store(&mut self, entries: &[Entry], sync: bool) -> io::Result<()> {
        self.buf.clear();
        let doc = DocumentRef {
            version: VERSION,
            files: entries,
        };
        serde_json::to_writer(&mut self.buf, &doc).map_err(io::Error::other)?;
        let sync = sync || self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY);
        let mut f = File::create(&self.tmp)?;
        f.write_all(&self.buf)?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        if sync {
            File::open(&self.dir)?.sync_all()?;
            self.last_sync = Some(Instant::now());
            self.unsynced = false;
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// Whether a write is waiting for its sync and the sync is due.
    pub fn sync_due(&self) -> bool {
        self.unsynced && self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY)
    }
}

#[derive(Serialize)]
struct DocumentRef<'a> {
    version: u32,
    files: &'a [Entry],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u64, offset: u64) -> Entry {
        Entry {
            dev: 1,
            ino,
            created: Some(7),
            fp_len: 12,
            fp_hash: 99,
            path: format!("/logs/{ino}.log"),
            offset,
            before_len: Some(3),
            before_hash: Some(42),
            size: offset,
        }
    }

    #[test]
    fn a_missing_checkpoint_means_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert!(loaded.first_start);
        assert!(loaded.entries.is_empty());
    }

    #[test]
    fn stored_entries_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        cp.store(&[entry(1, 10), entry(2, 20)], false).unwrap();
        cp.store(&[entry(1, 15)], false).unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert!(!loaded.first_start);
        assert_eq!(loaded.entries, vec![entry(1, 15)]);
        assert!(!dir.path().join(TMP_FILE).exists());
    }

    #[test]
    fn the_format_is_the_documented_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        cp.store(&[entry(5, 52817)], true).unwrap();
        let text = fs::read_to_string(cp.path()).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"files":[{"dev":1,"ino":5,"created":7,"fp_len":12,"fp_hash":99,"path":"/logs/5.log","offset":52817,"before_len":3,"before_hash":42,"size":52817}]}"#
        );
    }

    #[test]
    fn a_damaged_checkpoint_is_set_aside_and_is_not_a_first_start() {
        // A checkpoint written by hand or damaged by a disk fault: half a JSON document.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CHECKPOINT_FILE), b"{\"version\":1,\"fil").unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert!(!loaded.first_start);
        assert!(loaded.entries.is_empty());
        assert!(dir.path().join("checkpoints.json.bad").exists());
    }
}
