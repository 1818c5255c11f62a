//! Damaged files: torn tails, flipped bits and overwritten runs, in sealed and active
//! segments. Open must succeed, readers get every intact record plus gap records naming
//! exactly the lost seqs, and the loss stays within the damaged records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use gapless_wal::{GapReason, Wal};

const LEN: usize = 200;

/// A closed log of `n` records of `LEN` bytes in 64 KiB segments.
fn written_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 37).min(n);
        append(&wal, i..end, LEN);
        i = end;
    }
    drop(wal);
    dir
}

fn read_all(dir: &Path) -> Vec<gapless_wal::Record> {
    let wal = Wal::open(dir, small()).unwrap();
    let mut c = wal.cursor("reader").unwrap();
    drain(&mut c)
}

#[test]
fn open_after_a_torn_tail_keeps_every_complete_record_before_the_cut() {
    // Crash during write(): the active segment ends inside one of its last records.
    let base = written_log(60);
    let active = segment_files(base.path()).pop().unwrap();
    let layout = record_layout(&active);
    let last_three = &layout[layout.len() - 3..];
    let from = last_three[0].0;
    let to = last_three[2].0 + last_three[2].1;
    for cut in from..to {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(active.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let complete: Vec<u64> = layout
            .iter()
            .filter(|r| r.0 + r.1 <= cut)
            .map(|r| r.2)
            .collect();
        let wal = Wal::open(dir.path(), small()).unwrap();
        let mut c = wal.cursor("reader").unwrap();
        let got = drain(&mut c);
        assert!(gaps(&got).is_empty(), "cut {cut}: a torn tail is not a gap");
        let last_complete = *complete.last().unwrap();
        assert_eq!(got.len() as u64, last_complete, "cut {cut}");
        check_stream(&got, last_complete, LEN);
        let r = wal
            .appender()
            .append_blocking(batch_of(1000..1001, LEN))
            .unwrap();
        assert_eq!(
            r.first,
            last_complete + 1,
            "cut {cut}: appending continues after the last complete record"
        );
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_costs_exactly_its_record() {
    let base = written_log(2000);
    let segs = segment_files(base.path());
    assert!(segs.len() >= 4);
    // Every byte position class of a record: header fields and payload.
    let layout = record_layout(&segs[1]);
    let (off, total, seq) = layout[layout.len() / 2];
    for delta in [0, 3, 5, 9, 12, 14, 17, 25, 40, total - 1] {
        let dir = copy_dir(base.path());
        flip_bit(
            &dir.path().join(segs[1].file_name().unwrap()),
            off + delta,
            3,
        );
        let got = read_all(dir.path());
        let lost = check_stream(&got, 2000, LEN);
        assert_eq!(lost, vec![seq], "flip at +{delta}");
        let g = gaps(&got);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].reason, GapReason::Corrupt);
        assert_eq!(g[0].seqs, Some((seq, seq)));
    }
}

#[test]
fn overwritten_runs_cost_only_the_records_they_touch() {
    let base = written_log(2000);
    let segs = segment_files(base.path());
    for (seg_idx, start) in [(0usize, 5_000u64), (2, 33_333), (segs.len() - 1, 700)] {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(segs[seg_idx].file_name().unwrap());
        let layout = record_layout(&seg);
        // Two 256-byte runs, as in the measurements of other agents' buffers.
        let runs = [start, start + 4_000];
        for (i, r) in runs.iter().enumerate() {
            overwrite(&seg, *r, 256, if i == 0 { 0x00 } else { 0x5A });
        }
        let touched: Vec<u64> = layout
            .iter()
            .filter(|(o, t, _)| runs.iter().any(|r| *o < r + 256 && r < &(o + t)))
            .map(|x| x.2)
            .collect();
        let got = read_all(dir.path());
        let lost = check_stream(&got, 2000, LEN);
        assert_eq!(
            lost, touched,
            "segment {seg_idx}: lost exactly the touched records"
        );
        assert!(
            lost.len() <= 6,
            "two 256-byte runs over 232-byte records cost at most 6"
        );
        let wal = Wal::open(dir.path(), small()).unwrap();
        let report = wal.verify().unwrap();
        let mut reported: Vec<u64> = report.lost().into_iter().flat_map(|(a, b)| a..=b).collect();
        reported.sort_unstable();
        assert_eq!(reported, touched, "verify names the same seqs");
    }
}

#[test]
fn damage_at_the_end_of_the_active_segment_is_reported_and_its_seqs_never_reused() {
    let base = written_log(300);
    let active = segment_files(base.path()).pop().unwrap();
    let layout = record_layout(&active);
    let n = layout.len();
    let cases: Vec<(&str, u64, usize)> = vec![
        ("bit flip in the last payload", layout[n - 1].0 + 100, 1),
        ("last two records overwritten", layout[n - 2].0 + 40, 300),
        ("last record's magic gone", layout[n - 1].0, 4),
    ];
    for (what, offset, len) in cases {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(active.file_name().unwrap());
        overwrite(&seg, offset, len, 0x11);
        let wal = Wal::open(dir.path(), small()).unwrap();
        let mut c = wal.cursor("reader").unwrap();
        let r = wal
            .appender()
            .append_blocking(batch_of(300..301, LEN))
            .unwrap();
        assert_eq!(r.first, 301, "{what}: seqs continue after the damaged ones");
        let got = drain(&mut c);
        let lost = check_stream(&got, 301, LEN);
        let touched: Vec<u64> = layout
            .iter()
            .filter(|(o, t, _)| *o < offset + len as u64 && offset < o + t)
            .map(|x| x.2)
            .collect();
        assert_eq!(lost, touched, "{what}");
    }
}

#[test]
fn a_damaged_segment_header_does_not_hide_its_records() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    let dir = copy_dir(base.path());
    flip_bit(&dir.path().join(segs[1].file_name().unwrap()), 13, 0);
    let got = read_all(dir.path());
    let lost = check_stream(&got, 1000, LEN);
    assert!(lost.is_empty());
}

#[test]
fn a_deleted_sealed_segment_becomes_a_gap_not_a_silent_hole() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    let dir = copy_dir(base.path());
    let victim = dir.path().join(segs[2].file_name().unwrap());
    let layout = record_layout(&victim);
    std::fs::remove_file(&victim).unwrap();
    let got = read_all(dir.path());
    let lost = check_stream(&got, 1000, LEN);
    let expected: Vec<u64> = layout.iter().map(|x| x.2).collect();
    assert_eq!(lost, expected);
    assert!(gaps(&got).iter().all(|g| g.reason == GapReason::Missing));
}
