//! Cursors: named, durable read positions. A [`Cursor`] streams records from its position
//! onward, waking as soon as the appender publishes more, and turns damage and holes into
//! gap records so that its consumer always learns what it did not get. `ack` persists the
//! position (see `cursor_file`) and lets retention delete what every cursor has passed.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use tokio::sync::watch;

use crate::cursor_file::{CursorFile, CursorPosition};
use crate::error::{Error, Result};
use crate::record::{Gap, GapReason, Record, RecordKind, Seq, RECORD_HEADER_LEN};
use crate::retention;
use crate::segment::{ScanItem, SegmentScanner};
use crate::shared::{now_nanos, Shared};

/// Where a batch handed out by [`Cursor::read`] ended, to remember where the next record
/// starts when the batch is acknowledged.
#[derive(Debug, Clone, Copy)]
struct BatchEnd {
    last_seq: Seq,
    segment: Seq,
    offset: u64,
}

/// How many batch ends a cursor remembers for position hints.
const MAX_BATCH_ENDS: usize = 256;

/// A consumer's durable position in the log, and a reader from it onward.
///
/// Obtain one with [`crate::Wal::cursor`]; only one handle per name is open at a time.
pub struct Cursor {
    shared: Arc<Shared>,
    name: String,
    /// `None` for a reader that is not a durable cursor ([`crate::Wal::reader_from`]).
    file: Option<CursorFile>,
    /// First sequence number not yet acknowledged (persisted).
    acked_next: Seq,
    /// Next sequence number to hand out.
    read_next: Seq,
    /// Where `read_next` starts, if known, for the next positioning.
    hint: Option<(Seq, u64)>,
    scanner: Option<SegmentScanner>,
    published: watch::Receiver<Seq>,
    /// Damaged bytes met since the last intact record.
    damaged_bytes: u64,
    /// Append time of the last intact record read.
    last_ts: u64,
    batch_ends: VecDeque<BatchEnd>,
    /// A record to hand out before reading on (the record after a gap).
    pending: Option<Record>,
}

