//! A full disk on a real 16 MiB tmpfs: appends wait (`block`) or fail with `DiskFull`, the log stays whole, and appending resumes once space returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use common::*;
use gapless_wal::{Appender, Error, Record, RecordKind, SeqRange, Wal, WalOptions, WhenFull};

/// Larger than the file system, so that the disk fills before the log does.
const MAX_BYTES: u64 = 64 << 20;
const SEGMENT_BYTES: u64 = 1 << 20;
/// Leaves about 3 MiB of the 16 MiB for the log: a few segment rollovers, then full.
const BALLAST_BYTES: usize = 13 << 20;
const RECORDS_PER_APPEND: u64 = 64;
const PAYLOAD_BYTES: usize = 1000;
/// Payload numbers of appends that must never reach the log.
const NEVER_STORED: u64 = 1 << 40;
/// Longest wait for something that should happen within milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn options(when_full: WhenFull) -> WalOptions {
    WalOptions {
        when_full,
        ..opts(SEGMENT_BYTES, MAX_BYTES)
    }
}

fn effective_uid() -> u32 {
    // libc::geteuid would need unsafe code, which the workspace forbids.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uids.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// A 16 MiB tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let euid = effective_uid();
        assert!(
            euid == 0,
            "this test mounts a 16 MiB tmpfs to fill it and needs root (CI runs as root); \
             it runs as uid {euid}"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            Command::new("umount")
                .args(lazy.then_some("-l"))
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A file still open (a test that failed half-way) makes umount busy: detach then.
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount {}", self.dir.path().display());
        }
    }
}

/// Writes a file of `bytes` next to the log, taking the space the log would use.
fn ballast(fs: &Tmpfs, bytes: usize) -> PathBuf {
    let path = fs.path().join("ballast");
    let mut file = File::create(&path).unwrap();
    let chunk = vec![0x5a; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("writing the ballast ({left} bytes to go): {e}"));
        left -= n;
    }
    path
}

/// Completed appends: each range with the number of its first payload (see `payload`).
type Completed = Vec<(SeqRange, u64)>;

/// The log holds exactly the completed appends, in order, with contiguous seqs from 1, and
/// nothing else: no failed append, no gap record.
fn check_log(records: &[Record], completed: &Completed) {
    if let Some(r) = records.iter().find(|r| r.kind != RecordKind::Event) {
        panic!("unexpected gap record at seq {}: {:?}", r.seq, r.gap());
    }
    let total: u64 = completed.iter().map(|(r, _)| r.len()).sum();
    assert_eq!(
        records.len() as u64,
        total,
        "records in the log vs. completed"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "seqs are contiguous from 1");
    }
    for (range, first_payload) in completed {
        for (i, seq) in (range.first..=range.last).enumerate() {
            assert!(
                records[seq as usize - 1].payload[..]
                    == payload(first_payload + i as u64, PAYLOAD_BYTES)[..],
                "seq {seq} does not hold what was appended"
            );
        }
    }
}

fn spawn_append(
    appender: &Appender,
    first_payload: u64,
) -> Receiver<gapless_wal::Result<SeqRange>> {
    let (tx, rx) = mpsc::channel();
    let appender = appender.clone();
    let batch = batch_of(
        first_payload..first_payload + RECORDS_PER_APPEND,
        PAYLOAD_BYTES,
    );
    std::thread::spawn(move || {
        let _ = tx.send(appender.append_blocking(batch));
    });
    rx
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} in vain until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn disk_full_errors(wal: &Wal) -> u64 {
    wal.stats().unwrap().disk_full_errors
}

