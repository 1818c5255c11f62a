//! Moving on to a new segment: when the active one is full, and when its file can no longer
//! be trusted (recovery rule 5) — a failed `fdatasync`, a failed write. Owns the repair after
//! the sync stage failed a sync, and the answers to appends whose write failed.
//!
//! A file is untrusted from the failure on: nothing more is written to it, and the next
//! write (or gap record) first moves to a new segment. Only creating that new file can
//! fail; while it does, appends fail too (under `block`, a full disk makes them wait), and
//! the untrusted file is never written again.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use super::{complete, SegmentWriter, DISK_FULL_RETRY};
use crate::error::{Error, Result};
use crate::options::WhenFull;
use crate::segment::{create_segment, SEGMENT_HEADER_LEN};
use crate::shared::{now_nanos, AppendRequest, SegmentMeta};

/// Whether an I/O error means the disk is full.
pub(super) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The OS error under a log error, to answer appends with.
pub(super) fn io_error(e: Error) -> io::Error {
    match e {
        Error::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl SegmentWriter {
    /// Answers requests whose write failed: a full disk under `block` waits and retries,
    /// everything else gets the error.
    pub(super) fn fail(&mut self, reqs: impl Iterator<Item = AppendRequest>, e: io::Error) {
        let disk_full = is_disk_full(&e);
        let wait = disk_full && self.shared.opts.when_full == WhenFull::Block;
        if disk_full {
            self.shared.lock().counters.disk_full_errors += 1;
            tracing::warn!(dir = %self.shared.dir.display(), waiting = wait, "disk full: WAL append failed; the log is unchanged");
        } else {
            tracing::error!(error = %e, "WAL write failed; the log is unchanged");
        }
        let mut retry = Vec::new();
        for req in reqs {
            if wait && !req.no_wait {
                retry.push(req);
            } else if disk_full {
                let dir = self.shared.dir.clone();
                complete(req, Err(Error::DiskFull { dir }));
            } else {
                let path = self.shared.segment_path(self.active_first_seq());
                complete(
                    req,
                    Err(Error::io(
                        "append",
                        path,
                        io::Error::new(e.kind(), e.to_string()),
                    )),
                );
            }
        }
        if !retry.is_empty() {
            for req in retry.into_iter().rev() {
                self.pending.push_front(req);
            }
            self.blocked = true;
            self.retry_at = Some(Instant::now() + DISK_FULL_RETRY);
        }
    }

    /// Before writing: if the active file is untrusted, moves to a new segment first.
    pub(super) fn ensure_trusted(&mut self) -> Result<(), io::Error> {
        if !self.untrusted {
            return Ok(());
        }
        self.rollover().map_err(io_error)
    }

    /// After a failed `fdatasync` in the sync stage: cut the segment back to what was
    /// synced (the appends beyond it were failed, nobody saw them) and leave the file.
    pub(super) fn repair_failed_sync(&mut self) {
        if !self.cut_back_after_failed_sync() {
            return;
        }
        if let Err(e) = self.rollover() {
            tracing::error!(error = %e, "could not start a new segment after a failed fdatasync; appends fail until one can be created");
        }
    }

    /// If the sync stage failed a sync: cuts the segment back to what was synced and marks
    /// the file untrusted. Returns whether it did.
    fn cut_back_after_failed_sync(&mut self) -> bool {
        if !self.shared.syncer.has_failure() {
            return false;
        }
        self.shared.syncer.drain();
        let Some(f) = self.shared.syncer.take_failure() else {
            return false;
        };
        self.reserved = f.synced_len;
        if let Err(e) = self.file.set_len(f.synced_len) {
            tracing::error!(error = %e, "could not cut the WAL segment back after a failed fdatasync");
        }
        self.len = f.synced_len;
        self.synced_len = f.synced_len;
        self.next_seq = f.synced_next_seq;
        self.record_len();
        self.untrusted = true;
        true
    }

    /// Seals the active segment and starts a new one at `next_seq`. A segment without
    /// records is never sealed (the new one would have its name) — unless its file is
    /// untrusted: then a fresh file replaces it under the same name.
    ///
    /// Only creating the new file can fail. A sync or trim of the old one that fails leaves
    /// it untrusted and the log moves on all the same; records of it that were completed
    /// without being synced (`interval`, `never`) and did not survive are reported by
    /// readers as a gap.
    pub(super) fn rollover(&mut self) -> Result<()> {
        self.settle();
        self.cut_back_after_failed_sync();
        if self.len <= SEGMENT_HEADER_LEN as u64 && !self.untrusted {
            return Ok(());
        }
        let old_first = self.active_first_seq();
        let replace = self.len <= SEGMENT_HEADER_LEN as u64 && self.next_seq == old_first;
        if !replace {
            if self.synced_len < self.len {
                if let Err(e) = self.sync_active() {
                    tracing::error!(path = %self.shared.segment_path(old_first).display(), error = %e, "fdatasync of the WAL segment failed as it was sealed");
                }
            }
            if let Err(e) = self.trim() {
                self.untrusted = true;
                tracing::error!(path = %self.shared.segment_path(old_first).display(), error = %e, "could not trim the WAL segment as it was sealed");
            }
        }
        let file = create_segment(&self.shared.dir, self.next_seq, now_nanos())?;
        if !replace {
            // Records completed but not yet published (`interval`, the sync failed): the
            // sealed segment is read to its end, so readers see them — or, if they did not
            // survive, a gap. Their seqs lie below the new segment's name: never reused.
            if let Some(u) = self.unpublished.take() {
                self.shared.publish(
                    u.len,
                    u.next_seq,
                    u.first_now,
                    u.last_now,
                    u.records,
                    u.bytes,
                );
            }
            let mut st = self.shared.lock();
            if let Some(old) = st.segments.back_mut() {
                old.len = self.len;
                old.published_len = self.len;
                old.sealed = true;
            }
            st.segments.push_back(SegmentMeta {
                first_seq: self.next_seq,
                len: SEGMENT_HEADER_LEN as u64,
                published_len: SEGMENT_HEADER_LEN as u64,
                sealed: false,
                first_ts: None,
                last_ts: None,
            });
        }
        self.file = Arc::new(file);
        self.len = SEGMENT_HEADER_LEN as u64;
        self.synced_len = self.len;
        self.shared.syncer.reset(self.len, self.next_seq);
        self.reserved = self.len;
        if std::mem::take(&mut self.untrusted) {
            tracing::warn!(
                first_seq = self.next_seq,
                "left a WAL segment whose file failed; appending to a new one"
            );
        } else {
            tracing::debug!(first_seq = self.next_seq, "started WAL segment");
        }
        Ok(())
    }

    /// The timer's sync (`interval`).
    pub(super) fn sync_now(&mut self) {
        if let Err(e) = self.sync_active() {
            // The bytes were already acknowledged (durability interval/never): all that
            // can be done is to say so loudly and stop writing to this file.
            tracing::error!(error = %e, "fdatasync of the active WAL segment failed");
            if let Err(e) = self.rollover() {
                tracing::error!(error = %e, "could not start a new segment after a failed fdatasync; appends fail until one can be created");
            }
        }
    }
}
