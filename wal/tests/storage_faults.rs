//! Storage faults under a running log, injected by durafs (`tests/durafs`): `EIO` on
//! `fdatasync` (the data it covered is gone for good, as on Linux after fsyncgate), `ENOSPC`
//! at each step that takes space (segment creation, its rename, the write of a cursor, under
//! `drop_oldest`), short writes, and a block of a sealed segment that cannot be read. Each
//! test checks the error the caller gets, that nothing is acknowledged falsely, that the
//! log goes on once the fault clears, and — after a power cut — that what was acknowledged
//! is all there and nothing else is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use durafs::{CutMode, DuraFs, Fault, MountHandle, MountOptions};
use gapless_wal::{Error, Gap, GapReason, RecordKind, Seq, Wal, WalOptions, WhenFull};
use gapless_wal::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use tempfile::TempDir;

/// A durafs mount with the log's directory in it. Fields drop in order: the mount first.
struct Rig {
    handle: Option<MountHandle>,
    backing: TempDir,
    mnt: TempDir,
}

impl Rig {
    fn new() -> Rig {
        let mut rig = Rig {
            handle: None,
            backing: tempfile::tempdir().unwrap(),
            mnt: tempfile::tempdir().unwrap(),
        };
        rig.mount();
        rig
    }

    fn mount(&mut self) {
        let h = DuraFs::mount(
            self.backing.path(),
            self.mnt.path(),
            MountOptions { seed: Some(11) },
        )
        .unwrap_or_else(|e| {
            panic!("mounting durafs needs root and /dev/fuse (CI runs as root): {e}")
        });
        self.handle = Some(h);
    }

    fn dir(&self) -> PathBuf {
        self.mnt.path().join("wal")
    }

    fn inject(&self, fault: Fault) {
        self.handle.as_ref().unwrap().inject(fault);
    }

    fn faults_fired(&self) -> u64 {
        self.handle.as_ref().unwrap().stats().faults_fired
    }

    /// The power cut, then the machine boots and mounts the disk again.
    fn cut_and_remount(&mut self, mode: CutMode) {
        self.handle.take().unwrap().cut(mode).unwrap();
        self.mount();
    }

    fn files_ending(&self, suffix: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(suffix))
            .collect();
        v.sort();
        v
    }
}

fn segment_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.seg")
}

/// The payload numbers (see `common::payload`) of the events in the log, by seq, and its gap
/// records.
fn contents(wal: &Wal) -> (BTreeMap<Seq, u64>, Vec<Gap>) {
    let mut reader = wal.reader_from(0);
    let records = drain(&mut reader);
    let events = records
        .iter()
        .filter(|r| r.kind == RecordKind::Event)
        .map(|r| {
            let text = std::str::from_utf8(&r.payload[7..17]).unwrap();
            (r.seq, text.parse().unwrap())
        })
        .collect();
    (events, gaps(&records))
}

/// Payload numbers of the events in the log.
fn numbers(wal: &Wal) -> Vec<u64> {
    contents(wal).0.into_values().collect()
}