#[test]
fn under_block_an_append_on_a_full_disk_waits_and_completes_by_itself_once_space_returns() {
    // Fault: write() fails with ENOSPC because a ballast file and the log filled the file
    // system, while the log itself is far below max_bytes.
    let fs = Tmpfs::mount();
    let wal_dir = fs.path().join("wal");
    let wal = Wal::open(&wal_dir, options(WhenFull::Block)).unwrap();
    // Never acks: nothing of the log may be deleted to make room.
    let mut cursor = wal.cursor("sink").unwrap();
    let ballast = ballast(&fs, BALLAST_BYTES);
    let appender = wal.appender();

    // Append until an append meets the full disk instead of completing.
    let mut completed: Completed = Vec::new();
    let mut next_payload = 0;
    let (waiting, waiting_payload) = loop {
        assert!(
            completed.len() < 1000,
            "appends kept completing on a 16 MiB file system"
        );
        let rx = spawn_append(&appender, next_payload);
        let first_payload = next_payload;
        next_payload += RECORDS_PER_APPEND;
        let mut result = None;
        wait_until("the append completes or meets the full disk", || {
            match rx.try_recv() {
                Ok(r) => result = Some(r),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => panic!("the appending thread died"),
            }
            result.is_some() || disk_full_errors(&wal) > 0
        });
        match result {
            Some(Ok(range)) => completed.push((range, first_payload)),
            Some(Err(e)) => panic!("under block an append failed instead of waiting: {e}"),
            None => break (rx, first_payload),
        }
    };
    assert!(
        completed.len() > 10 && wal.stats().unwrap().segments > 1,
        "the ballast left too little room: {} appends completed in {} segments",
        completed.len(),
        wal.stats().unwrap().segments
    );

    // It keeps waiting: the appender tries again, meets the full disk again, and the append
    // is still not complete.
    let errors = disk_full_errors(&wal);
    wait_until("the appender retries the waiting append", || {
        disk_full_errors(&wal) > errors
    });
    assert!(
        matches!(waiting.try_recv(), Err(TryRecvError::Empty)),
        "an append completed although the disk is full"
    );

    // try_append answers at once instead of waiting.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let refused = rt
        .block_on(async {
            let batch = batch_of(
                NEVER_STORED..NEVER_STORED + RECORDS_PER_APPEND,
                PAYLOAD_BYTES,
            );
            tokio::time::timeout(WAIT, appender.try_append(batch)).await
        })
        .expect("try_append waited on a full disk");
    match refused {
        Err(Error::DiskFull { dir }) => assert_eq!(dir, wal_dir),
        Err(Error::Full { .. }) => {}
        other => panic!("try_append on a full disk: {other:?}"),
    }

    // Everything completed is readable while the disk is full.
    let mut records = drain(&mut cursor);
    check_log(&records, &completed);

    std::fs::remove_file(&ballast).unwrap();
    let range = match waiting.recv_timeout(WAIT) {
        Ok(r) => r.unwrap(),
        Err(RecvTimeoutError::Timeout) => {
            panic!("the waiting append did not complete within {WAIT:?} of space returning")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("the appending thread died"),
    };
    assert_eq!(
        range.first,
        completed.last().unwrap().0.last + 1,
        "the waiting append does not follow the last one that completed"
    );
    completed.push((range, waiting_payload));
    let range = append(
        &wal,
        next_payload..next_payload + RECORDS_PER_APPEND,
        PAYLOAD_BYTES,
    );
    completed.push((range, next_payload));
    records.extend(drain(&mut cursor));
    check_log(&records, &completed);

    drop(cursor);
    wal.close();
    let wal = Wal::open(&wal_dir, options(WhenFull::Block)).unwrap();
    let report = wal.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut cursor = wal.cursor("sink").unwrap();
    check_log(&drain(&mut cursor), &completed);
}

#[test]
fn under_drop_newest_an_append_on_a_full_disk_fails_with_disk_full_and_leaves_the_log_whole() {
    // Fault: write() fails with ENOSPC because a ballast file and the log filled the file
    // system, while the log itself is far below max_bytes.
    let fs = Tmpfs::mount();
    let wal_dir = fs.path().join("wal");
    let mut completed: Completed = Vec::new();
    let mut next_payload = 0;
    let disk_full = |result: gapless_wal::Result<SeqRange>, what: &str| match result {
        Err(Error::DiskFull { dir }) => assert_eq!(dir, wal_dir),
        other => panic!("{what}: {other:?}, not DiskFull"),
    };
    let refused = || {
        batch_of(
            NEVER_STORED..NEVER_STORED + RECORDS_PER_APPEND,
            PAYLOAD_BYTES,
        )
    };

    let ballast = {
        let wal = Wal::open(&wal_dir, options(WhenFull::DropNewest)).unwrap();
        let mut cursor = wal.cursor("sink").unwrap();
        let ballast = ballast(&fs, BALLAST_BYTES);
        let appender = wal.appender();
        loop {
            assert!(
                completed.len() < 1000,
                "appends kept completing on a 16 MiB file system"
            );
            let batch = batch_of(
                next_payload..next_payload + RECORDS_PER_APPEND,
                PAYLOAD_BYTES,
            );
            match appender.append_blocking(batch) {
                Ok(range) => completed.push((range, next_payload)),
                Err(Error::DiskFull { dir }) => {
                    assert_eq!(dir, wal_dir);
                    break;
                }
                Err(e) => panic!("an append on a filling disk failed with {e}, not DiskFull"),
            }
            next_payload += RECORDS_PER_APPEND;
        }
        assert!(
            completed.len() > 10 && wal.stats().unwrap().segments > 1,
            "the ballast left too little room: {} appends completed",
            completed.len()
        );
        assert!(disk_full_errors(&wal) >= 1);
        disk_full(
            appender.append_blocking(refused()),
            "a second append on the full disk",
        );
        check_log(&drain(&mut cursor), &completed);
        ballast
    };

    // Reopened on the still full disk: intact, complete, and still refusing.
    let wal = Wal::open(&wal_dir, options(WhenFull::DropNewest)).unwrap();
    let report = wal.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut cursor = wal.cursor("sink").unwrap();
    let mut records = drain(&mut cursor);
    check_log(&records, &completed);
    disk_full(
        wal.appender().append_blocking(refused()),
        "an append after reopening on the full disk",
    );

    std::fs::remove_file(&ballast).unwrap();
    for _ in 0..3 {
        let range = append(
            &wal,
            next_payload..next_payload + RECORDS_PER_APPEND,
            PAYLOAD_BYTES,
        );
        assert_eq!(
            range.first,
            completed.last().unwrap().0.last + 1,
            "the failed appends used up seqs"
        );
        completed.push((range, next_payload));
        next_payload += RECORDS_PER_APPEND;
    }
    records.extend(drain(&mut cursor));
    check_log(&records, &completed);

    drop(cursor);
    wal.close();
    let wal = Wal::open(&wal_dir, options(WhenFull::DropNewest)).unwrap();
    let report = wal.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    check_log(&drain(&mut wal.cursor("sink").unwrap()), &completed);
}
