//! A log whose writer was killed: its active segment ends in the zeros the appender
//! reserves ahead of its writes. Opening it read-only changes no file, whatever is read;
//! bytes found in those zeros are a dirty tail, reported in bytes and never as lost seqs;
//! and a read-only open and a writer exclude each other instead of racing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use common::*;
use gapless_wal::{Error, ReadOnlyWal, Record, Wal};

/// Set to `<dir>:<records>` in the child process.
const CHILD_ENV: &str = "GAPLESS_WAL_KILLED_WRITER";
const CHILD_TEST: &str = "killed_writer_child_appends_then_waits_to_be_killed";
const LEN: usize = 200;
/// Three full 64 KiB segments and part of a fourth, the active one.
const RECORDS: u64 = 1000;
/// What the child's cursor acknowledged.
const ACKED: u64 = 100;

#[test]
#[ignore = "the child process of the killed-writer tests; they start it with GAPLESS_WAL_KILLED_WRITER"]
fn killed_writer_child_appends_then_waits_to_be_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, n) = spec.rsplit_once(':').unwrap();
    let n: u64 = n.parse().unwrap();
    let wal = Wal::open(dir, small()).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 37).min(n);
        append(&wal, i..end, LEN);
        i = end;
    }
    let read = cursor.try_read(ACKED as usize, 64 << 20).unwrap();
    cursor.ack(read.last().unwrap().seq).unwrap();
    println!("writer-ready");
    std::thread::sleep(Duration::from_secs(60));
}

/// Held by each test of this file for its whole run. A child process forked by one test
/// holds copies of every descriptor open at that moment until it execs — among them
/// another test's lock on its log, which would then make that test's next open fail
/// with `Locked`.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A log of `n` records whose writer was SIGKILLed while idle: nothing was closed,
/// trimmed or cut.
fn killed_log(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, format!("{}:{n}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("writer-ready") {
        line.clear();
        if lines.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("the writer ended before it was ready: {:?}", child.wait());
        }
    }
    // Child::kill sends SIGKILL: `kill -9`.
    child.kill().unwrap();
    child.wait().unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    let data_end = clean_prefix_len(&active);
    assert!(
        std::fs::metadata(&active).unwrap().len() > data_end,
        "the killed writer left no reserved zeros after its records"
    );
    dir
}

/// The bytes of a segment up to the end of its last record, walking the documented
/// layout and stopping at the first zero magic.
fn clean_prefix_len(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 32usize;
    while at + 32 <= bytes.len() && bytes[at] == 0xF7 {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 32 + len;
    }
    at as u64
}

/// Every entry of `dir` by name: its length, modification time and bytes; and the
/// directory's own modification time.
type Snapshot = (SystemTime, BTreeMap<String, (u64, SystemTime, Vec<u8>)>);

fn snapshot(dir: &Path) -> Snapshot {
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                (meta.len(), meta.modified().unwrap(), bytes),
            )
        })
        .collect();
    (std::fs::metadata(dir).unwrap().modified().unwrap(), files)
}

fn assert_unchanged(before: &Snapshot, dir: &Path, what: &str) {
    let after = snapshot(dir);
    assert_eq!(
        before.1.keys().collect::<Vec<_>>(),
        after.1.keys().collect::<Vec<_>>(),
        "{what}: the directory listing changed"
    );
    for (name, (len, mtime, bytes)) in &before.1 {
        let (len2, mtime2, bytes2) = &after.1[name];
        assert_eq!(len, len2, "{what}: {name} changed size");
        assert_eq!(mtime, mtime2, "{what}: {name} changed mtime");
        assert!(bytes == bytes2, "{what}: {name} changed bytes");
    }
    assert_eq!(before.0, after.0, "{what}: the directory's mtime changed");
}

/// Everything a read-only reader sees from the oldest record on.
fn read_only_records(wal: &ReadOnlyWal) -> Vec<Record> {
    let mut reader = wal.reader_from(0);
    drain(&mut reader)
}

