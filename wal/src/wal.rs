//! [`Wal`]: the handle that opens a log directory and hands out appenders and cursors.
//! Ties recovery, the appender thread, cursors, retention and introspection together.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::append::{Appender, SegmentWriter};
use crate::cursor::Cursor;
use crate::cursor_file::{cursor_path, valid_name, CursorFile, CursorPosition};
use crate::error::{Error, Result};
use crate::options::WalOptions;
use crate::record::Seq;
use crate::recovery;
use crate::retention;
use crate::shared::{Counters, CursorEntry, Shared, State};
use crate::stats::{self, Stats};
use crate::syncer::SyncQueue;
use crate::verify::{self, VerifyReport};

/// An open write-ahead log. Dropping it closes it (see [`Wal::close`]).
pub struct Wal {
    shared: Arc<Shared>,
    appender_thread: Option<JoinHandle<()>>,
    sync_thread: Option<JoinHandle<()>>,
    _lock: File,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: takes its lock, recovers the active
    /// segment, loads the cursors and starts the appender thread.
    ///
    /// Fails with [`Error::Locked`] if another process uses the directory.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        let opts = opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let max_payload = opts.max_record_bytes();
        let rec = recovery::open(&dir, max_payload)?;
        let (published, _) = watch::channel(rec.next_seq);
        // A cursor below the oldest segment can only be there because `drop_oldest` deleted
        // segments it had not passed (retention waits for every cursor).
        let oldest = rec.segments.front().map_or(rec.next_seq, |s| s.first_seq);
        let dropped_below = if rec.cursors.values().any(|c| c.next < oldest) {
            oldest
        } else {
            0
        };
        let shared = Arc::new(Shared {
            dir,
            opts,
            max_payload,
            state: Mutex::new(State {
                segments: rec.segments,
                queue: Default::default(),
                retry: Default::default(),
                closing: false,
                cursors: rec.cursors,
                dropped_below,
                drops: Default::default(),
                published_next: rec.next_seq,
                space_epoch: 0,
                counters: Counters::default(),
            }),
            appender_wake: Condvar::new(),
            published,
            deleting: Mutex::new(()),
            syncer: SyncQueue::default(),
        });
        let len = shared.lock().segments.back().map_or(0, |s| s.len);
        let writer = SegmentWriter::new(shared.clone(), rec.active, len, rec.next_seq);
        let appender_thread = std::thread::Builder::new()
            .name("gapless-wal-appender".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("spawn appender thread", shared_dir(&shared), e))?;
        let sync_thread = {
            let for_thread = shared.clone();
            std::thread::Builder::new()
                .name("gapless-wal-sync".into())
                .spawn(move || for_thread.syncer.run(&for_thread))
                .map_err(|e| Error::io("spawn sync thread", shared_dir(&shared), e))?
        };
        // Segments every cursor passed before a crash interrupted their deletion.
        retention::collect(&shared);
        Ok(Wal {
            shared,
            appender_thread: Some(appender_thread),
            sync_thread: Some(sync_thread),
            _lock: rec.lock,
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The options in effect (with the effective segment size).
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// A handle to append through; cheap to clone and share among producers.
    pub fn appender(&self) -> Appender {
        Appender {
            shared: self.shared.clone(),
        }
    }

    /// Opens the cursor `name`, creating it at the oldest record if it does not exist.
    /// Only one handle per name may be open at a time ([`Error::CursorBusy`]).
    pub fn cursor(&self, name: &str) -> Result<Cursor> {
        if !valid_name(name) {
            return Err(Error::InvalidCursorName { name: name.into() });
        }
        let existing = {
            let mut st = self.shared.lock();
            let oldest = st
                .segments
                .front()
                .map_or(st.published_next, |s| s.first_seq);
            match st.cursors.get_mut(name) {
                Some(c) if c.open => return Err(Error::CursorBusy { name: name.into() }),
                Some(c) => {
                    c.open = true;
                    Some(CursorPosition {
                        next: c.next,
                        hint: c.hint,
                    })
                }
                None => {
                    st.cursors.insert(
                        name.to_string(),
                        CursorEntry {
                            next: oldest,
                            hint: None,
                            open: true,
                        },
                    );
                    None
                }
            }
        };
        let opened = match existing {
            Some(pos) => {
                CursorFile::load(&cursor_path(&self.shared.dir, name)).map(|(f, _)| (f, pos))
            }
            None => {
                let next = self.shared.lock().cursors.get(name).map_or(0, |c| c.next);
                let pos = CursorPosition { next, hint: None };
                CursorFile::create(&self.shared.dir, name, pos).map(|f| (f, pos))
            }
        };
        match opened {
            Ok((file, pos)) => Ok(Cursor::new(
                self.shared.clone(),
                name.to_string(),
                Some(file),
                pos,
            )),
            Err(e) => {
                let mut st = self.shared.lock();
                if existing.is_none() {
                    st.cursors.remove(name);
                } else if let Some(c) = st.cursors.get_mut(name) {
                    c.open = false;
                }
                Err(e)
            }
        }
    }

    /// A reader from `seq` on (or from the oldest record, if `seq` is older) that is not a
    /// durable cursor: it holds nothing back and its acks are not persisted. For tools.
    pub fn reader_from(&self, seq: Seq) -> Cursor {
        Cursor::reader_from(&self.shared, seq)
    }

    /// The names of all cursors, open or not.
    pub fn cursor_names(&self) -> Vec<String> {
        self.shared.lock().cursors.keys().cloned().collect()
    }

    /// Deletes the cursor `name` (which must not be open), releasing what only it held.
    /// Returns whether it existed.
    pub fn remove_cursor(&self, name: &str) -> Result<bool> {
        {
            let mut st = self.shared.lock();
            match st.cursors.get(name) {
                None => return Ok(false),
                Some(c) if c.open => return Err(Error::CursorBusy { name: name.into() }),
                Some(_) => {
                    st.cursors.remove(name);
                }
            }
        }
        let path = cursor_path(&self.shared.dir, name);
        std::fs::remove_file(&path).map_err(|e| Error::io("remove cursor", &path, e))?;
        crate::segment::sync_dir(&self.shared.dir)?;
        retention::collect(&self.shared);
        Ok(true)
    }

    /// Segments, bytes, sequence numbers and per-cursor backlog.
    pub fn stats(&self) -> Result<Stats> {
        stats::stats(&self.shared)
    }

    /// Reads every record of every segment and reports damaged headers and ranges. (Open
    /// has already cut what followed the records of the active segment; to see that too,
    /// and to change nothing, use [`crate::ReadOnlyWal`].)
    pub fn verify(&self) -> Result<VerifyReport> {
        verify::verify(&self.shared, None)
    }

    /// The sequence number the next appended record will get, as far as readers know.
    pub fn next_seq(&self) -> Seq {
        self.shared.lock().published_next
    }

    /// Stops accepting appends, completes or fails what is queued, syncs the active
    /// segment and waits for the appender thread. Cursors still open get
    /// [`Error::Closed`] once they have read everything.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.lock().closing = true;
        self.shared.appender_wake.notify_all();
        if let Some(t) = self.appender_thread.take() {
            if t.join().is_err() {
                tracing::error!("the WAL appender thread panicked");
            }
        }
        self.shared.syncer.close();
        if let Some(t) = self.sync_thread.take() {
            if t.join().is_err() {
                tracing::error!("the WAL sync thread panicked");
            }
        }
        // Wake readers waiting for records so they see the close.
        self.shared.published.send_modify(|_| {});
    }

    /// Cursor positions as persisted, by name (for tools).
    pub fn cursor_positions(&self) -> BTreeMap<String, Seq> {
        self.shared
            .lock()
            .cursors
            .iter()
            .map(|(k, v)| (k.clone(), v.next))
            .collect()
    }
}

fn shared_dir(shared: &Shared) -> PathBuf {
    shared.dir.clone()
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}
