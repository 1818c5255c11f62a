//! What each durability mode does with fdatasync, read from the log's own count of syncs
//! (`Stats::syncs`). A `kill -9` keeps the page cache, so the crash tests cannot tell the
//! modes apart; this does for the syncs, and the power-cut tests (`tests/durafs`) for what
//! survives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use gapless_wal::{Durability, Wal, WalOptions};

fn with(durability: Durability, sync_interval: Duration) -> WalOptions {
    WalOptions {
        durability,
        sync_interval,
        ..opts(8 << 20, 64 << 20)
    }
}

fn syncs(wal: &Wal) -> u64 {
    wal.stats().unwrap().syncs
}

#[test]
fn always_completes_each_append_only_after_a_sync_that_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        with(Durability::Always, Duration::from_secs(3600)),
    )
    .unwrap();
    for i in 0..50 {
        let before = syncs(&wal);
        append(&wal, i * 10..i * 10 + 10, 100);
        assert!(
            syncs(&wal) > before,
            "append {i} completed with no fdatasync after it began"
        );
    }
}

#[test]
fn interval_syncs_on_its_timer_without_further_writes() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(50);
    let wal = Wal::open(dir.path(), with(Durability::Interval, interval)).unwrap();
    // Appends complete after write(), without waiting for a sync.
    let started = Instant::now();
    let before = syncs(&wal);
    for i in 0..20 {
        append(&wal, i * 10..i * 10 + 10, 100);
    }
    let written = syncs(&wal);
    assert!(
        written - before < 20,
        "interval synced once per append ({} syncs for 20 appends in {:?})",
        written - before,
        started.elapsed()
    );
    // Nothing else is written: the timer alone makes the data durable.
    let deadline = Instant::now() + interval * 100;
    while syncs(&wal) == written {
        assert!(
            Instant::now() < deadline,
            "no sync within {:?} of the last write",
            interval * 100
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Once everything is synced, an idle log does not sync again.
    std::thread::sleep(interval * 2);
    let idle = syncs(&wal);
    std::thread::sleep(interval * 4);
    assert_eq!(syncs(&wal), idle, "an idle log kept syncing");
}

#[test]
fn never_does_not_sync_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        with(Durability::Never, Duration::from_millis(50)),
    )
    .unwrap();
    let before = syncs(&wal);
    for i in 0..100 {
        append(&wal, i * 10..i * 10 + 10, 100);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(syncs(&wal), before, "durability never synced appends");
    // All of it is readable all the same.
    let mut cursor = wal.cursor("c").unwrap();
    assert_eq!(drain(&mut cursor).len(), 1000);
}
