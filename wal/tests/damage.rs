//! Damaged files: torn tails, flipped bits and overwritten runs, in sealed and active
//! segments. Open must succeed, readers get every intact record plus gap records naming
//! exactly the lost seqs, and the loss stays within the damaged records. A gap names only
//! seqs bounded by evidence: damaged headers cost none, and bytes after the last record
//! of a segment are never taken for records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use gapless_wal::{GapReason, ReadOnlyWal, Wal};

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

/// Reads the log without changing it: the verify report and every record from the oldest.
fn read_only(dir: &Path) -> (gapless_wal::VerifyReport, Vec<gapless_wal::Record>) {
    let wal = ReadOnlyWal::open(dir, small()).unwrap();
    let report = wal.verify().unwrap();
    let mut reader = wal.reader_from(0);
    (report, drain(&mut reader))
}

/// No gap record names a seq that was never written.
fn assert_no_seq_above(records: &[gapless_wal::Record], last: u64, what: &str) {
    for g in gaps(records) {
        let (_, z) = g.seqs.unwrap();
        assert!(
            z <= last,
            "{what}: a gap names seq {z}, above the last written, {last}: {g:?}"
        );
    }
}

#[test]
fn a_damaged_segment_header_costs_no_seq_and_verify_names_the_header() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    let n = segs.len();
    assert!(n >= 4);
    let cases: Vec<(&str, u64, usize, Option<u8>)> = vec![
        ("magic", 0, 1, None),
        ("version", 8, 1, None),
        ("first_seq", 13, 1, None),
        ("created", 21, 1, None),
        ("checksum", 29, 1, None),
        ("whole header zeroed", 0, 32, Some(0x00)),
        ("whole header overwritten", 0, 32, Some(0x5A)),
    ];
    for idx in [0, n / 2, n - 1] {
        for (what, offset, len, fill) in &cases {
            let what = format!("segment {idx}, {what}");
            let dir = copy_dir(base.path());
            let seg = dir.path().join(segs[idx].file_name().unwrap());
            match fill {
                Some(b) => overwrite(&seg, *offset, *len, *b),
                None => flip_bit(&seg, *offset, 1),
            }
            let (report, got) = read_only(dir.path());
            assert!(report.lost().is_empty(), "{what}: {:?}", report.lost());
            let flagged: Vec<usize> = (0..n)
                .filter(|&i| report.segments[i].header_damaged)
                .collect();
            assert_eq!(flagged, vec![idx], "{what}");
            assert!(!report.is_clean(), "{what}");
            assert!(check_stream(&got, 1000, LEN).is_empty(), "{what}");

            let got = read_all(dir.path());
            assert!(check_stream(&got, 1000, LEN).is_empty(), "{what}");
            let wal = Wal::open(dir.path(), small()).unwrap();
            let r = wal
                .appender()
                .append_blocking(batch_of(1000..1001, LEN))
                .unwrap();
            assert_eq!(r.first, 1001, "{what}");
        }
    }
}

#[test]
fn damage_from_a_segment_header_into_its_records_loses_seqs_from_its_file_name_on() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    let dir = copy_dir(base.path());
    let seg = dir.path().join(segs[1].file_name().unwrap());
    let layout = record_layout(&seg);
    // The header, the first two records and 10 bytes of the third.
    let len = layout[2].0 + 10;
    overwrite(&seg, 0, len as usize, 0x5A);
    let expected: Vec<u64> = layout[..3].iter().map(|r| r.2).collect();
    let first_seq: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expected[0], first_seq);

    let (report, got) = read_only(dir.path());
    assert_eq!(report.lost(), vec![(expected[0], expected[2])]);
    assert_eq!(check_stream(&got, 1000, LEN), expected);
    let got = read_all(dir.path());
    assert_eq!(check_stream(&got, 1000, LEN), expected);
    assert_eq!(gaps(&got)[0].seqs, Some((expected[0], expected[2])));
}

#[test]
fn damage_at_the_very_end_of_a_sealed_segment_costs_exactly_its_last_record() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    let name = segs[1].file_name().unwrap();
    let layout = record_layout(&segs[1]);
    let (last_off, last_total, last_seq) = *layout.last().unwrap();
    let file_len = last_off + last_total;
    enum Harm {
        Overwrite(u64, usize, u8),
        Flip(u64),
        Truncate(u64),
    }
    let cases = vec![
        ("last byte flipped", Harm::Flip(file_len - 1)),
        (
            "last 40 bytes zeroed",
            Harm::Overwrite(file_len - 40, 40, 0),
        ),
        (
            "last record's header overwritten",
            Harm::Overwrite(last_off, 32, 0x5A),
        ),
        ("last record's seq flipped", Harm::Flip(last_off + 16)),
        ("last record's length flipped", Harm::Flip(last_off + 9)),
        ("last 10 bytes cut off", Harm::Truncate(file_len - 10)),
        (
            "all but the last record's first byte cut off",
            Harm::Truncate(last_off + 1),
        ),
    ];
    for (what, harm) in cases {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(name);
        match harm {
            Harm::Overwrite(at, len, b) => overwrite(&seg, at, len, b),
            Harm::Flip(at) => flip_bit(&seg, at, 4),
            Harm::Truncate(len) => std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(len)
                .unwrap(),
        }
        let (report, got) = read_only(dir.path());
        assert_eq!(report.lost(), vec![(last_seq, last_seq)], "{what}");
        assert_eq!(check_stream(&got, 1000, LEN), vec![last_seq], "{what}");

        let got = read_all(dir.path());
        assert_eq!(check_stream(&got, 1000, LEN), vec![last_seq], "{what}");
        let g = gaps(&got);
        assert_eq!(g.len(), 1, "{what}");
        assert_eq!(g[0].reason, GapReason::Corrupt, "{what}");
        assert_eq!(g[0].seqs, Some((last_seq, last_seq)), "{what}");
    }
}

#[test]
fn bytes_after_the_last_record_of_a_segment_cost_no_seq() {
    let base = written_log(1000);
    let segs = segment_files(base.path());
    for (idx, fill) in [(1usize, 0x5Au8), (1, 0x00), (segs.len() - 1, 0x5A)] {
        let what = format!("segment {idx} of {}, 100 bytes of {fill:#04x}", segs.len());
        let dir = copy_dir(base.path());
        let seg = dir.path().join(segs[idx].file_name().unwrap());
        let len = std::fs::metadata(&seg).unwrap().len();
        overwrite(&seg, len, 100, fill);

        let (report, got) = read_only(dir.path());
        assert!(report.lost().is_empty(), "{what}: {:?}", report.lost());
        assert!(gaps(&got).is_empty(), "{what}");
        assert!(check_stream(&got, 1000, LEN).is_empty(), "{what}");
        assert_no_seq_above(&got, 1000, &what);
        if idx == segs.len() - 1 {
            assert!(report.is_clean(), "{what}: a dirty tail is not damage");
            assert_eq!(report.dirty_tail_bytes(), 100, "{what}");
        }

        let wal = Wal::open(dir.path(), small()).unwrap();
        let mut c = wal.cursor("reader").unwrap();
        let r = wal
            .appender()
            .append_blocking(batch_of(1000..1001, LEN))
            .unwrap();
        assert_eq!(r.first, 1001, "{what}");
        let got = drain(&mut c);
        assert!(gaps(&got).is_empty(), "{what}: {:?}", gaps(&got));
        assert!(check_stream(&got, 1001, LEN).is_empty(), "{what}");
    }
}