impl Cursor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        name: String,
        file: Option<CursorFile>,
        pos: CursorPosition,
    ) -> Self {
        let published = shared.published.subscribe();
        Cursor {
            shared,
            name,
            file,
            acked_next: pos.next,
            read_next: pos.next,
            hint: pos.hint,
            scanner: None,
            published,
            damaged_bytes: 0,
            last_ts: 0,
            batch_ends: VecDeque::new(),
            pending: None,
        }
    }

    /// A reader from `seq` on (or from the oldest record, if `seq` is older) that is not a
    /// durable cursor: it holds nothing back and its acks are not persisted.
    pub(crate) fn reader_from(shared: &Arc<Shared>, seq: Seq) -> Cursor {
        let oldest = {
            let st = shared.lock();
            st.segments
                .front()
                .map_or(st.published_next, |s| s.first_seq)
        };
        Cursor::new(
            shared.clone(),
            "reader".into(),
            None,
            CursorPosition {
                next: seq.max(oldest),
                hint: None,
            },
        )
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first sequence number not yet acknowledged.
    pub fn acked_next(&self) -> Seq {
        self.acked_next
    }

    /// The next sequence number [`Cursor::read`] will hand out.
    pub fn read_next(&self) -> Seq {
        self.read_next
    }

    /// Waits until at least one record (or gap) is available after what was already read,
    /// then returns up to `max_records` of them, stopping once `max_bytes` of payload are
    /// collected. The last record appended is returned as soon as it is published.
    ///
    /// Reading a segment is short blocking file I/O (usually from the page cache) done on
    /// the calling thread.
    pub async fn read(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        loop {
            self.published.borrow_and_update();
            let out = self.try_read(max_records, max_bytes)?;
            if !out.is_empty() {
                return Ok(out);
            }
            if self.shared.lock().closing {
                return Err(Error::Closed);
            }
            if self.published.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Like [`Cursor::read`] but returns at once, possibly with nothing.
    pub fn try_read(&mut self, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        let max_records = max_records.max(1);
        let mut out = Vec::with_capacity(max_records.min(1024));
        let mut bytes = 0usize;
        while out.len() < max_records && bytes < max_bytes {
            match self.step()? {
                Step::Record(r) => {
                    bytes += r.payload.len() + RECORD_HEADER_LEN;
                    out.push(r);
                }
                Step::Again => {}
                Step::CaughtUp => break,
            }
        }
        if let (Some(last), Some(scanner)) = (out.last(), &self.scanner) {
            if last.seq + 1 == self.read_next {
                self.batch_ends.push_back(BatchEnd {
                    last_seq: last.seq,
                    segment: scanner.first_seq(),
                    offset: scanner.position(),
                });
                if self.batch_ends.len() > MAX_BATCH_ENDS {
                    self.batch_ends.pop_front();
                }
            }
        }
        Ok(out)
    }

    /// Acknowledges every record up to and including `seq`: persists the position, so a
    /// restart resumes after it, and lets retention delete what all cursors passed.
    /// Blocks for one `fdatasync` of the small cursor file.
    pub fn ack(&mut self, seq: Seq) -> Result<()> {
        if seq < self.acked_next {
            return Ok(());
        }
        if seq >= self.read_next {
            return Err(Error::AckBeyondRead {
                name: self.name.clone(),
                seq,
                delivered: self.read_next.saturating_sub(1),
            });
        }
        while self.batch_ends.front().is_some_and(|b| b.last_seq < seq) {
            self.batch_ends.pop_front();
        }
        let hint = self
            .batch_ends
            .front()
            .filter(|b| b.last_seq == seq)
            .map(|b| (b.segment, b.offset));
        let pos = CursorPosition {
            next: seq + 1,
            hint,
        };
        let Some(file) = self.file.as_mut() else {
            self.acked_next = pos.next;
            return Ok(());
        };
        file.store(pos)?;
        self.acked_next = pos.next;
        {
            let mut st = self.shared.lock();
            if let Some(entry) = st.cursors.get_mut(&self.name) {
                entry.next = pos.next;
                entry.hint = pos.hint;
            }
        }
        retention::collect(&self.shared);
        Ok(())
    }

    /// Forgets what was read but not acknowledged: the next read starts again at the first
    /// unacknowledged record (for a consumer that restarts its work).
    pub fn rewind(&mut self) {
        self.read_next = self.acked_next;
        self.hint = self
            .shared
            .lock()
            .cursors
            .get(&self.name)
            .and_then(|c| c.hint);
        self.scanner = None;
        self.damaged_bytes = 0;
        self.batch_ends.clear();
        self.pending = None;
    }

    /// One record, gap or movement.
    fn step(&mut self) -> Result<Step> {
        if let Some(r) = self.pending.take() {
            return Ok(Step::Record(r));
        }
        if self.scanner.is_none() && !self.position()? {
            return Ok(match self.pending.take() {
                Some(gap) => Step::Record(gap),
                None => Step::CaughtUp,
            });
        }
        let Some(scanner) = self.scanner.as_mut() else {
            return Ok(Step::CaughtUp);
        };
        let seg = scanner.first_seq();
        let bounds = {
            let st = self.shared.lock();
            st.segment_index(seg).map(|i| {
                let s = &st.segments[i];
                (
                    s.published_len,
                    s.sealed,
                    st.segment_seq_end(i),
                    st.dropped_below,
                )
            })
        };
        let Some((limit, sealed, seq_end, dropped_below)) = bounds else {
            // Deleted under us (drop_oldest): find where to go on from.
            self.scanner = None;
            return Ok(Step::Again);
        };
        scanner.set_limit(limit, Some(seq_end));
        match scanner.next()? {
            ScanItem::Record {
                seq,
                timestamp,
                kind,
                payload,
                ..
            } => {
                if seq < self.read_next {
                    // Skipping to the resume point; damage before it is not ours to report.
                    self.damaged_bytes = 0;
                    return Ok(Step::Again);
                }
                let gap = (seq > self.read_next).then(|| self.hole(seq, dropped_below, timestamp));
                self.read_next = seq + 1;
                self.last_ts = timestamp;
                self.damaged_bytes = 0;
                let record = Record {
                    seq,
                    timestamp,
                    kind,
                    payload,
                };
                match gap {
                    // Hand out the gap first and the record on the next step.
                    Some(gap) => {
                        self.pending = Some(record);
                        Ok(Step::Record(gap))
                    }
                    None => Ok(Step::Record(record)),
                }
            }
            ScanItem::Damaged { offset, len } => {
                tracing::warn!(path = %scanner.path().display(), offset, len, "damaged bytes in WAL segment skipped");
                self.damaged_bytes += len;
                Ok(Step::Again)
            }
            ScanItem::End if sealed => {
                self.scanner = None;
                if self.read_next < seq_end {
                    return Ok(Step::Record(self.hole(seq_end, dropped_below, 0)));
                }
                Ok(Step::Again)
            }
            ScanItem::End => {
                if self.damaged_bytes > 0 && self.read_next < seq_end {
                    return Ok(Step::Record(self.hole(seq_end, dropped_below, 0)));
                }
                Ok(Step::CaughtUp)
            }
        }
    }

    /// Records `read_next .. upto` are missing: returns the gap record to hand out and
    /// moves `read_next` to `upto`.
    fn hole(&mut self, upto: Seq, dropped_below: Seq, next_ts: u64) -> Record {
        let first = self.read_next;
        let last = upto - 1;
        self.read_next = upto;
        let damaged = std::mem::take(&mut self.damaged_bytes);
        let reason = if damaged > 0 {
            GapReason::Corrupt
        } else if upto <= dropped_below {
            // The log's own gap record names this drop too, but it lies further on and
            // may itself be dropped before this reader gets there: say it here as well.
            GapReason::DropOldest
        } else {
            GapReason::Missing
        };
        tracing::warn!(cursor = %self.name, first_seq = first, last_seq = last, bytes = damaged, reason = reason.as_str(), "records lost from the WAL; handing out a gap record");
        let (bytes, from, to) = match reason {
            GapReason::DropOldest => self.shared.lock().dropped_in(first, last),
            _ => (damaged, self.last_ts, next_ts),
        };
        let gap = Gap {
            reason,
            seqs: Some((first, last)),
            records: upto - first,
            bytes,
            from,
            to,
        };
        Record {
            seq: last,
            timestamp: now_nanos(),
            kind: RecordKind::Gap,
            payload: gap.encode().into(),
        }
    }

    /// Opens the segment that holds `read_next`. Returns false when there is none.
    fn position(&mut self) -> Result<bool> {
        loop {
            let (seg, first_available, dropped_below) = {
                let st = self.shared.lock();
                let Some(idx) = st.locate(self.read_next) else {
                    return Ok(false);
                };
                (
                    st.segments[idx].first_seq,
                    st.segments[0].first_seq,
                    st.dropped_below,
                )
            };
            if self.read_next < first_available {
                // The records before the oldest segment are gone, by policy or from outside
                // the log: hand out a gap for them before reading on.
                self.hint = None;
                self.pending = Some(self.hole(first_available, dropped_below, 0));
                return Ok(false);
            }
            let path = self.shared.segment_path(seg);
            let mut scanner = match SegmentScanner::open(path, seg, self.shared.max_payload) {
                Ok(s) => s,
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue;
                }
                Err(e) => return Err(e),
            };
            scanner.tolerate_unreadable();
            if let Some((hint_seg, offset)) = self.hint.take() {
                if hint_seg == seg && self.hint_is_valid(&mut scanner, offset)? {
                    scanner.seek(offset, self.read_next.checked_sub(1));
                }
            }
            self.scanner = Some(scanner);
            return Ok(true);
        }
    }
}

impl Cursor {
    /// A remembered position is used only if the record `read_next` is really there (or
    /// the log ends exactly there): a stale hint must never make the reader misparse.
    fn hint_is_valid(&self, scanner: &mut SegmentScanner, offset: u64) -> Result<bool> {
        let (limit, seq_end) = {
            let st = self.shared.lock();
            let Some(i) = st.segment_index(scanner.first_seq()) else {
                return Ok(false);
            };
            (st.segments[i].published_len, st.segment_seq_end(i))
        };
        if offset == limit {
            return Ok(seq_end == self.read_next);
        }
        scanner.set_limit(limit, Some(seq_end));
        Ok(scanner.peek_seq(offset)? == Some(self.read_next))
    }
}

enum Step {
    Record(Record),
    Again,
    CaughtUp,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.file.is_none() {
            return;
        }
        if let Some(entry) = self.shared.lock().cursors.get_mut(&self.name) {
            entry.open = false;
        }
    }
}
