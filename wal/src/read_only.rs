//! [`ReadOnlyWal`]: a log opened to look at, never to change — for `wal verify`, `wal
//! inspect` and `wal dump`. It opens every file read-only, takes the directory's lock
//! shared, and runs recovery's survey without its cuts: no file is created, truncated,
//! renamed, deleted or written, and no cursor moves. What a read-write open would cut (a
//! torn or dirty tail, reserved zeros) is reported, not cut.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::options::WalOptions;
use crate::record::Seq;
use crate::recovery::{self, ActiveEnd};
use crate::shared::{Shared, State};
use crate::stats::{self, Stats};
use crate::syncer::SyncQueue;
use crate::verify::{self, VerifyReport};

/// A log opened read-only. It has no appender and no durable cursors; readers from
/// [`ReadOnlyWal::reader_from`] see the records as they are on disk.
///
/// While a process has the log open for writing (a running agent), opening fails with
/// [`Error::InUse`]; while a `ReadOnlyWal` is open, a read-write [`crate::Wal::open`]
/// fails with [`Error::Locked`]. So the files never change under a reader, and a reader
/// never changes them.
pub struct ReadOnlyWal {
    shared: Arc<Shared>,
    active_end: Option<ActiveEnd>,
    _lock: Option<File>,
}

impl ReadOnlyWal {
    /// Opens the log in `dir` read-only. `dir` must exist; `opts` only bound what a
    /// record may be (see [`WalOptions::max_record_bytes`]) and what [`Stats`] reports.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<ReadOnlyWal> {
        let opts = opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(Error::io(
                "open WAL directory",
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let max_payload = opts.max_record_bytes();
        let lock = recovery::lock_dir_shared(&dir)?;
        let mut survey = recovery::survey(&dir, max_payload)?;
        let oldest = survey
            .segments
            .front()
            .map_or(survey.next_seq, |s| s.first_seq);
        recovery::place_lost_cursors(&mut survey.cursors, oldest);
        let (published, _) = watch::channel(survey.next_seq);
        let shared = Arc::new(Shared {
            dir,
            opts,
            max_payload,
            state: Mutex::new(State {
                segments: survey.segments,
                queue: Default::default(),
                retry: Default::default(),
                // Nothing will be appended: readers that caught up get `Closed`.
                closing: true,
                cursors: survey.cursors,
                dropped_below: 0,
                drops: Default::default(),
                published_next: survey.next_seq,
                space_epoch: 0,
                counters: Default::default(),
            }),
            appender_wake: Condvar::new(),
            published,
            deleting: Mutex::new(()),
            syncer: SyncQueue::default(),
        });
        Ok(ReadOnlyWal {
            shared,
            active_end: survey.active_end,
            _lock: lock,
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A reader from `seq` on (or from the oldest record, if `seq` is older). Its acks
    /// are not persisted.
    pub fn reader_from(&self, seq: Seq) -> Cursor {
        Cursor::reader_from(&self.shared, seq)
    }

    /// Segments, bytes, sequence numbers and per-cursor backlog, as on disk.
    pub fn stats(&self) -> Result<Stats> {
        stats::stats(&self.shared)
    }

    /// Reads every record of every segment; reports damaged headers and ranges, the seqs
    /// they cost, and what follows the records of the active segment.
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.shared, self.active_end.as_ref())
    }

    /// The sequence number after the last record that counts.
    pub fn next_seq(&self) -> Seq {
        self.shared.lock().published_next
    }

    /// Cursor positions as persisted, by name.
    pub fn cursor_positions(&self) -> BTreeMap<String, Seq> {
        self.shared
            .lock()
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), v.next))
            .collect()
    }
}