fn assert_no_seq_above(records: &[Record], last: u64, what: &str) {
    for g in gaps(records) {
        let (_, z) = g.seqs.unwrap();
        assert!(
            z <= last,
            "{what}: a gap names seq {z}, above the last written, {last}: {g:?}"
        );
    }
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn reading_a_log_left_by_a_killed_writer_read_only_changes_no_file() {
    let _serial = one_at_a_time();
    let dir = killed_log(RECORDS);
    // A segment creation the kill interrupted: a read-write open would remove it.
    std::fs::write(dir.path().join("00000000000000099999.seg.tmp"), b"half").unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    let data_end = clean_prefix_len(&active);
    let file_len = std::fs::metadata(&active).unwrap().len();
    let before = snapshot(dir.path());

    let wal = ReadOnlyWal::open(dir.path(), small()).unwrap();
    let report = wal.verify().unwrap();
    let stats = wal.stats().unwrap();
    let got = read_only_records(&wal);
    let positions = wal.cursor_positions();
    drop(wal);
    assert_unchanged(&before, dir.path(), "verify, stats and a reader");

    assert!(report.is_clean(), "{report:?}");
    assert!(report.lost().is_empty());
    assert_eq!(report.dirty_tail_bytes(), 0);
    assert_eq!(
        report.segments.iter().map(|s| s.records).sum::<u64>(),
        RECORDS
    );
    let tail = report.segments.last().unwrap().tail.unwrap();
    assert_eq!(
        (tail.offset, tail.dirty, tail.reserved),
        (data_end, 0, file_len - data_end),
        "the reserved zeros are reported as room"
    );
    assert_eq!(stats.next_seq, RECORDS + 1);
    assert_eq!(positions.get("sink"), Some(&(ACKED + 1)));
    assert!(check_stream(&got, RECORDS, LEN).is_empty());
    assert_eq!(got.len() as u64, RECORDS);
}

#[test]
fn a_read_only_open_refuses_while_a_writer_has_the_log_open_and_changes_nothing() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append(&wal, 0..500, LEN);
    let before = snapshot(dir.path());
    match ReadOnlyWal::open(dir.path(), small()) {
        Err(Error::InUse { dir: named }) => assert_eq!(named, dir.path()),
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("a read-only open succeeded while a writer had the log open"),
    }
    assert_unchanged(&before, dir.path(), "a refused read-only open");
    drop(wal);
}

#[test]
fn a_writer_cannot_open_the_log_while_it_is_open_read_only() {
    let _serial = one_at_a_time();
    let dir = killed_log(300);
    let before = snapshot(dir.path());
    let reader = ReadOnlyWal::open(dir.path(), small()).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(Error::Locked { .. })
    ));
    assert_unchanged(&before, dir.path(), "a refused read-write open");
    drop(reader);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(append(&wal, 300..301, LEN).first, 301);
}

#[test]
fn a_read_only_open_creates_neither_the_directory_nor_a_lock_file() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("wal");
    assert!(ReadOnlyWal::open(&missing, small()).is_err());
    assert!(!missing.exists(), "a read-only open created the directory");

    let log = killed_log(50);
    std::fs::remove_file(log.path().join(gapless_wal::LOCK_FILE)).unwrap();
    let before = snapshot(log.path());
    let wal = ReadOnlyWal::open(log.path(), small()).unwrap();
    assert_eq!(read_only_records(&wal).len(), 50);
    drop(wal);
    assert_unchanged(&before, log.path(), "a read-only open without a lock file");
}

