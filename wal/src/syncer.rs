//! The sync stage of group commit under `durability = always`. The appender thread writes
//! a group and hands it here; this thread runs one `fdatasync` for every group handed over
//! meanwhile, then publishes them to readers and completes their producers. So the next
//! group is encoded and written while the disk flushes the previous one.
//!
//! A failed `fdatasync` is final for the file: every group waiting here fails with it, and
//! the appender cuts the segment back to what was synced and moves on to a new segment.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::batch::SeqRange;
use crate::error::Error;
use crate::options::WhenFull;
use crate::record::Seq;
use crate::shared::{AppendRequest, Shared};

/// A written, not yet synced group.
pub(crate) struct WrittenGroup {
    pub file: Arc<File>,
    pub path: PathBuf,
    /// Length of the segment once this group is in it.
    pub end_len: u64,
    /// The seq after this group's last record.
    pub next_seq: Seq,
    pub now: u64,
    pub records: u64,
    pub bytes: u64,
    pub requests: Vec<(AppendRequest, SeqRange)>,
}

/// What the appender must repair after a failed sync.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncFailure {
    /// Segment length up to which data is known synced.
    pub synced_len: u64,
    /// The seq after the last synced record.
    pub synced_next_seq: Seq,
    /// What went wrong (later groups on the same file fail the same way).
    pub kind: io::ErrorKind,
}

#[derive(Default)]
struct Queue {
    groups: VecDeque<WrittenGroup>,
    busy: bool,
    closing: bool,
    failed: Option<SyncFailure>,
    /// What the last successful sync covered: (segment length, next seq).
    synced: Option<(u64, Seq)>,
}

#[derive(Default)]
pub(crate) struct SyncQueue {
    queue: Mutex<Queue>,
    work: Condvar,
    idle: Condvar,
}

impl SyncQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, group: WrittenGroup) {
        self.lock().groups.push_back(group);
        self.work.notify_one();
    }

    /// Waits until every group handed over is synced (or failed).
    pub(crate) fn drain(&self) {
        let mut q = self.lock();
        while q.busy || !q.groups.is_empty() {
            q = self.idle.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether a sync failed and the appender has not repaired it yet.
    pub(crate) fn has_failure(&self) -> bool {
        self.lock().failed.is_some()
    }

    /// Takes the failure to repair; call after [`SyncQueue::drain`].
    pub(crate) fn take_failure(&self) -> Option<SyncFailure> {
        self.lock().failed.take()
    }

    /// Tells the segment the synced position restarts with (after a rollover or repair).
    pub(crate) fn reset(&self, len: u64, next_seq: Seq) {
        self.lock().synced = Some((len, next_seq));
    }

    fn record_failure(&self, kind: io::ErrorKind) {
        let mut q = self.lock();
        if q.failed.is_none() {
            let (synced_len, synced_next_seq) = q.synced.unwrap_or((0, 0));
            q.failed = Some(SyncFailure {
                synced_len,
                synced_next_seq,
                kind,
            });
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.work.notify_all();
    }

    /// The sync thread's loop.
    pub(crate) fn run(&self, shared: &Shared) {
        loop {
            let groups: Vec<WrittenGroup> = {
                let mut q = self.lock();
                while q.groups.is_empty() && !q.closing {
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.groups.is_empty() {
                    return;
                }
                q.busy = true;
                q.groups.drain(..).collect()
            };
            let failed_before = self.lock().failed.map(|f| f.kind);
            let result = match groups.last() {
                Some(_) if failed_before.is_some() => Err(io::Error::new(
                    failed_before.unwrap_or(io::ErrorKind::Other),
                    "an earlier fdatasync of this segment failed",
                )),
                Some(last) => sync_timed(&last.file, shared),
                None => Ok(()),
            };
            match result {
                Ok(()) => {
                    if let Some(last) = groups.last() {
                        let records = groups.iter().map(|g| g.records).sum();
                        let bytes = groups.iter().map(|g| g.bytes).sum();
                        let first_now = groups.first().map_or(last.now, |g| g.now);
                        shared.publish(
                            last.end_len,
                            last.next_seq,
                            first_now,
                            last.now,
                            records,
                            bytes,
                        );
                        self.lock().synced = Some((last.end_len, last.next_seq));
                    }
                    for g in groups {
                        for (req, range) in g.requests {
                            let _ = req.done.send(Ok(range));
                        }
                    }
                }
                Err(e) if is_disk_full(&e) => {
                    // Nothing of these groups was published: cut back (by the appender)
                    // and appended again once there is space, or failed as `DiskFull`.
                    let path = groups.first().map(|g| g.path.clone()).unwrap_or_default();
                    tracing::warn!(path = %path.display(), "disk full during fdatasync of the WAL; the appends are retried");
                    self.record_failure(e.kind());
                    let wait = shared.opts.when_full == WhenFull::Block;
                    let mut retry = Vec::new();
                    for g in groups {
                        for (req, _) in g.requests {
                            if wait && !req.no_wait {
                                retry.push(req);
                            } else {
                                let _ = req.done.send(Err(Error::DiskFull {
                                    dir: shared.dir.clone(),
                                }));
                            }
                        }
                    }
                    shared.lock().counters.disk_full_errors += 1;
                    shared.requeue_front(retry);
                }
                Err(e) => {
                    let path = groups.first().map(|g| g.path.clone()).unwrap_or_default();
                    tracing::error!(path = %path.display(), error = %e, "fdatasync of the WAL failed; the appends it covered fail");
                    self.record_failure(e.kind());
                    for g in groups {
                        for (req, _) in g.requests {
                            let err = Error::io(
                                "fdatasync",
                                &path,
                                io::Error::new(e.kind(), e.to_string()),
                            );
                            let _ = req.done.send(Err(err));
                        }
                    }
                }
            }
            let mut q = self.lock();
            q.busy = false;
            drop(q);
            self.idle.notify_all();
        }
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn sync_timed(file: &File, shared: &Shared) -> io::Result<()> {
    let started = Instant::now();
    file.sync_data()?;
    let took = started.elapsed().as_nanos() as u64;
    let mut st = shared.lock();
    st.counters.syncs += 1;
    st.counters.sync_nanos += took;
    Ok(())
}
