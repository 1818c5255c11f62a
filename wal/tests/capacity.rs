//! `max_bytes` and the three `when_full` policies. Whatever the policy, nothing is
//! dropped silently: every missing seq is named by a gap record in the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use gapless_wal::{Error, GapReason, Wal, WalOptions, WhenFull};

const MAX: u64 = 256 << 10;

fn policy(when_full: WhenFull) -> WalOptions {
    WalOptions {
        when_full,
        ..opts(64 << 10, MAX)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_makes_appends_wait_until_acks_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), policy(WhenFull::Block)).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let appender = wal.appender();
    let mut i = 0;
    loop {
        match appender.try_append(batch_of(i..i + 10, 500)).await {
            Ok(_) => i += 10,
            Err(Error::Full { used, max }) => {
                assert_eq!(max, MAX);
                assert!(used <= MAX);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(wal.stats().unwrap().bytes <= MAX);
    let waiting = tokio::spawn({
        let appender = appender.clone();
        async move { appender.append(batch_of(i..i + 10, 500)).await }
    });
    // A bound, not a synchronisation: an append that could complete would within this.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "a blocked append waits");
    assert!(
        wal.stats().unwrap().bytes <= MAX,
        "nothing was written past max_bytes"
    );
    let mut last = 0;
    let mut all = Vec::new();
    loop {
        let got = cursor.try_read(1000, 1 << 20).unwrap();
        match got.last() {
            Some(r) => last = r.seq,
            None => break,
        }
        all.extend(got);
    }
    cursor.ack(last).unwrap();
    let range = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the append completes once space is freed")
        .unwrap()
        .unwrap();
    assert_eq!(range.first, last + 1);
    // Every record ever appended, read once, intact, none dropped: read them all again
    // from a fresh cursor that starts at the beginning of what is left, plus the rest.
    let rest = drain(&mut cursor);
    assert!(gaps(&rest).is_empty(), "block never drops");
    assert_eq!(
        rest.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (last + 1..=range.last).collect::<Vec<_>>()
    );
    all.extend(rest);
    assert!(
        check_stream(&all, range.last, 500).is_empty(),
        "every record read once and intact"
    );
    assert_eq!(wal.stats().unwrap().dropped_oldest_records, 0);
    assert_eq!(wal.stats().unwrap().dropped_newest_records, 0);
}

#[test]
fn drop_oldest_bounds_the_log_and_names_every_dropped_seq_in_band() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), policy(WhenFull::DropOldest)).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let n = 4000u64;
    for i in (0..n).step_by(20) {
        append(&wal, i..i + 20, LEN);
        assert!(
            wal.stats().unwrap().bytes <= MAX + (64 << 10),
            "bounded by max_bytes (plus one gap record's segment)"
        );
    }
    let stats = wal.stats().unwrap();
    assert!(stats.dropped_oldest_records > 0);
    let got = drain(&mut cursor);
    let read: Vec<u64> = events(&got).iter().map(|r| r.seq).collect();
    let dropped: Vec<(u64, u64)> = gaps(&got)
        .iter()
        .map(|g| {
            assert_eq!(g.reason, GapReason::DropOldest);
            assert!(g.bytes > 0 && g.records > 0 && g.from > 0 && g.to >= g.from);
            g.seqs.unwrap()
        })
        .collect();
    let gap_seqs: Vec<u64> = got
        .iter()
        .filter(|r| r.gap().is_some())
        .map(|r| r.seq)
        .collect();
    // Every seq up to the last is an event read, a gap record itself, or named dropped.
    let last = got.last().unwrap().seq;
    for s in 1..=last {
        let read = read.contains(&s);
        let named = dropped.iter().any(|(a, b)| (*a..=*b).contains(&s));
        let is_gap = gap_seqs.contains(&s);
        assert!(read || named || is_gap, "seq {s} vanished silently");
    }
    for r in events(&got) {
        assert_eq!(&r.payload[..], &payload(event_index(&r.payload), LEN)[..]);
    }
}

const LEN: usize = 300;

fn event_index(p: &[u8]) -> u64 {
    std::str::from_utf8(&p[7..17]).unwrap().parse().unwrap()
}

#[test]
fn drop_newest_refuses_new_records_and_writes_a_gap_record_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), policy(WhenFull::DropNewest)).unwrap();
    let mut cursor = wal.cursor("sink").unwrap();
    let appender = wal.appender();
    let mut refused = 0;
    let mut accepted = 0u64;
    for i in (0..2000u64).step_by(10) {
        match appender.append_blocking(batch_of(i..i + 10, LEN)) {
            Ok(_) => accepted += 10,
            Err(Error::DroppedNewest { records }) => refused += records as u64,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0 && accepted > 0);
    assert_eq!(wal.stats().unwrap().dropped_newest_records, refused);
    // Free space, then append: the gap record for the refused ones goes first.
    let mut last = 0;
    let mut all = Vec::new();
    loop {
        let got = cursor.try_read(1000, 1 << 20).unwrap();
        match got.last() {
            Some(r) => last = r.seq,
            None => break,
        }
        all.extend(got);
    }
    cursor.ack(last).unwrap();
    appender.append_blocking(batch_of(0..1, LEN)).unwrap();
    let got = drain(&mut cursor);
    let g = gaps(&got);
    let total: u64 = g
        .iter()
        .map(|g| {
            assert_eq!(g.reason, GapReason::DropNewest);
            assert_eq!(g.seqs, None, "refused records never got seqs");
            g.records
        })
        .sum();
    assert_eq!(
        total, refused,
        "every refused record is counted in a gap record"
    );
    assert_eq!(events(&got).len(), 1);
}

#[test]
fn a_batch_larger_than_half_the_log_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), policy(WhenFull::Block)).unwrap();
    let err = wal
        .appender()
        .append_blocking(batch_of(0..1000, 300))
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
}

#[test]
fn a_segment_size_above_a_quarter_of_max_bytes_is_reduced_so_16_mib_logs_work() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_bytes: 16 << 20,
        ..WalOptions::default()
    };
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            when_full: WhenFull::DropOldest,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(wal.options().segment_bytes, 4 << 20);
    let mut c = wal.cursor("s").unwrap();
    for i in (0..100_000u64).step_by(1000) {
        append(&wal, i..i + 1000, 256);
    }
    assert!(wal.stats().unwrap().bytes <= (16 << 20) + (4 << 20));
    let got = drain(&mut c);
    assert!(!gaps(&got).is_empty());
}
