//! Group commit. Producers queue [`AppendBatch`]es through an [`Appender`]; one appender
//! thread takes everything queued, checks capacity, encodes it into one buffer and issues
//! one `write`; under `durability = always` the sync stage (`syncer.rs`) then runs one
//! `fdatasync` for every group written meanwhile, publishes them to readers and completes
//! every producer with its sequence numbers.
//!
//! The thread owns the active segment's file handle and the tail of the log: nothing else
//! writes segment bytes. The `when_full` policies and the gap records they write are in
//! `capacity.rs`, because only the appender knows what did not fit.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batch::{AppendBatch, SeqRange};
use crate::error::{Error, Result};
use crate::options::Durability;
use crate::record::{encode_into, RecordKind, Seq};
use crate::segment::SEGMENT_HEADER_LEN;
use crate::shared::{now_nanos, AppendRequest, Shared};
use crate::syncer::WrittenGroup;

mod capacity;
mod rollover;

use capacity::{Refused, REFUSED_GAP_EVERY};
use rollover::is_disk_full;

/// A cheap, cloneable handle producers append through.
#[derive(Clone)]
pub struct Appender {
    pub(crate) shared: Arc<Shared>,
}

impl Appender {
    /// Appends `batch` and completes when it is as durable as the log's [`Durability`]
    /// says. Under `when_full = block` it waits for space; under `drop_newest` a full log
    /// fails it with [`Error::DroppedNewest`].
    pub async fn append(&self, batch: AppendBatch) -> Result<SeqRange> {
        self.submit(batch, false)?
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// Like [`Appender::append`], but fails at once with [`Error::Full`] (or
    /// [`Error::DiskFull`]) instead of waiting for space, so that a network source can
    /// answer "busy".
    pub async fn try_append(&self, batch: AppendBatch) -> Result<SeqRange> {
        self.submit(batch, true)?
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// Queues `batch` now and returns a future of its completion. Batches queued one
    /// after another from one task reach the log in that order, so a producer can keep
    /// several in flight without reordering its records.
    pub fn enqueue(&self, batch: AppendBatch) -> Result<PendingAppend> {
        Ok(PendingAppend {
            rx: self.submit(batch, false)?,
        })
    }

    /// [`Appender::append`] for threads outside an async runtime.
    pub fn append_blocking(&self, batch: AppendBatch) -> Result<SeqRange> {
        self.submit(batch, false)?
            .blocking_recv()
            .unwrap_or(Err(Error::Closed))
    }

    fn submit(
        &self,
        batch: AppendBatch,
        no_wait: bool,
    ) -> Result<oneshot::Receiver<Result<SeqRange>>> {
        if batch.is_empty() {
            return Err(Error::InvalidOption {
                option: "batch",
                reason: "an append needs at least one record".into(),
            });
        }
        let max = self.shared.max_payload;
        let largest = batch.largest_payload();
        if largest > max {
            return Err(Error::RecordTooLarge { size: largest, max });
        }
        let limit = self.shared.opts.max_bytes / 2;
        if batch.encoded_len() > limit {
            return Err(Error::RecordTooLarge {
                size: batch.encoded_len() as usize,
                max: limit as usize,
            });
        }
        let (done, rx) = oneshot::channel();
        self.shared.submit(AppendRequest {
            batch,
            no_wait,
            done,
        })?;
        Ok(rx)
    }
}

/// An append queued by [`Appender::enqueue`]; resolves when it is durable (or failed).
pub struct PendingAppend {
    rx: oneshot::Receiver<Result<SeqRange>>,
}

impl std::future::Future for PendingAppend {
    type Output = Result<SeqRange>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}

/// How soon a write that failed for lack of disk space is tried again.
const DISK_FULL_RETRY: Duration = Duration::from_millis(200);
/// How far the active segment's file is extended ahead of its data.
const RESERVE_AHEAD: u64 = 4 << 20;
/// A group's encoded records are written out whenever this many are waiting (synced
/// together at the group's end): the encoding buffer stays this small however large the
/// group, instead of holding a copy of every batch admitted at once.
const WRITE_PIECE: usize = 256 << 10;
/// How often requests blocked on a full log look again even without a wake-up.
const BLOCKED_RECHECK: Duration = Duration::from_secs(1);

/// The appender thread's state: the active segment and everything not yet completed.
pub(crate) struct SegmentWriter {
    shared: Arc<Shared>,
    file: Arc<File>,
    /// Bytes written to the active segment, header included.
    len: u64,
    /// Bytes of the active segment known to be on disk.
    synced_len: u64,
    next_seq: Seq,
    /// Encoded records of the current group not yet written (at most about [`WRITE_PIECE`]).
    buf: Vec<u8>,
    /// Where the current group began in the active segment (a failed write cuts back here).
    group_start: u64,
    /// Bytes of the current group already written ahead of `buf`.
    group_written: u64,
    /// Requests taken from the queue and not completed, oldest first.
    pending: VecDeque<AppendRequest>,
    /// The last cycle left `pending` waiting for space.
    blocked: bool,
    retry_at: Option<Instant>,
    refused: Refused,
    last_sync: Instant,
    seen_space_epoch: u64,
    /// The active segment's file size: data plus zeros reserved ahead of it.
    reserved: u64,
    /// Under `interval`: records written and completed but not yet synced, hence not yet
    /// published (see [`SegmentWriter::commit`]).
    unpublished: Option<Unpublished>,
    /// A sync or write of the active file failed: nothing more goes into it (`rollover.rs`).
    untrusted: bool,
}

/// Written, completed records that readers see only once they are synced.
#[derive(Debug, Clone, Copy)]
struct Unpublished {
    /// The segment's length and next seq after them.
    len: u64,
    next_seq: Seq,
    first_now: u64,
    last_now: u64,
    records: u64,
    bytes: u64,
}

/// A request encoded into the current write, with the sequence numbers it got.
struct Placed {
    req: AppendRequest,
    range: SeqRange,
}

impl SegmentWriter {
    pub(crate) fn new(shared: Arc<Shared>, file: File, len: u64, next_seq: Seq) -> Self {
        shared.syncer.reset(len, next_seq);
        // Everything recovered is synced; the first write may sync at once.
        let last_sync = Instant::now()
            .checked_sub(shared.opts.sync_interval)
            .unwrap_or_else(Instant::now);
        SegmentWriter {
            shared,
            file: Arc::new(file),
            len,
            synced_len: len,
            next_seq,
            buf: Vec::with_capacity(WRITE_PIECE + (64 << 10)),
            group_start: len,
            group_written: 0,
            pending: VecDeque::new(),
            blocked: false,
            retry_at: None,
            refused: Refused::default(),
            last_sync,
            seen_space_epoch: 0,
            reserved: len,
            unpublished: None,
            untrusted: false,
        }
    }

    /// The appender thread: runs until the log closes.
    pub(crate) fn run(mut self) {
        loop {
            let closing = self.wait_for_work();
            self.cycle(closing);
            if self.sync_due() {
                self.sync_now();
            }
            if closing {
                self.close();
                return;
            }
        }
    }

    /// Sleeps until there is something to do; returns whether the log is closing.
    fn wait_for_work(&mut self) -> bool {
        let mut st = self.shared.lock();
        loop {
            let arrived = !st.queue.is_empty() || !st.retry.is_empty();
            let retried: Vec<_> = st.retry.drain(..).collect();
            for req in retried.into_iter().rev() {
                self.pending.push_front(req);
            }
            self.pending.extend(st.queue.drain(..));
            let freed = st.space_epoch != self.seen_space_epoch;
            self.seen_space_epoch = st.space_epoch;
            let retry_due = self.retry_at.is_some_and(|t| Instant::now() >= t);
            let retry = !self.pending.is_empty() && (!self.blocked || freed || retry_due);
            if arrived || retry || st.closing || self.sync_due() || self.refused_due() {
                return st.closing;
            }
            let timeout = self.next_timer();
            let (guard, waited) = match self.shared.appender_wake.wait_timeout(st, timeout) {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            st = guard;
            if waited.timed_out() && self.blocked {
                // Look again now and then: space can also come back from outside the log.
                self.retry_at = Some(Instant::now());
            }
        }
    }

    fn next_timer(&self) -> Duration {
        let now = Instant::now();
        let mut at = now + BLOCKED_RECHECK;
        if self.synced_len < self.len && self.shared.opts.durability == Durability::Interval {
            at = at.min(self.last_sync + self.shared.opts.sync_interval);
        }
        if let Some(t) = self.retry_at {
            at = at.min(t);
        }
        if let Some(t) = self.refused.since {
            at = at.min(t + REFUSED_GAP_EVERY);
        }
        at.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    fn sync_due(&self) -> bool {
        self.synced_len < self.len
            && self.shared.opts.durability == Durability::Interval
            && self.last_sync.elapsed() >= self.shared.opts.sync_interval
    }

    /// One group commit: admit what fits, write it, sync it, publish it, complete it.
    fn cycle(&mut self, closing: bool) {
        self.retry_at = None;
        self.repair_failed_sync();
        let admitted = self.admit(closing);
        if self.refused.records > 0 && (!admitted.is_empty() || self.refused_due() || closing) {
            self.write_refused_gap();
        }
        if !admitted.is_empty() {
            self.write(admitted);
        }
    }

    /// Writes admitted requests, rolling to a new segment between requests when the
    /// active one is full, and completes each request once its chunk is durable.
    fn write(&mut self, admitted: Vec<AppendRequest>) {
        if let Err(e) = self.ensure_trusted() {
            self.fail(admitted.into_iter(), e);
            return;
        }
        let seg_bytes = self.shared.opts.segment_bytes;
        let mut chunk: Vec<Placed> = Vec::new();
        let mut rest = admitted.into_iter();
        self.start_group();
        let now = now_nanos();
        while let Some(req) = rest.next() {
            let size = req.batch.encoded_len();
            let used = self.len + self.buf.len() as u64;
            if used + size > seg_bytes && used > SEGMENT_HEADER_LEN as u64 {
                if let Err(e) = self.commit(&mut chunk, now) {
                    self.fail(chunk.into_iter().map(|p| p.req).chain([req]).chain(rest), e);
                    return;
                }
                if let Err(e) = self.rollover() {
                    if self.untrusted {
                        self.fail([req].into_iter().chain(rest), rollover::io_error(e));
                        return;
                    }
                    tracing::error!(error = %e, "could not start a new segment; the active one grows past segment_bytes");
                }
                // The next group begins in the new segment (or where the old one ends).
                self.start_group();
            }
            let first = self.next_seq;
            let mut written = Ok(());
            for (kind, payload) in req.batch.iter() {
                encode_into(&mut self.buf, self.next_seq, now, kind, payload);
                self.next_seq += 1;
                if self.buf.len() >= WRITE_PIECE {
                    written = self.write_piece();
                    if written.is_err() {
                        break;
                    }
                }
            }
            if let Err(e) = written {
                // Nobody has seen the group's seqs: they are used again.
                self.next_seq = chunk.first().map_or(first, |p| p.range.first);
                self.buf.clear();
                self.fail(chunk.into_iter().map(|p| p.req).chain([req]).chain(rest), e);
                return;
            }
            let range = SeqRange {
                first,
                last: self.next_seq - 1,
            };
            chunk.push(Placed { req, range });
        }
        if let Err(e) = self.commit(&mut chunk, now) {
            self.fail(chunk.into_iter().map(|p| p.req), e);
        }
    }

    /// Writes `buf` (the records of `chunk`) at the end of the active segment, syncs it as
    /// the durability mode says, publishes it and completes the chunk's requests. On
    /// failure the segment is cut back to where it was and the sequence numbers are
    /// reused: nobody has seen them.
    ///
    /// Under `interval` the requests complete now but readers see the records only after
    /// the timer's sync (run before completing when it is due): a sink never sends a record
    /// a power cut can still take back, so its seq is never handed out again with another
    /// event (which a receiver that deduplicates by seq would drop).
    fn commit(&mut self, chunk: &mut Vec<Placed>, now: u64) -> Result<(), io::Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        let first_seq = chunk[0].range.first;
        let bytes = self.group_written + self.buf.len() as u64;
        if let Err(e) = self.write_buf(false) {
            self.next_seq = first_seq;
            self.buf.clear();
            return Err(e);
        }
        let records: u64 = chunk.iter().map(|p| p.range.len()).sum();
        self.start_group();
        if self.shared.opts.durability == Durability::Always {
            // The sync stage syncs, publishes and completes while the next group is
            // encoded and written.
            self.record_len();
            let path = self.shared.segment_path(self.active_first_seq());
            self.shared.syncer.push(WrittenGroup {
                file: self.file.clone(),
                path,
                end_len: self.len,
                next_seq: self.next_seq,
                now,
                records,
                bytes,
                requests: chunk.drain(..).map(|p| (p.req, p.range)).collect(),
            });
            return Ok(());
        }
        if self.shared.opts.durability == Durability::Interval {
            self.record_len();
            let u = self.unpublished.get_or_insert(Unpublished {
                len: self.len,
                next_seq: self.next_seq,
                first_now: now,
                last_now: now,
                records: 0,
                bytes: 0,
            });
            u.len = self.len;
            u.next_seq = self.next_seq;
            u.last_now = now;
            u.records += records;
            u.bytes += bytes;
            if self.last_sync.elapsed() >= self.shared.opts.sync_interval {
                // The timer's sync is due: run it before completing, so that an append
                // after a quiet spell is visible to readers when it completes.
                self.sync_now();
            }
        } else {
            self.publish(now, records, bytes);
        }
        for p in chunk.drain(..) {
            complete(p.req, Ok(p.range));
        }
        Ok(())
    }

    /// Begins a group of records at the end of the active segment, with nothing encoded.
    fn start_group(&mut self) {
        self.buf.clear();
        self.group_start = self.len;
        self.group_written = 0;
    }

    /// Writes the records waiting in `buf` ahead of the group's end (not synced; the
    /// group's commit syncs them with the rest). On failure the segment is cut back to
    /// where the group began.
    fn write_piece(&mut self) -> Result<(), io::Error> {
        self.reserve(self.buf.len() as u64);
        let result = self.file.write_all_at(&self.buf, self.len);
        match &result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.group_written += self.buf.len() as u64;
                self.buf.clear();
            }
            Err(e) => self.cut_back(e),
        }
        result
    }

    /// Writes `buf` at the end of the active segment, the group's last piece, and syncs if
    /// asked; cuts the segment back to where the group began on failure.
    fn write_buf(&mut self, sync: bool) -> Result<(), io::Error> {
        self.write_piece()?;
        if sync {
            if let Err(e) = self.sync_active() {
                self.cut_back(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// After a failed write or sync: the active segment ends where the current group
    /// began again (its records were never published; their seqs are used again).
    fn cut_back(&mut self, e: &io::Error) {
        if !is_disk_full(e) {
            self.untrusted = true;
        }
        let at = self.group_start;
        self.len = at;
        self.synced_len = self.synced_len.min(at);
        self.reserved = at;
        self.group_written = 0;
        if let Err(e) = self.file.set_len(at) {
            tracing::error!(error = %e, "could not cut the active segment back after a failed write");
        }
    }

    fn sync_active(&mut self) -> Result<(), io::Error> {
        let started = Instant::now();
        if let Err(e) = self.file.sync_data() {
            self.untrusted = true;
            return Err(e);
        }
        let took = started.elapsed();
        self.synced_len = self.len;
        self.last_sync = Instant::now();
        {
            let mut st = self.shared.lock();
            st.counters.syncs += 1;
            st.counters.sync_nanos += took.as_nanos() as u64;
        }
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
        Ok(())
    }

    /// Makes what was written visible to readers.
    fn publish(&mut self, now: u64, records: u64, bytes: u64) {
        self.record_len();
        self.shared
            .publish(self.len, self.next_seq, now, now, records, bytes);
    }

    /// Tells the shared state how long the active segment is (for capacity).
    fn record_len(&self) {
        if let Some(active) = self.shared.lock().segments.back_mut() {
            active.len = self.len;
            active.published_len = active.published_len.min(self.len);
        }
    }

    fn active_first_seq(&self) -> Seq {
        self.shared
            .lock()
            .segments
            .back()
            .map_or(self.next_seq, |s| s.first_seq)
    }

    /// Writes one record of the log's own (a gap record) durably, whatever the mode.
    fn write_internal(&mut self, kind: RecordKind, payload: &[u8]) -> Result<Seq, io::Error> {
        // Keep publication in seq order: what the sync stage holds goes first.
        self.settle();
        self.ensure_trusted()?;
        let now = now_nanos();
        let seq = self.next_seq;
        self.start_group();
        encode_into(&mut self.buf, seq, now, kind, payload);
        let bytes = self.buf.len() as u64;
        if let Err(e) = self.write_buf(true) {
            self.buf.clear();
            return Err(e);
        }
        self.next_seq += 1;
        self.publish(now, 1, bytes);
        Ok(seq)
    }

    /// Waits for the sync stage to finish what it holds; afterwards everything written is
    /// synced (unless a sync failed, which `repair_failed_sync` handles).
    fn settle(&mut self) {
        if self.shared.opts.durability == Durability::Always {
            self.shared.syncer.drain();
            if !self.shared.syncer.has_failure() {
                self.synced_len = self.len;
            }
        }
    }

    /// Close: complete what can be, sync, and let go of the file.
    fn close(&mut self) {
        self.settle();
        for req in self.pending.drain(..) {
            complete(req, Err(Error::Closed));
        }
        let queued: Vec<_> = {
            let mut st = self.shared.lock();
            let retry: Vec<_> = st.retry.drain(..).collect();
            retry.into_iter().chain(st.queue.drain(..)).collect()
        };
        for req in queued {
            complete(req, Err(Error::Closed));
        }
        if self.synced_len < self.len {
            if let Err(e) = self.sync_active() {
                tracing::error!(error = %e, "final fdatasync of the WAL failed");
            }
        }
        if let Err(e) = self.trim() {
            tracing::error!(error = %e, "could not trim the active WAL segment at close");
        }
    }

    /// Extends the active segment's file, sparsely, a few MiB beyond what the next write
    /// needs: most appends then do not change the file's size, and their `fdatasync` need
    /// not journal one. Recovery treats the zeros after the last record as room, not damage
    /// (and scans at most `RESERVE_AHEAD` of them after a crash); sealing trims them.
    fn reserve(&mut self, upcoming: u64) {
        if self.len + upcoming <= self.reserved {
            return;
        }
        // Never past the segment's target size, so the file never looks bigger than a
        // segment may be.
        let needed = self.len + upcoming;
        let target = (needed + RESERVE_AHEAD).min(self.shared.opts.segment_bytes.max(needed));
        match self.file.set_len(target) {
            Ok(()) => self.reserved = target,
            Err(e) => {
                tracing::debug!(error = %e, "could not extend the active segment; appends grow it")
            }
        }
    }

    /// Cuts the active segment's file to its data and syncs that.
    fn trim(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.reserved = self.len;
        self.file.sync_data()
    }
}

fn complete(req: AppendRequest, result: Result<SeqRange>) {
    // The producer may have given up waiting; that is its business.
    let _ = req.done.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::record::RECORD_HEADER_LEN;

    #[test]
    fn records_never_exceed_header_plus_payload() {
        let mut batch = AppendBatch::new();
        batch.push(b"abc");
        assert_eq!(batch.encoded_len(), (RECORD_HEADER_LEN + 3) as u64);
    }
}
