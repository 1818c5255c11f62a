//! Appending, reading, acknowledging, reopening: the everyday path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gapless_wal::{Error, RecordKind, Wal};

#[test]
fn appended_records_are_read_back_in_order_with_consecutive_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let r1 = append(&wal, 0..10, 100);
    let r2 = append(&wal, 10..20, 100);
    assert_eq!((r1.first, r1.last), (1, 10));
    assert_eq!((r2.first, r2.last), (11, 20));
    let got = drain(&mut cursor);
    assert_eq!(got.len(), 20);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        assert_eq!(r.kind, RecordKind::Event);
        assert_eq!(&r.payload[..], &payload(i as u64, 100)[..]);
    }
}

#[test]
fn records_roll_over_into_new_segments_and_never_span_two() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    for i in 0..100 {
        append(&wal, i * 10..(i + 1) * 10, 300);
    }
    assert!(segment_files(dir.path()).len() > 3);
    let got = drain(&mut cursor);
    assert_eq!(got.len(), 1000);
    assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(wal.verify().unwrap().is_clean());
}

#[test]
fn a_cursor_resumes_after_its_last_ack_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(dir.path(), small()).unwrap();
        let mut cursor = wal.cursor("sink").unwrap();
        append(&wal, 0..500, 200);
        let got = drain(&mut cursor);
        cursor.ack(got[299].seq).unwrap();
    }
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let got = drain(&mut cursor);
    assert_eq!(got.first().unwrap().seq, 301);
    assert_eq!(got.len(), 200);
    let r = append(&wal, 500..501, 200);
    assert_eq!(r.first, 501, "sequence numbers continue after a reopen");
}

#[test]
fn acked_sealed_segments_are_deleted_once_every_cursor_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut a = wal.cursor("a").unwrap();
    let mut b = wal.cursor("b").unwrap();
    for i in 0..50 {
        append(&wal, i * 10..(i + 1) * 10, 500);
    }
    let before = segment_files(dir.path()).len();
    let last = drain(&mut a).last().unwrap().seq;
    a.ack(last).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        before,
        "b still holds them"
    );
    let last_b = drain(&mut b).last().unwrap().seq;
    b.ack(last_b).unwrap();
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "only the active segment stays"
    );
    let r = append(&wal, 0..1, 10);
    assert_eq!(r.first, last + 1, "seqs are not reused after deletion");
}

#[test]
fn a_second_open_of_the_same_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), small()).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(Error::Locked { dir: d }) => assert_eq!(d, dir.path()),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    let msg = Error::Locked {
        dir: dir.path().to_path_buf(),
    }
    .to_string();
    assert!(msg.contains(&dir.path().display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_wakes_for_the_last_record_without_another_one() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let mut reader = Box::pin(async move { cursor.read(100, 1 << 20).await.unwrap().len() });
    // Polled once: it finds nothing and waits (not a sleep that hopes it got there).
    tokio::select! {
        biased;
        n = &mut reader => panic!("read {n} records from an empty log"),
        () = std::future::ready(()) => {}
    }
    wal.appender().append(batch_of(0..1, 10)).await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("reader woke");
    assert_eq!(n, 1);
}

#[test]
fn a_cursor_name_that_could_escape_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(matches!(
        wal.cursor("../x"),
        Err(Error::InvalidCursorName { .. })
    ));
}

#[test]
fn unknown_files_in_the_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), b"hello").unwrap();
    std::fs::write(dir.path().join("00000000000000000007.seg.bak"), b"junk").unwrap();
    std::fs::write(
        dir.path().join("00000000000000000009.seg"),
        b"not a segment at all",
    )
    .unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut c = wal.cursor("s").unwrap();
    append(&wal, 0..3, 10);
    assert_eq!(events(&drain(&mut c)).len(), 3);
}
