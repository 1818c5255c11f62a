//! The WAL's durability promise against power loss: under `durability = always`, every
//! append that completed is in the log after a power cut, with its exact payload.
//!
//! A child process (this test binary, re-executed with `DURAFS_WAL_CHILD` set) appends
//! from two threads to a `gapless_wal::Wal` on a durafs mount and prints each completed
//! append's seqs. The parent kills it, cuts the power (`drop`, `torn`, `pages` in turn),
//! mounts again, reopens the log and reads every acknowledged seq back. Set
//! `DURAFS_WAL_SEED` to replay the kill delays and the cut's choices of a failed run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use durafs::CutMode;
use gapless_wal::{AppendBatch, Durability, RecordKind, Seq, Wal, WalOptions, WhenFull};

/// Set to `<wal dir>:<round>` in the child process.
const CHILD_ENV: &str = "DURAFS_WAL_CHILD";
const SEED_ENV: &str = "DURAFS_WAL_SEED";
const CHILD_TEST: &str = "wal_child_appends_until_killed";
const CUTS: u64 = 60;
const PRODUCERS: u64 = 2;
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const MODES: [CutMode; 3] = [CutMode::Drop, CutMode::Torn, CutMode::Pages];

fn options() -> WalOptions {
    WalOptions {
        // Small segments, so that rounds roll over to new segment files.
        segment_bytes: 64 << 10,
        max_bytes: 64 << 20,
        durability: Durability::Always,
        sync_interval: Duration::from_millis(20),
        when_full: WhenFull::Block,
    }
}

/// The payload of record `counter` of `producer` in `round`: says which it is, then a
/// body derived from that, so that any payload can be checked without keeping it.
fn payload(round: u64, producer: u64, counter: u64) -> Vec<u8> {
    let mut p = format!("r{round:05}.p{producer:03}.c{counter:010}.").into_bytes();
    let body = (counter * 7 + producer * 13 + round) % 300;
    p.extend((0..body).map(|i| (i as u8).wrapping_mul(17).wrapping_add(counter as u8)));
    p
}

/// Not a test of its own: the process the power-cut test starts and kills.
#[test]
#[ignore = "the child process of the WAL power-cut test; it starts it with DURAFS_WAL_CHILD"]
fn wal_child_appends_until_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, round) = spec.rsplit_once(':').unwrap();
    let round: u64 = round.parse().unwrap();
    let wal = open_when_unlocked(dir);
    let deadline = Instant::now() + CHILD_LIFETIME;
    std::thread::scope(|s| {
        for producer in 0..PRODUCERS {
            let appender = wal.appender();
            s.spawn(move || {
                let mut counter = 0;
                while Instant::now() < deadline {
                    let n = 1 + (counter + producer) % 20;
                    let mut batch = AppendBatch::new();
                    for c in counter..counter + n {
                        batch.push(&payload(round, producer, c));
                    }
                    let line = match appender.append_blocking(batch) {
                        Ok(r) => format!("acked {} {} {producer} {counter}\n", r.first, r.last),
                        Err(e) => format!("append failed: {e}\n"),
                    };
                    let mut out = std::io::stdout().lock();
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                        || line.starts_with("append failed")
                    {
                        return;
                    }
                    counter += n;
                }
            });
        }
    });
}

