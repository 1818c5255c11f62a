//! The checkpoint file: how far each followed file is durable in the WAL. Owns the file's
//! format, its crash-atomic replacement and its loading; the tailer decides what goes in.
//!
//! `state_dir/checkpoints.json`, replaced whole by writing `checkpoints.json.tmp`, syncing
//! it and renaming it over (then syncing the directory), so a reader sees the old or the new
//! file, never a mix — at most once per [`SYNC_EVERY`] and at shutdown. Between those
//! replacements every store overwrites `state_dir/checkpoints.live.json` in place (one
//! `pwrite` of the document, padded with spaces to the longest one written): no new inode,
//! no rename, never synced. Each document carries a `generation`, one more at every store;
//! at start the valid document with the higher generation wins. `kill -9` leaves the live
//! file whole (a write either happened or not); a power cut may tear it, and a torn live
//! file does not parse and is passed over for the synced one, which is at most
//! [`SYNC_EVERY`] older:
//!
//! ```json
//! {"version":1,"generation":812,"files":[{"dev":2049,"ino":1311,"created":1700000000123456789,
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
//! | `generation` | (document) one more at every store; absent in older files: 0 |
//! | `size`     | the file's size when last seen; if the file is gone at the next start, `size - offset` bytes were lost and a `source_overflow` gap record says so (absent in older files: 0) |
//!
//! A lost rename or a torn live file costs duplicates, never a gap, because an older
//! checkpoint only ever holds smaller offsets.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fingerprint::{FileId, Fingerprint};

/// The file name in the source's state directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";
const TMP_FILE: &str = "checkpoints.json.tmp";
/// The file overwritten in place between synced replacements of [`CHECKPOINT_FILE`].
pub const LIVE_FILE: &str = "checkpoints.live.json";
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
    #[serde(default)]
    generation: u64,
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
    live: PathBuf,
    last_sync: Option<Instant>,
    /// A write since the last sync.
    unsynced: bool,
    /// The generation of the last document stored (or loaded).
    generation: u64,
    /// The longest document written to the live file since it was last cut back.
    live_len: usize,
    buf: Vec<u8>,
}

