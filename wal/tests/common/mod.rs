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

/// (offset, total length, seq) of every record of an undamaged segment file, walking the
/// documented layout: a 32-byte segment header, then records with their payload length at
/// byte 8 and their seq at byte 16 of a 32-byte header.
pub fn record_layout(path: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 32usize;
    let mut out = Vec::new();
    while at + 32 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap());
        out.push((at as u64, (32 + len) as u64, seq));
        at += 32 + len;
    }
    assert_eq!(at, bytes.len(), "{} is not a clean segment", path.display());
    out
}

/// Overwrites `len` bytes at `offset` of `path` with `byte`.
pub fn overwrite(path: &Path, offset: u64, len: usize, byte: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![byte; len], offset).unwrap();
}

/// Flips one bit at `offset` of `path`.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, offset).unwrap();
}

/// Copies every file of `from` into a fresh temp dir.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

/// Checks what a reader got against what was appended (record i has `payload(i - 1, len)`
/// for seq i): every event intact, and the seqs that are missing exactly those named by
/// gap records. Returns the lost seqs.
pub fn check_stream(records: &[Record], appended: u64, len: usize) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    let mut lost = std::collections::BTreeSet::new();
    for r in records {
        match r.gap() {
            Some(g) => {
                let (a, b) = g.seqs.expect("corruption gaps name their seqs");
                lost.extend(a..=b);
            }
            None => {
                assert_eq!(
                    &r.payload[..],
                    &payload(r.seq - 1, len)[..],
                    "seq {} intact",
                    r.seq
                );
                assert!(seen.insert(r.seq), "seq {} read twice", r.seq);
            }
        }
    }
    for s in 1..=appended {
        assert!(
            seen.contains(&s) != lost.contains(&s),
            "seq {s} must be either read or named lost, exactly once (read: {}, lost: {})",
            seen.contains(&s),
            lost.contains(&s)
        );
    }
    lost.into_iter().collect()
}
