//! A property test against an in-memory model: random sequences of append, read + ack,
//! reopen, torn tail and (with `drop_oldest`) overflow never make the log disagree with the
//! model about which records a reader sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use gapless_wal::{AppendBatch, Cursor, GapReason, Wal, WalOptions, WhenFull};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` records of `len` bytes in one batch.
    Append { n: usize, len: usize },
    /// Read up to `n` records and acknowledge the last one read (if `ack`).
    Read { n: usize, ack: bool },
    /// Close and open again.
    Reopen,
    /// Close, cut `bytes` off the active segment (a torn write), open again.
    TearTail { bytes: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..40, 1usize..1500).prop_map(|(n, len)| Op::Append { n, len }),
        4 => (0usize..80, any::<bool>()).prop_map(|(n, ack)| Op::Read { n, ack }),
        1 => Just(Op::Reopen),
        1 => (1u64..600).prop_map(|bytes| Op::TearTail { bytes }),
    ]
}

fn content(seq: u64, len: usize, salt: u64) -> Vec<u8> {
    let mut v = format!("{seq}:{salt}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (seq % 26) as u8);
    v
}

struct Harness {
    dir: tempfile::TempDir,
    opts: WalOptions,
    wal: Option<Wal>,
    cursor: Option<Cursor>,
    /// seq -> payload of every record that must still exist.
    model: BTreeMap<u64, Vec<u8>>,
    /// First seq not acknowledged.
    acked_next: u64,
    /// Next seq the reader hands out.
    read_next: u64,
    /// Makes each append's payloads unique.
    salt: u64,
}

impl Harness {
    fn new(opts: WalOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness {
            dir,
            opts,
            wal: None,
            cursor: None,
            model: BTreeMap::new(),
            acked_next: 1,
            read_next: 1,
            salt: 0,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let wal = Wal::open(self.dir.path(), self.opts.clone()).unwrap();
        self.cursor = Some(wal.cursor("model").unwrap());
        self.wal = Some(wal);
        self.read_next = self.acked_next;
    }

    fn close(&mut self) {
        self.cursor = None;
        self.wal = None;
    }

    fn next_seq(&self) -> u64 {
        self.wal.as_ref().unwrap().next_seq()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { n, len } => {
                self.salt += 1;
                let first = self.next_seq();
                let mut batch = AppendBatch::new();
                let payloads: Vec<Vec<u8>> = (0..n as u64)
                    .map(|i| content(first + i, len, self.salt))
                    .collect();
                for p in &payloads {
                    batch.push(p);
                }
                let r = self
                    .wal
                    .as_ref()
                    .unwrap()
                    .appender()
                    .append_blocking(batch)
                    .unwrap();
                assert_eq!(r.first, first, "seqs are handed out in order");
                for (i, p) in payloads.into_iter().enumerate() {
                    self.model.insert(r.first + i as u64, p);
                }
            }
            Op::Read { n, ack } => {
                let cursor = self.cursor.as_mut().unwrap();
                let got = cursor.try_read(n, usize::MAX).unwrap();
                let expected: Vec<(u64, Vec<u8>)> = self
                    .model
                    .range(self.read_next..)
                    .take(n.max(1))
                    .map(|(s, p)| (*s, p.clone()))
                    .collect();
                let got_pairs: Vec<(u64, Vec<u8>)> =
                    got.iter().map(|r| (r.seq, r.payload.to_vec())).collect();
                assert_eq!(got_pairs, expected, "reader and model agree");
                if let Some(last) = got.last() {
                    self.read_next = last.seq + 1;
                    if ack {
                        cursor.ack(last.seq).unwrap();
                        self.acked_next = last.seq + 1;
                    }
                }
            }
            Op::Reopen => {
                self.close();
                self.open();
            }
            Op::TearTail { bytes } => {
                self.close();
                let active = segment_files(self.dir.path()).pop().unwrap();
                let len = std::fs::metadata(&active).unwrap().len();
                let cut = len.saturating_sub(bytes).max(32);
                let layout = record_layout(&active);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&active)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                // Records not wholly before the cut are gone (they were never "completed"
                // as far as a torn write is concerned).
                for (off, total, seq) in layout {
                    if off + total > cut {
                        self.model.remove(&seq);
                    }
                }
                self.open();
                let expected_next = self
                    .model
                    .keys()
                    .next_back()
                    .map_or(1, |s| s + 1)
                    .max(self.acked_next);
                assert!(
                    self.next_seq() >= expected_next,
                    "seqs a cursor passed are never reused"
                );
                self.read_next = self.acked_next;
            }
        }
    }

    fn check_stats(&self) {
        let stats = self.wal.as_ref().unwrap().stats().unwrap();
        let backlog = stats.cursors.iter().find(|c| c.name == "model").unwrap();
        assert_eq!(backlog.next, self.acked_next);
        let model_backlog = self.model.range(self.acked_next..).count() as u64;
        assert!(backlog.backlog_records >= model_backlog);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_agrees_with_the_model_under_append_read_ack_reopen_and_torn_tails(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut h = Harness::new(opts(64 << 10, 64 << 20));
        for op in &ops {
            h.apply(op);
            h.check_stats();
        }
        // Finally a fresh reader from the acknowledged position sees exactly the model.
        h.close();
        h.open();
        let got = drain(h.cursor.as_mut().unwrap());
        let expected: Vec<u64> = h.model.range(h.acked_next..).map(|(s, _)| *s).collect();
        let got_seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
        prop_assert_eq!(got_seqs, expected);
    }

    #[test]
    fn under_drop_oldest_every_record_is_read_intact_or_named_in_a_gap_record(
        sizes in proptest::collection::vec((1usize..60, 1usize..2000), 1..80),
        reads in proptest::collection::vec(0usize..200, 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let o = WalOptions { when_full: WhenFull::DropOldest, ..opts(64 << 10, 256 << 10) };
        let wal = Wal::open(dir.path(), o).unwrap();
        let mut cursor = wal.cursor("model").unwrap();
        let mut model = BTreeMap::new();
        let mut seen = Vec::new();
        for (i, (n, len)) in sizes.iter().enumerate() {
            let first = wal.next_seq();
            let mut batch = AppendBatch::new();
            let payloads: Vec<Vec<u8>> = (0..*n as u64).map(|k| content(first + k, *len, 0)).collect();
            for p in &payloads { batch.push(p); }
            let r = wal.appender().append_blocking(batch).unwrap();
            for (k, p) in payloads.into_iter().enumerate() { model.insert(r.first + k as u64, p); }
            prop_assert!(dir_bytes(dir.path()) <= (256 << 10) + (64 << 10) + 4096);
            let got = cursor.try_read(reads[i % reads.len()], usize::MAX).unwrap();
            if let Some(last) = got.last() { cursor.ack(last.seq).unwrap(); }
            seen.extend(got);
        }
        seen.extend(drain(&mut cursor));
        let mut covered = std::collections::BTreeSet::new();
        for r in &seen {
            match r.gap() {
                Some(g) => {
                    prop_assert_eq!(g.reason, GapReason::DropOldest);
                    let (a, b) = g.seqs.unwrap();
                    covered.extend(a..=b);
                    covered.insert(r.seq);
                }
                None => {
                    prop_assert_eq!(&r.payload[..], &model[&r.seq][..]);
                    covered.insert(r.seq);
                }
            }
        }
        let last = wal.next_seq() - 1;
        for s in 1..=last {
            prop_assert!(covered.contains(&s), "seq {} vanished without a gap record", s);
        }
    }
}