#[test]
fn a_failed_fdatasync_fails_the_appends_it_covered_and_the_log_goes_on_in_a_new_segment() {
    // Fault: every fdatasync of the first segment fails with EIO (a failing region of the
    // disk); its unsynced writes are gone. The append it covered must fail, and the log must
    // leave the file for a new one rather than go on trusting it.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let a = append(&wal, 0..10, 100);
    rig.inject(Fault::FsyncEio {
        count: 1_000,
        path: Some(format!("{}$", segment_name(1))),
    });
    let err = wal
        .appender()
        .append_blocking(batch_of(10..20, 100))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    let c = wal
        .appender()
        .append_blocking(batch_of(20..30, 100))
        .unwrap_or_else(|e| panic!("after a failed fdatasync the log did not go on: {e}"));
    assert_eq!(c.first, a.last + 1, "nobody saw the failed append's seqs");
    assert!(
        rig.files_ending(".seg").contains(&segment_name(c.first)),
        "the append after the failure is not in a new segment: {:?}",
        rig.files_ending(".seg")
    );
    let want: Vec<u64> = (0..10).chain(20..30).collect();
    assert_eq!(numbers(&wal), want);
    // Closing with the fault still armed must not hang or fail on the old file.
    drop(wal);
    rig.cut_and_remount(CutMode::Pages);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (events, gaps) = contents(&wal);
    assert_eq!(events.into_values().collect::<Vec<_>>(), want);
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[test]
fn under_interval_a_failed_timer_sync_is_reported_as_a_gap_and_the_log_goes_on_in_a_new_segment() {
    // Fault: under `interval`, the timer's fdatasync of the first segment fails with EIO,
    // and so does every later one of it; the appends it covered were already acknowledged
    // (after write) and their bytes are gone. Readers must be told (a gap naming exactly
    // those seqs), and the log must go on in a new segment.
    let rig = Rig::new();
    let opts = WalOptions {
        durability: gapless_wal::Durability::Interval,
        ..small()
    };
    let wal = Wal::open(rig.dir(), opts).unwrap();
    append(&wal, 0..10, 100);
    rig.inject(Fault::FsyncEio {
        count: 1_000,
        path: Some(format!("{}$", segment_name(1))),
    });
    let lost = append(&wal, 10..20, 100);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.faults_fired() == 0 {
        assert!(Instant::now() < deadline, "the timer never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = append(&wal, 20..30, 100);
    assert!(after.first > lost.last, "seqs handed out again");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (events, gaps) = loop {
        let (events, gaps) = contents(&wal);
        if events.values().any(|n| *n == 29) || Instant::now() > deadline {
            break (events, gaps);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let want: Vec<u64> = (0..10).chain(20..30).collect();
    assert_eq!(events.into_values().collect::<Vec<_>>(), want);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].seqs, Some((lost.first, lost.last)), "{gaps:?}");
    assert!(rig
        .files_ending(".seg")
        .contains(&segment_name(lost.last + 1)));
}

#[test]
fn while_every_fdatasync_fails_no_append_completes_and_appending_resumes_once_it_clears() {
    // Fault: EIO on every fdatasync, of segments and of new segments' headers alike. No
    // append may be acknowledged; none may be found after a power cut; once the disk works
    // again appends complete.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    append(&wal, 0..5, 100);
    rig.inject(Fault::FsyncEio {
        count: 1_000,
        path: None,
    });
    for i in 0..5 {
        let r = wal
            .appender()
            .append_blocking(batch_of(100 + i * 10..110 + i * 10, 100));
        assert!(
            r.is_err(),
            "append {i} completed while every fdatasync fails"
        );
    }
    rig.inject(Fault::Clear);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut resumed = 0..0;
    for i in 0..50u64 {
        if let Ok(r) = wal
            .appender()
            .append_blocking(batch_of(1000 + i * 10..1010 + i * 10, 100))
        {
            resumed = 1000 + i * 10..1010 + i * 10;
            let _ = r;
            break;
        }
        assert!(Instant::now() < deadline, "appends never resumed");
    }
    assert!(
        !resumed.is_empty(),
        "no append completed after the fault cleared"
    );
    assert!(
        rig.files_ending(".seg.tmp").is_empty(),
        "{:?}",
        rig.files_ending(".seg.tmp")
    );
    drop(wal);
    rig.cut_and_remount(CutMode::Drop);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (events, gaps) = contents(&wal);
    let want: Vec<u64> = (0..5).chain(resumed).collect();
    assert_eq!(events.into_values().collect::<Vec<_>>(), want);
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[test]
fn a_full_disk_when_a_segment_is_created_keeps_the_active_segment_growing_until_space_returns() {
    // Fault: ENOSPC on creating a new segment file only. Appends go on in the active segment
    // past segment_bytes; no half-made segment is left behind; rollover resumes after.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    rig.inject(Fault::Enospc {
        on: true,
        path: Some(".seg.tmp".into()),
    });
    for i in 0..40 {
        append(&wal, i * 10..i * 10 + 10, 400);
    }
    assert!(rig.faults_fired() > 0, "no segment creation was tried");
    assert_eq!(rig.files_ending(".seg").len(), 1);
    assert!(rig.files_ending(".seg.tmp").is_empty());
    rig.inject(Fault::Clear);
    for i in 40..60 {
        append(&wal, i * 10..i * 10 + 10, 400);
    }
    assert!(
        rig.files_ending(".seg").len() > 1,
        "no rollover after space returned"
    );
    drop(wal);
    rig.cut_and_remount(CutMode::Drop);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (events, gaps) = contents(&wal);
    assert_eq!(
        events.into_values().collect::<Vec<_>>(),
        (0..600).collect::<Vec<_>>()
    );
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[test]
fn a_failed_rename_of_a_new_segment_leaves_no_temporary_file_and_appending_goes_on() {
    // Fault: ENOSPC on the rename that gives the second segment its name (its temporary
    // file was created, written and synced). The log must go on and clean up after itself.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let record = (RECORD_HEADER_LEN + 200) as u64;
    let per_segment = (64 << 10) / record - SEGMENT_HEADER_LEN as u64 / record - 1;
    let second = 1 + (((64 << 10) - SEGMENT_HEADER_LEN as u64) / record);
    assert!(per_segment > 0);
    rig.inject(Fault::Enospc {
        on: true,
        path: Some(format!("{}$", segment_name(second))),
    });
    for i in 0..(second + 50) {
        append(&wal, i..i + 1, 200);
    }
    assert!(rig.faults_fired() > 0, "the rename was never tried");
    assert!(
        rig.files_ending(".seg.tmp").is_empty(),
        "a segment whose rename failed was left behind: {:?}",
        rig.files_ending(".seg.tmp")
    );
    assert!(rig.files_ending(".seg").len() > 1, "no later rollover");
    drop(wal);
    rig.cut_and_remount(CutMode::Drop);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (events, gaps) = contents(&wal);
    assert_eq!(
        events.into_values().collect::<Vec<_>>(),
        (0..second + 50).collect::<Vec<_>>()
    );
    assert!(gaps.is_empty(), "{gaps:?}");
}

#[test]
fn a_full_disk_when_a_cursor_is_written_fails_the_ack_and_keeps_the_position() {
    // Fault: ENOSPC on writing the cursor file. The ack fails with an error that says so;
    // the position stays where it durably is; the next ack, once space returns, persists.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let r = append(&wal, 0..10, 100);
    let mut cursor = wal.cursor("sink").unwrap();
    assert_eq!(drain(&mut cursor).len(), 10);
    rig.inject(Fault::Enospc {
        on: true,
        path: Some(".cursor".into()),
    });
    match cursor.ack(r.last) {
        Err(Error::Io { op, source, .. }) => {
            assert_eq!(op, "write cursor");
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "{source}");
        }
        other => panic!("ack on a full disk: {other:?}"),
    }
    assert_eq!(cursor.acked_next(), r.first);
    rig.inject(Fault::Clear);
    cursor.ack(r.first + 4).unwrap();
    drop(cursor);
    drop(wal);
    rig.cut_and_remount(CutMode::Drop);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    assert_eq!(wal.cursor_positions()["sink"], r.first + 5);
}

#[test]
fn drop_oldest_meeting_a_full_disk_drops_nothing_without_its_gap_record() {
    // Fault: the WAL reaches max_bytes under drop_oldest just as the disk is full, so the
    // gap record that must precede any drop cannot be written. Nothing may be dropped then
    // (the append fails as DiskFull); once space returns the drop happens, announced.
    let mut rig = Rig::new();
    let opts = WalOptions {
        when_full: WhenFull::DropOldest,
        ..opts(64 << 10, 256 << 10)
    };
    let wal = Wal::open(rig.dir(), opts.clone()).unwrap();
    let mut seqs: BTreeMap<u64, Seq> = BTreeMap::new();
    let mut n = 0;
    let mut add = |wal: &Wal, seqs: &mut BTreeMap<u64, Seq>| {
        let r = wal.appender().append_blocking(batch_of(n..n + 10, 1000));
        if let Ok(r) = &r {
            for (i, seq) in (r.first..=r.last).enumerate() {
                seqs.insert(n + i as u64, seq);
            }
        }
        n += 10;
        r
    };
    // Just under max_bytes: 23 appends of ~10 KiB.
    for _ in 0..23 {
        add(&wal, &mut seqs).unwrap();
    }
    let segments_before = rig.files_ending(".seg");
    rig.inject(Fault::Enospc {
        on: true,
        path: None,
    });
    for _ in 0..3 {
        match add(&wal, &mut seqs) {
            Err(Error::DiskFull { .. }) => {}
            other => panic!("append on a full disk under drop_oldest: {other:?}"),
        }
    }
    assert_eq!(
        rig.files_ending(".seg"),
        segments_before,
        "segments were deleted although their gap record could not be written"
    );
    assert!(contents(&wal).1.is_empty());
    rig.inject(Fault::Clear);
    for _ in 0..10 {
        add(&wal, &mut seqs).unwrap();
    }
    drop(wal);
    rig.cut_and_remount(CutMode::Pages);
    let wal = Wal::open(rig.dir(), opts).unwrap();
    let (events, gaps) = contents(&wal);
    assert!(!gaps.is_empty(), "drop_oldest dropped nothing");
    let covered = |seq: Seq| {
        gaps.iter().any(|g| {
            g.reason == GapReason::DropOldest && g.seqs.is_some_and(|(a, z)| a <= seq && seq <= z)
        })
    };
    for g in &gaps {
        assert_eq!(g.reason, GapReason::DropOldest, "{g:?}");
    }
    for (number, seq) in &seqs {
        assert!(
            events.get(seq) == Some(number) || covered(*seq),
            "record {number} (seq {seq}) is neither in the log nor in a gap record"
        );
    }
}

#[test]
fn short_writes_are_written_out_in_full_and_lose_nothing() {
    // Fault: writes that write only half of what they were given and say so.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    rig.inject(Fault::ShortWrite { count: 200 });
    for i in 0..30 {
        append(&wal, i * 10..i * 10 + 10, 300);
    }
    let mut cursor = wal.cursor("sink").unwrap();
    assert_eq!(drain(&mut cursor).len(), 300);
    // Acknowledging only the first records: retention deletes nothing.
    cursor.ack(5).unwrap();
    assert!(rig.faults_fired() > 0);
    drop(cursor);
    drop(wal);
    rig.cut_and_remount(CutMode::Drop);
    let wal = Wal::open(rig.dir(), small()).unwrap();
    assert_eq!(numbers(&wal), (0..300).collect::<Vec<_>>());
    assert_eq!(wal.cursor_positions()["sink"], 6);
}

/// A log of several segments; returns the name of the second (sealed) one and the seqs of
/// the records that overlap `offset .. offset + len` of it.
fn sealed_segment_with_records(wal: &Wal, rig: &Rig, offset: u64, len: u64) -> (String, Vec<Seq>) {
    for i in 0..30 {
        append(wal, i * 10..i * 10 + 10, 1000);
    }
    let segments = rig.files_ending(".seg");
    assert!(segments.len() >= 3, "{segments:?}");
    let name = segments[1].clone();
    let overlapping = record_layout(&rig.dir().join(&name))
        .into_iter()
        .filter(|(at, total, _)| *at < offset + len && offset < at + total)
        .map(|(_, _, seq)| seq)
        .collect();
    (name, overlapping)
}

#[test]
fn a_block_of_a_sealed_segment_that_stays_unreadable_is_retried_then_reported_as_a_gap() {
    // Fault: reads of 100 bytes of a sealed segment fail with EIO, and go on failing. An EIO
    // is no proof the bytes are damaged, so the reader tries again; when it persists the
    // records it hides are reported as a wal_corrupt gap naming exactly them, and reading
    // goes on after them — no error, no endless retry.
    let rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (name, hidden) = sealed_segment_with_records(&wal, &rig, 20_000, 100);
    assert!(!hidden.is_empty());
    rig.inject(Fault::ReadEio {
        path: format!("{name}$"),
        offset: 20_000,
        len: 100,
    });
    let mut cursor = wal.cursor("sink").unwrap();
    let records = drain(&mut cursor);
    let gaps = gaps(&records);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].reason, GapReason::Corrupt);
    let (first, last) = gaps[0].seqs.unwrap();
    assert!(
        first <= hidden[0] && *hidden.last().unwrap() <= last,
        "the gap {first}..={last} does not cover the unreadable records {hidden:?}"
    );
    let events = events(&records);
    assert_eq!(
        events.len() as u64 + (last - first + 1),
        300,
        "records other than those the unreadable block held are missing"
    );
}