/// Opens the log, waiting a moment while it is locked: the parent's own `Wal` of the last
/// round is closed, but its lock's file description lives on in any process that the other
/// test of this binary forked in between and that has not reached `exec` yet.
fn open_when_unlocked(dir: &str) -> Wal {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Wal::open(dir, options()) {
            Err(gapless_wal::Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

/// One completed append: seqs `first ..= last` hold `producer`'s records from `counter`.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first: Seq,
    last: Seq,
    producer: u64,
    counter: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let at = line.find("acked ")?;
    let nums: Vec<u64> = line[at + 6..]
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    let [first, last, producer, counter] = nums[..] else {
        return None;
    };
    Some(Ack {
        first,
        last,
        producer,
        counter,
    })
}

struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the child on `dir`, lets it run `delay` past its first completed append,
/// kills it and returns what it acknowledged.
fn run_child_and_kill(dir: &Path, round: u64, delay: Duration) -> Vec<Ack> {
    let mut guard = Guard(Some(
        Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, format!("{}:{round}", dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let child = guard.0.as_mut().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (first, first_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut complaints = Vec::new();
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return (acks, complaints),
                Ok(_) if !line.ends_with('\n') => return (acks, complaints),
                Ok(_) => {}
            }
            if let Some(a) = parse_ack(&line) {
                acks.push(a);
                let _ = first.send(());
            } else if line.contains("append failed") {
                complaints.push(line.trim_end().to_string());
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = first_rx.recv_timeout(FIRST_ACK_TIMEOUT);
    if started.is_ok() {
        std::thread::sleep(delay);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    guard.0 = None;
    let (acks, complaints) = reader.join().unwrap();
    let stderr = stderr_reader.join().unwrap();
    assert!(
        started.is_ok() && complaints.is_empty(),
        "round {round}: the child completed no append or reported failures {complaints:?}; \
         its stderr:\n{stderr}"
    );
    acks
}

/// Every file under `dir` with its length, for failure messages.
fn listing(dir: &Path) -> String {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    out.push(format!("{rel}/"));
                    stack.push(p);
                }
                Ok(m) => out.push(format!("{rel} ({} bytes)", m.len())),
                Err(_) => out.push(rel),
            }
        }
    }
    out.sort();
    if out.is_empty() {
        "(empty)".into()
    } else {
        out.join(", ")
    }
}

fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .map(|s| s.parse().expect("DURAFS_WAL_SEED is a number"))
        .unwrap_or_else(|| {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        })
}

/// Cuts the power under a child appending to a WAL in `wal_dir` (relative to the mount)
/// `CUTS` times; after each cut reopens the log and checks every acknowledged seq.
/// `prepare` runs on the mount before the first round.
fn completed_appends_survive_power_cuts(name: &str, prepare: impl Fn(&Rig)) {
    let seed = seed();
    println!("{name}: seed {seed} (set {SEED_ENV}={seed} to replay)");
    let mut rig = Rig::with_seed(seed);
    prepare(&rig);
    let wal_dir: PathBuf = rig.p("wal");
    let mut delays = seed | 1;
    let mut checked = 0;
    let mut kept = 0;
    for round in 1..=CUTS {
        let mode = MODES[(round as usize - 1) % MODES.len()];
        delays ^= delays << 13;
        delays ^= delays >> 7;
        delays ^= delays << 17;
        let delay = Duration::from_millis(5 + delays % 150);
        // Power cut at a random moment while two threads append under `always`: in a
        // write, between write and fdatasync, during a segment rollover or retention.
        let acks = run_child_and_kill(&wal_dir, round, delay);
        kept += rig.cut(mode).kept_bytes;
        let on_disk = listing(rig.backing.path());
        rig.remount();
        let ctx = format!(
            "{name}: seed {seed}, round {round}, cut {mode:?}; after the cut the backing \
             directory held: {on_disk}"
        );
        let wal = Wal::open(&wal_dir, options())
            .unwrap_or_else(|e| panic!("{ctx}: the WAL does not open: {e}"));
        let mut cursor = wal.cursor("check").unwrap();
        let mut found: BTreeMap<Seq, Vec<u8>> = BTreeMap::new();
        let mut gaps = Vec::new();
        loop {
            let batch = cursor.try_read(10_000, 64 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            for r in batch {
                if r.kind == RecordKind::Event {
                    found.insert(r.seq, r.payload.to_vec());
                } else {
                    gaps.push(r.seq);
                }
            }
        }
        assert!(gaps.is_empty(), "{ctx}: gap records at seqs {gaps:?}: nothing acknowledged was lost, yet the log reports a loss");
        for a in &acks {
            for (i, seq) in (a.first..=a.last).enumerate() {
                let want = payload(round, a.producer, a.counter + i as u64);
                match found.get(&seq) {
                    Some(got) if *got == want => checked += 1,
                    Some(got) => panic!(
                        "{ctx}: acked seq {seq} holds {:?}, not what was appended",
                        String::from_utf8_lossy(&got[..got.len().min(24)])
                    ),
                    None => panic!(
                        "{ctx}: acked seq {seq} ({} acked appends this round, seqs {}..={}) \
                         is not in the log, which holds {} records{}",
                        acks.len(),
                        acks.iter().map(|a| a.first).min().unwrap_or(0),
                        acks.iter().map(|a| a.last).max().unwrap_or(0),
                        found.len(),
                        found
                            .keys()
                            .next()
                            .map(|f| format!(" (seqs {f}..={})", found.keys().last().unwrap_or(f)))
                            .unwrap_or_default()
                    ),
                }
            }
        }
        // Acknowledging lets retention delete what was checked: deletions are part of
        // what the next cut tests.
        if let Some(&last) = found.keys().last() {
            cursor.ack(last).unwrap();
        }
        drop(cursor);
        wal.close();
    }
    println!(
        "{name}: {CUTS} cuts, {checked} acknowledged records checked, {kept} unsynced bytes \
         kept by torn and pages cuts"
    );
}

/// Found by this test: `Wal::open` created its directory without syncing the parent, so the
/// first cut took the directory and every segment away.
#[test]
fn completed_appends_survive_power_cuts_when_the_wal_creates_its_directory() {
    completed_appends_survive_power_cuts("wal-creates-dir", |_| {});
}

#[test]
fn completed_appends_survive_power_cuts_in_a_durably_created_directory() {
    completed_appends_survive_power_cuts("dir-made-durable", |rig| {
        std::fs::create_dir(rig.p("wal")).unwrap();
        sync_dir(rig.mnt.path());
    });
}