#[test]
fn any_bytes_set_in_the_reserved_zeros_are_a_dirty_tail_never_lost_seqs() {
    let _serial = one_at_a_time();
    let base = killed_log(RECORDS);
    let active_name = segment_files(base.path()).pop().unwrap();
    let active_name = active_name.file_name().unwrap().to_owned();
    let seg = base.path().join(&active_name);
    let data_end = clean_prefix_len(&seg);
    let file_len = std::fs::metadata(&seg).unwrap().len();
    let last_record = {
        let bytes = std::fs::read(&seg).unwrap();
        bytes[(data_end - 232) as usize..data_end as usize].to_vec()
    };
    // A header alone, with the next seq: the start of a write that was torn off.
    let mut torn_header = last_record[..32].to_vec();
    torn_header[16..24].copy_from_slice(&(RECORDS + 1).to_le_bytes());
    let cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("one byte right after the last record", data_end, vec![0x01]),
        ("one byte where a seq would be", data_end + 16, vec![0x15]),
        ("one byte where a kind would be", data_end + 12, vec![0x01]),
        (
            "0xFF in the middle of the zeros",
            (data_end + file_len) / 2,
            vec![0xFF],
        ),
        ("the last byte of the file", file_len - 1, vec![0x80]),
        (
            "a run of garbage after the last record",
            data_end,
            vec![0x5A; 300],
        ),
        (
            "a run of garbage in the middle",
            data_end + 1000,
            vec![0xA5; 64],
        ),
        ("a copy of the last record", data_end, last_record.clone()),
        (
            "a copy of the last record further on",
            data_end + 4096,
            last_record.clone(),
        ),
        ("a torn record with the next seq", data_end, torn_header),
    ];
    for (what, offset, bytes) in cases {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(&active_name);
        write_at(&seg, offset, &bytes);
        let dirty_end = offset + bytes.len() as u64;

        let before = snapshot(dir.path());
        let wal = ReadOnlyWal::open(dir.path(), small()).unwrap();
        let report = wal.verify().unwrap();
        let got = read_only_records(&wal);
        assert_eq!(wal.stats().unwrap().next_seq, RECORDS + 1, "{what}");
        drop(wal);
        assert_unchanged(&before, dir.path(), what);
        assert!(report.is_clean(), "{what}: {report:?}");
        assert!(report.lost().is_empty(), "{what}: {:?}", report.lost());
        assert_eq!(report.dirty_tail_bytes(), dirty_end - data_end, "{what}");
        let tail = report.segments.last().unwrap().tail.unwrap();
        assert_eq!(tail.offset, data_end, "{what}");
        assert_eq!(tail.reserved, file_len - dirty_end, "{what}");
        assert!(gaps(&got).is_empty(), "{what}: {:?}", gaps(&got));
        assert!(check_stream(&got, RECORDS, LEN).is_empty(), "{what}");

        // The agent's open cuts the tail and carries on after the last record.
        let wal = Wal::open(dir.path(), small()).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), data_end, "{what}");
        let mut c = wal.cursor("check").unwrap();
        let got = drain(&mut c);
        assert!(gaps(&got).is_empty(), "{what}: {:?}", gaps(&got));
        assert_eq!(got.len() as u64, RECORDS, "{what}");
        assert_eq!(
            append(&wal, RECORDS..RECORDS + 1, LEN).first,
            RECORDS + 1,
            "{what}"
        );
    }
}

#[test]
fn a_damaged_last_record_before_the_reserved_zeros_costs_exactly_its_seq() {
    let _serial = one_at_a_time();
    let base = killed_log(RECORDS);
    let active_name = segment_files(base.path()).pop().unwrap();
    let active_name = active_name.file_name().unwrap().to_owned();
    let data_end = clean_prefix_len(&base.path().join(&active_name));
    for (what, offset) in [
        ("a payload byte", data_end - 100),
        ("the last payload byte", data_end - 1),
        ("the magic", data_end - 232),
    ] {
        let dir = copy_dir(base.path());
        let seg = dir.path().join(&active_name);
        flip_bit(&seg, offset, 2);

        let wal = ReadOnlyWal::open(dir.path(), small()).unwrap();
        let report = wal.verify().unwrap();
        let got = read_only_records(&wal);
        drop(wal);
        assert_eq!(report.lost(), vec![(RECORDS, RECORDS)], "{what}");
        assert_eq!(report.dirty_tail_bytes(), 0, "{what}");
        assert_eq!(check_stream(&got, RECORDS, LEN), vec![RECORDS], "{what}");
        assert_no_seq_above(&got, RECORDS, what);

        let wal = Wal::open(dir.path(), small()).unwrap();
        let mut c = wal.cursor("check").unwrap();
        assert_eq!(
            append(&wal, RECORDS..RECORDS + 1, LEN).first,
            RECORDS + 1,
            "{what}"
        );
        let got = drain(&mut c);
        assert_eq!(
            check_stream(&got, RECORDS + 1, LEN),
            vec![RECORDS],
            "{what}"
        );
    }
}
