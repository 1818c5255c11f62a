//! [`AppendBatch`]: the records one producer hands to the log in one append, packed in one
//! buffer so that a thousand lines cost two allocations, not a thousand.

use crate::record::{RecordKind, Seq, RECORD_HEADER_LEN};

/// Records to append together. They get consecutive sequence numbers and complete together.
#[derive(Debug, Default, Clone)]
pub struct AppendBatch {
    data: Vec<u8>,
    ends: Vec<usize>,
    kinds: Vec<RecordKind>,
}

impl AppendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `records` records of `bytes` payload bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        AppendBatch {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
            kinds: Vec::with_capacity(records),
        }
    }

    /// Adds an event record.
    pub fn push(&mut self, payload: &[u8]) {
        self.push_kind(RecordKind::Event, payload);
    }

    /// Adds a gap record: a producer saying that input was lost before it reached the log.
    /// Readers hand it out like the log's own gap records.
    pub fn push_gap(&mut self, gap: &crate::record::Gap) {
        self.push_kind(RecordKind::Gap, &gap.encode());
    }

    pub(crate) fn push_kind(&mut self, kind: RecordKind, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len());
        self.kinds.push(kind);
    }

    /// Adds an event record whose payload is written by `write` into the batch's buffer,
    /// saving a copy when the caller encodes straight into it.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.data.len());
        self.kinds.push(RecordKind::Event);
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload bytes of all its records.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes it will take in a segment.
    pub fn encoded_len(&self) -> u64 {
        (self.data.len() + self.ends.len() * RECORD_HEADER_LEN) as u64
    }

    /// Empties it, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.kinds.clear();
    }

    pub(crate) fn largest_payload(&self) -> usize {
        self.iter().map(|(_, p)| p.len()).max().unwrap_or(0)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (RecordKind, &[u8])> {
        let mut start = 0;
        self.ends.iter().zip(&self.kinds).map(move |(&end, &kind)| {
            let payload = &self.data[start..end];
            start = end;
            (kind, payload)
        })
    }
}

/// The sequence numbers an append received: `first ..= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    /// Sequence number of the batch's first record.
    pub first: Seq,
    /// Sequence number of the batch's last record.
    pub last: Seq,
}

impl SeqRange {
    /// How many records the range holds.
    pub fn len(&self) -> u64 {
        self.last + 1 - self.first
    }

    /// Always false: an append holds at least one record.
    pub fn is_empty(&self) -> bool {
        false
    }
}