impl CheckpointFile {
    /// The checkpoint file in `dir`.
    pub fn new(dir: &Path) -> Self {
        CheckpointFile {
            dir: dir.to_path_buf(),
            path: dir.join(CHECKPOINT_FILE),
            tmp: dir.join(TMP_FILE),
            live: dir.join(LIVE_FILE),
            last_sync: None,
            unsynced: false,
            generation: 0,
            live_len: 0,
            buf: Vec::new(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint: the synced file or, if it parses and is newer, the live one.
    /// A synced file that cannot be parsed (damaged outside our control) is renamed aside to
    /// `checkpoints.json.bad`; without a usable live file it then loads as empty but not first
    /// start: every file is read again from its beginning — duplicates, never a gap. A live
    /// file that does not parse (torn by a power cut) is passed over.
    pub fn load(&mut self) -> crate::Result<Loaded> {
        let live = match fs::read(&self.live).map(|bytes| parse(&bytes)) {
            Ok(Ok(doc)) => Some(doc),
            Ok(Err(reason)) => {
                tracing::info!(
                    path = %self.live.display(),
                    reason,
                    "live checkpoint file unreadable (torn by a power cut?); using the synced one",
                );
                None
            }
            Err(_) => None,
        };
        let synced = match fs::read(&self.path).map(|bytes| parse(&bytes)) {
            Ok(Ok(doc)) => Some(doc),
            Ok(Err(reason)) => {
                self.set_aside(&reason);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if live.is_none() {
                    return Ok(Loaded {
                        first_start: true,
                        entries: Vec::new(),
                    });
                }
                None
            }
            Err(e) => return Err(crate::Error::io("read checkpoints", &self.path, e)),
        };
        let newest = match (synced, live) {
            (Some(s), Some(l)) => Some(if l.generation > s.generation { l } else { s }),
            (s, l) => s.or(l),
        };
        let Some(doc) = newest else {
            return Ok(Loaded {
                first_start: false,
                entries: Vec::new(),
            });
        };
        self.generation = doc.generation;
        Ok(Loaded {
            first_start: false,
            entries: doc.files,
        })
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

    /// Stores `entries` as the next generation. When `sync` is asked or the last sync is
    /// older than [`SYNC_EVERY`]: a temporary file, synced, renamed over the checkpoint file,
    /// the directory synced. Otherwise: the live file overwritten in place, not synced.
    pub fn store(&mut self, entries: &[Entry], sync: bool) -> io::Result<()> {
        self.generation += 1;
        self.buf.clear();
        let doc = DocumentRef {
            version: VERSION,
            generation: self.generation,
            files: entries,
        };
        serde_json::to_writer(&mut self.buf, &doc).map_err(io::Error::other)?;
        let sync = sync || self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY);
        if !sync {
            return self.store_live();
        }
        let mut f = File::create(&self.tmp)?;
        f.write_all(&self.buf)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.last_sync = Some(Instant::now());
        self.unsynced = false;
        Ok(())
    }

    /// Overwrites the live file with the document in `buf`, padded with spaces to the
    /// longest document written before (JSON allows them after the value), in one write: a
    /// reader after `kill -9` finds the old document or the new one. Once the padding
    /// outgrows the document the file is cut back, after the padded write.
    fn store_live(&mut self) -> io::Result<()> {
        let len = self.buf.len();
        if len < self.live_len {
            self.buf.resize(self.live_len, b' ');
        }
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.live)?;
        f.write_all_at(&self.buf, 0)?;
        self.live_len = self.live_len.max(len);
        if self.live_len > 2 * len + 4096 {
            f.set_len(len as u64)?;
            self.live_len = len;
        }
        self.unsynced = true;
        Ok(())
    }

    /// Whether a write is waiting for its sync and the sync is due.
    pub fn sync_due(&self) -> bool {
        self.unsynced && self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY)
    }
}

/// A checkpoint document of this version, or why the bytes are not one.
fn parse(bytes: &[u8]) -> Result<Document, String> {
    match serde_json::from_slice::<Document>(bytes) {
        Ok(doc) if doc.version == VERSION => Ok(doc),
        Ok(doc) => Err(format!("unknown version {}", doc.version)),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Serialize)]
struct DocumentRef<'a> {
    version: u32,
    generation: u64,
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
    fn stores_between_syncs_overwrite_the_live_file_and_the_newest_document_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        cp.store(&[entry(1, 10), entry(2, 20)], true).unwrap();
        let synced = fs::read(cp.path()).unwrap();
        // Within SYNC_EVERY: the synced file stays as it was; the live file holds each
        // newer document, a shorter one padded over a longer one.
        cp.store(&[entry(1, 30), entry(2, 40), entry(3, 50)], false)
            .unwrap();
        cp.store(&[entry(1, 60)], false).unwrap();
        assert_eq!(fs::read(cp.path()).unwrap(), synced);
        let live = fs::read(dir.path().join(LIVE_FILE)).unwrap();
        assert!(
            live.ends_with(b"   "),
            "padded: {}",
            String::from_utf8_lossy(&live)
        );
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert_eq!(loaded.entries, vec![entry(1, 60)]);
        // A restarted writer continues the generations: its first (synced) store wins
        // over the live file of the run before.
        let mut again = CheckpointFile::new(dir.path());
        again.load().unwrap();
        again.store(&[entry(1, 70)], true).unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert_eq!(loaded.entries, vec![entry(1, 70)]);
    }

    #[test]
    fn a_torn_or_older_live_file_gives_way_to_the_synced_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        cp.store(&[entry(1, 10)], true).unwrap();
        cp.store(&[entry(1, 20)], false).unwrap();
        // Torn by a power cut: half the document.
        let live = dir.path().join(LIVE_FILE);
        let bytes = fs::read(&live).unwrap();
        fs::write(&live, &bytes[..bytes.len() / 2]).unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert!(!loaded.first_start);
        assert_eq!(loaded.entries, vec![entry(1, 10)]);
        assert!(!dir.path().join("checkpoints.json.bad").exists());
        // Older than the synced file (written before the last sync): passed over too.
        fs::write(&live, &bytes).unwrap();
        cp.store(&[entry(1, 30)], true).unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert_eq!(loaded.entries, vec![entry(1, 30)]);
        // Only a live file (the synced one lost with its directory entry): it is used.
        fs::remove_file(cp.path()).unwrap();
        let loaded = CheckpointFile::new(dir.path()).load().unwrap();
        assert!(!loaded.first_start);
        assert_eq!(loaded.entries, vec![entry(1, 20)]);
    }

    #[test]
    fn a_file_written_before_generations_loads() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(CHECKPOINT_FILE),
            r#"{"version":1,"files":[{"dev":1,"ino":5,"fp_len":12,"fp_hash":99,"path":"/l","offset":9}]}"#,
        )
        .unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        let loaded = cp.load().unwrap();
        assert_eq!(loaded.entries.len(), 1);
        assert_eq!(loaded.entries[0].offset, 9);
    }

    #[test]
    fn the_format_is_the_documented_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = CheckpointFile::new(dir.path());
        cp.store(&[entry(5, 52817)], true).unwrap();
        let text = fs::read_to_string(cp.path()).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"generation":1,"files":[{"dev":1,"ino":5,"created":7,"fp_len":12,"fp_hash":99,"path":"/logs/5.log","offset":52817,"before_len":3,"before_hash":42,"size":52817}]}"#
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
