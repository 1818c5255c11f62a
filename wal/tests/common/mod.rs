//! Shared helpers for the WAL's integration tests: real directories, real files.
#![allow(dead_code)]

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use gapless_wal::{AppendBatch, Cursor, Durability, Record, RecordKind, Wal, WalOptions, WhenFull};

pub fn opts(segment_bytes: u64, max_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        max_bytes,
        durability: Durability::Always,
        sync_interval: Duration::from_millis(20),
        when_full: WhenFull::Block,
    }
}

pub fn small() -> WalOptions {
    opts(64 << 10, 64 << 20)
}

/// A payload that says which record it is, so that a reader can check it.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("record-{i:010}-").into_bytes();
    while p.len() < len {
        p.push(b'a' + (i % 26) as u8);
    }
    p.truncate(len.max(18));
    p
}

pub fn batch_of(range: std::ops::Range<u64>, len: usize) -> AppendBatch {
    let mut b = AppendBatch::new();
    for i in range {
        b.push(&payload(i, len));
    }
    b
}

pub fn append(wal: &Wal, range: std::ops::Range<u64>, len: usize) -> gapless_wal::SeqRange {
    wal.appender()
        .append_blocking(batch_of(range, len))
        .unwrap()
}

/// Everything the cursor can read now.
pub fn drain(cursor: &mut Cursor) -> Vec<Record> {
    let mut all = Vec::new();
    loop {
        let batch = cursor.try_read(10_000, 64 << 20).unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

pub fn events(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Event)
        .collect()
}

pub fn gaps(records: &[Record]) -> Vec<gapless_wal::Gap> {
    records.iter().filter_map(|r| r.gap()).collect()
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}
