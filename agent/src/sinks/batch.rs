//! Reading batches from a sink's cursor: up to `max_events` events or `max_bytes`, or
//! whatever arrived within `timeout` of the first one. Records of sources the sink does
//! not take are skipped but still covered by the batch's sequence range, so that acking
//! the batch moves past them and a receiver sees ranges that join.

use std::collections::HashSet;
use std::time::Duration;

use gapless_wal::{Cursor, Record, RecordKind, Seq, Wal};
use tokio::time::Instant;

use crate::event::split_payload;

/// Records read from the WAL, to be delivered together.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The first sequence number the batch covers (skipped records included).
    pub first_seq: Seq,
    /// The last sequence number it covers.
    pub last_seq: Seq,
    /// The records to deliver: events of the sink's inputs, and every gap record.
    pub records: Vec<Record>,
    /// Payload bytes of `records`.
    pub bytes: usize,
}

impl Batch {
    /// Whether the batch covers no sequence number at all.
    pub fn is_empty(&self) -> bool {
        self.last_seq < self.first_seq || self.first_seq == 0
    }

    /// Splits the records into two halves, each with its own range (for a 413).
    pub fn split(self) -> (Batch, Batch) {
        let mid = self.records.len() / 2;
        let mut left = self.records;
        let right = left.split_off(mid);
        let left_last = right.first().map_or(self.last_seq, |r| r.seq - 1);
        let bytes = |rs: &[Record]| rs.iter().map(|r| r.payload.len()).sum();
        (
            Batch {
                first_seq: self.first_seq,
                last_seq: left_last,
                bytes: bytes(&left),
                records: left,
            },
            Batch {
                first_seq: left_last + 1,
                last_seq: self.last_seq,
                bytes: bytes(&right),
                records: right,
            },
        )
    }
}

/// Whether a sink taking `inputs` (all when empty) delivers `r`: gap records always.
fn wanted(inputs: &[Vec<u8>], r: &Record) -> bool {
    if r.kind == RecordKind::Gap || inputs.is_empty() {
        return true;
    }
    match split_payload(&r.payload) {
        Some((name, _)) => inputs.iter().any(|i| i == name),
        None => true,
    }
}

/// Reads `first ..= last` again from the WAL (still there: not acknowledged), keeping what
/// a sink taking `inputs` delivers. For the rare paths (413 split, dead letter) that need
/// the records of a batch already encoded, so that batches in flight hold only their body.
pub fn reread(
    wal: &Wal,
    inputs: &HashSet<String>,
    first: Seq,
    last: Seq,
) -> gapless_wal::Result<Batch> {
    let inputs: Vec<Vec<u8>> = inputs.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut reader = wal.reader_from(first);
    let mut batch = Batch {
        first_seq: first,
        last_seq: last,
        ..Batch::default()
    };
    'read: loop {
        let got = reader.try_read(1000, 8 << 20)?;
        if got.is_empty() {
            break;
        }
        for r in got {
            if r.seq > last {
                break 'read;
            }
            if wanted(&inputs, &r) {
                batch.bytes += r.payload.len();
                batch.records.push(r);
            }
        }
    }
    Ok(batch)
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most events per batch.
    pub max_events: usize,
    /// Most payload bytes per batch.
    pub max_bytes: usize,
    /// Longest wait for more events once one is in hand.
    pub timeout: Duration,
}

/// Fills batches from a cursor. What it read stays in it across cancellation: a batch
/// being filled is never lost because its future was dropped.
pub struct BatchReader {
    inputs: Vec<Vec<u8>>,
    limits: BatchLimits,
    pending: Batch,
    deadline: Option<Instant>,
}

impl BatchReader {
    /// A reader taking events from `inputs` (all sources when empty).
    pub fn new(inputs: &HashSet<String>, limits: BatchLimits) -> Self {
        BatchReader {
            inputs: inputs.iter().map(|s| s.as_bytes().to_vec()).collect(),
            limits,
            pending: Batch::default(),
            deadline: None,
        }
    }

    fn wanted(&self, r: &Record) -> bool {
        wanted(&self.inputs, r)
    }

    fn take(&mut self, records: Vec<Record>) {
        if self.pending.records.is_empty() {
            // Most batches are one read: keep its Vec rather than copy it over.
            self.pending.records = Vec::with_capacity(records.len());
        } else {
            self.pending.records.reserve(records.len());
        }
        for r in records {
            if self.pending.first_seq == 0 {
                self.pending.first_seq = r.seq;
                if let Some(gap) = r.gap().and_then(|g| g.seqs) {
                    // A reader-made gap carries the last lost seq; the range starts at the first.
                    self.pending.first_seq = gap.0.min(r.seq);
                }
            }
            self.pending.last_seq = r.seq;
            if self.wanted(&r) {
                self.pending.bytes += r.payload.len();
                self.pending.records.push(r);
            }
        }
    }

    fn full(&self) -> bool {
        self.pending.records.len() >= self.limits.max_events
            || self.pending.bytes >= self.limits.max_bytes
    }

    /// The next batch: waits for the first record, then fills until a limit or the
    /// timeout. Cancel-safe.
    pub async fn next(&mut self, cursor: &mut Cursor) -> gapless_wal::Result<Batch> {
        loop {
            if self.full() {
                return Ok(self.finish());
            }
            let want = (self.limits.max_events - self.pending.records.len()).max(1);
            let bytes_left = self
                .limits
                .max_bytes
                .saturating_sub(self.pending.bytes)
                .max(1);
            if self.pending.is_empty() {
                let got = cursor.read(want, bytes_left).await?;
                self.take(got);
                self.deadline = Some(Instant::now() + self.limits.timeout);
                continue;
            }
            let got = cursor.try_read(want, bytes_left)?;
            if !got.is_empty() {
                self.take(got);
                continue;
            }
            let deadline = self.deadline.unwrap_or_else(Instant::now);
            if Instant::now() >= deadline {
                return Ok(self.finish());
            }
            tokio::select! {
                got = cursor.read(want, bytes_left) => self.take(got?),
                () = tokio::time::sleep_until(deadline) => return Ok(self.finish()),
            }
        }
    }

    /// Whatever is pending, now (for shutdown).
    pub fn take_pending(&mut self) -> Option<Batch> {
        (!self.pending.is_empty()).then(|| self.finish())
    }

    fn finish(&mut self) -> Batch {
        self.deadline = None;
        std::mem::take(&mut self.pending)
    }
}