#[test]
fn a_block_of_a_sealed_segment_that_reads_again_after_a_passing_eio_costs_nothing() {
    // Fault: the same reads fail with EIO for a moment only (a cable, a controller reset).
    let rig = Rig::new();
    let wal = Wal::open(rig.dir(), small()).unwrap();
    let (name, _) = sealed_segment_with_records(&wal, &rig, 20_000, 100);
    rig.inject(Fault::ReadEio {
        path: format!("{name}$"),
        offset: 20_000,
        len: 100,
    });
    let mut cursor = wal.cursor("sink").unwrap();
    let records = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(5));
            rig.inject(Fault::Clear);
        });
        drain(&mut cursor)
    });
    assert!(gaps(&records).is_empty(), "{:?}", gaps(&records));
    assert_eq!(events(&records).len(), 300);
}

#[test]
fn a_batch_larger_than_a_write_piece_waits_whole_for_space_and_goes_in_whole() {
    // A batch of 2 MiB is encoded and written in pieces of 256 KiB and synced once. With the
    // disk full its first piece fails: the segment is cut back and the batch waits (nothing
    // of it readable, nothing acknowledged); once space returns it goes in whole under the
    // same seqs, and after a power cut exactly the acknowledged records are there.
    let mut rig = Rig::new();
    let wal = Wal::open(rig.dir(), opts(64 << 20, 1 << 30)).unwrap();
    append(&wal, 0..10, 100);
    rig.inject(Fault::Enospc {
        on: true,
        path: Some(".seg".into()),
    });
    let appender = wal.appender();
    let waiting =
        std::thread::spawn(move || appender.append_blocking(batch_of(10..2058, 1024)).unwrap());
    let started = Instant::now();
    while rig.faults_fired() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no write was tried"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "a full disk acknowledged the batch");
    let mut cursor = wal.cursor("sink").unwrap();
    assert_eq!(
        drain(&mut cursor).len(),
        10,
        "a failed piece became readable"
    );
    rig.inject(Fault::Clear);
    let range = waiting.join().unwrap();
    assert_eq!(range.last - range.first, 2047);
    append(&wal, 2058..2060, 100);
    let read = drain(&mut cursor);
    assert_eq!(read.len(), 2050);
    for r in &read {
        let n = r.seq - range.first + 10;
        if n < 2058 {
            assert!(r.payload.starts_with(format!("record-{n:010}-").as_bytes()));
        }
    }
    drop(cursor);
    drop(wal);
    rig.cut_and_remount(CutMode::Torn);
    let wal = Wal::open(rig.dir(), opts(64 << 20, 1 << 30)).unwrap();
    assert_eq!(numbers(&wal), (0..2060).collect::<Vec<_>>());
}
