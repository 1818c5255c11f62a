//! `kill -9` of a process appending from several threads: no completed append is lost, seqs stay contiguous and are never reused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use gapless_wal::{AppendBatch, Durability, Record, RecordKind, Seq, Wal, WalOptions};

/// Set to `<dir>:<durability>:<round>` in the child process.
const CHILD_ENV: &str = "GAPLESS_WAL_CRASH_CHILD";
/// Set to a seed printed by an earlier run to replay its kill delays.
const SEED_ENV: &str = "GAPLESS_WAL_CRASH_SEED";
const CHILD_TEST: &str = "crash_child_appends_from_several_threads_until_killed";
const KILLS_PER_MODE: u64 = 25;
const PRODUCERS: u64 = 4;
/// The producer id of the record the parent appends after each reopen.
const PROBE: u64 = 999;
/// A child that outlives a failed parent stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Fixed-width identity at the start of every payload: `r00001.p002.c0000000042.`.
const IDENTITY_LEN: usize = 24;

fn options(durability: Durability) -> WalOptions {
    WalOptions {
        durability,
        ..opts(64 << 10, 64 << 20)
    }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Always => "always",
        Durability::Interval => "interval",
        Durability::Never => "never",
    }
}

fn parse_durability(s: &str) -> Durability {
    match s {
        "always" => Durability::Always,
        "interval" => Durability::Interval,
        "never" => Durability::Never,
        other => panic!("unknown durability {other:?}"),
    }
}

/// xorshift64*: good enough to pick batch sizes and delays, and replayable from its seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo ..= hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn seed_from_time() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    splitmix(nanos ^ u64::from(std::process::id()))
}

/// Which record a payload is: the round (one child process), the producer thread and
/// that producer's running count of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    round: u64,
    producer: u64,
    counter: u64,
}

/// The payload of the record `id`: its identity, then 0 to 299 bytes derived from it, so
/// that any payload can be checked against the one that was appended without keeping it.
fn event(id: Identity) -> Vec<u8> {
    let mut p = format!("r{:05}.p{:03}.c{:010}.", id.round, id.producer, id.counter).into_bytes();
    assert_eq!(p.len(), IDENTITY_LEN);
    let mut rng = XorShift::new((id.round << 48) ^ (id.producer << 40) ^ id.counter);
    let body = rng.between(0, 299);
    p.extend((0..body).map(|_| rng.next() as u8));
    p
}

fn identity(payload: &[u8]) -> Option<Identity> {
    let head = std::str::from_utf8(payload.get(..IDENTITY_LEN)?).ok()?;
    let field = |at: std::ops::Range<usize>, tag: u8| {
        (head.as_bytes()[at.start - 1] == tag)
            .then(|| head[at].parse::<u64>().ok())
            .flatten()
    };
    Some(Identity {
        round: field(1..6, b'r')?,
        producer: field(8..11, b'p')?,
        counter: field(13..23, b'c')?,
    })
}

/// One completed append as the child reported it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first: Seq,
    last: Seq,
    producer: u64,
    counter_first: u64,
    counter_last: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    // libtest may put its own "test … " in front of the first line.
    let at = line.find("acked ")?;
    let nums: Vec<u64> = line[at + "acked ".len()..]
        .split_whitespace()
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    let [first, last, producer, counter_first, counter_last] = nums[..] else {
        return None;
    };
    Some(Ack {
        first,
        last,
        producer,
        counter_first,
        counter_last,
    })
}

/// Not a test of its own: the process the crash tests start and kill. Opens the log in the
/// directory named by `GAPLESS_WAL_CRASH_CHILD` and appends from several threads, printing
/// `acked <first seq> <last seq> <producer> <first counter> <last counter>` after each
/// append completed.
#[test]
#[ignore = "the child process of the kill -9 tests; they start it with GAPLESS_WAL_CRASH_CHILD"]
fn crash_child_appends_from_several_threads_until_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.rsplitn(3, ':');
    let round: u64 = parts.next().unwrap().parse().unwrap();
    let durability = parse_durability(parts.next().unwrap());
    let dir = PathBuf::from(parts.next().unwrap());
    // Another test of this process may be spawning a child right now: until that child
    // execs, it holds a copy of every descriptor of the test process, the lock of a log the
    // parent has open among them. That lock goes away within moments; wait for it.
    let wait_until = Instant::now() + Duration::from_secs(10);
    let wal = loop {
        match Wal::open(&dir, options(durability)) {
            Err(gapless_wal::Error::Locked { .. }) if Instant::now() < wait_until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other.unwrap(),
        }
    };
    let deadline = Instant::now() + CHILD_LIFETIME;
    let seed = seed_from_time();
    std::thread::scope(|s| {
        for producer in 0..PRODUCERS {
            let appender = wal.appender();
            s.spawn(move || {
                let mut rng = XorShift::new(seed ^ producer);
                let mut counter = 0;
                while Instant::now() < deadline {
                    let n = rng.between(1, 199);
                    let mut batch = AppendBatch::new();
                    for c in counter..counter + n {
                        batch.push(&event(Identity {
                            round,
                            producer,
                            counter: c,
                        }));
                    }
                    let line = match appender.append_blocking(batch) {
                        Ok(r) => format!(
                            "acked {} {} {producer} {counter} {}\n",
                            r.first,
                            r.last,
                            counter + n - 1
                        ),
                        Err(e) => format!("append failed: producer {producer}: {e}\n"),
                    };
                    let mut out = std::io::stdout().lock();
                    let printed = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                    if printed.is_err() || line.starts_with("append failed") {
                        // The parent is gone, or has been told.
                        return;
                    }
                    counter += n;
                }
            });
        }
    });
}

/// A started child; killed and reaped if the parent gives up on it early.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the parent learnt from one child.
struct Round {
    acks: Vec<Ack>,
    /// Appends the child reported as failed.
    complaints: Vec<String>,
}

/// Starts the child on `dir`, waits for its first completed append, lets it run for
/// `delay` more and kills it with SIGKILL; returns everything it acknowledged.
fn run_child_and_kill(dir: &Path, durability: Durability, round: u64, delay: Duration) -> Round {
    let spec = format!("{}:{}:{round}", dir.display(), durability_name(durability));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_ENV, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (first_ack, first_ack_rx) = mpsc::channel();
    let reader: JoinHandle<Round> = std::thread::spawn(move || {
        let mut round = Round {
            acks: Vec::new(),
            complaints: Vec::new(),
        };
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line) {
                Ok(0) | Err(_) => return round,
                // Cut short by the kill: the append may be in the log, it was not acked.
                Ok(_) if !line.ends_with('\n') => return round,
                Ok(_) => {}
            }
            if let Some(ack) = parse_ack(&line) {
                round.acks.push(ack);
                let _ = first_ack.send(());
            } else if line.contains("append failed") {
                round.complaints.push(line.trim_end().to_string());
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = first_ack_rx.recv_timeout(FIRST_ACK_TIMEOUT);
    if started.is_ok() {
        std::thread::sleep(delay);
    }
    // Child::kill sends SIGKILL on Unix: this is `kill -9`. (The workspace forbids unsafe
    // code, so libc::kill is not an option.)
    child.kill().unwrap();
    let status = child.wait().unwrap();
    guard.0 = None;
    let round_result = reader.join().unwrap();
    let stderr_text = stderr_reader.join().unwrap();
    assert!(
        started.is_ok(),
        "round {round}: the child completed no append within {FIRST_ACK_TIMEOUT:?} \
         ({status}); its complaints: {:?}; its stderr:\n{stderr_text}",
        round_result.complaints
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "round {round}: the child ended by itself ({status}) before it was killed; its stderr:\n{stderr_text}"
    );
    assert!(
        round_result.complaints.is_empty(),
        "round {round}: the child reported {:?}",
        round_result.complaints
    );
    round_result
}

/// Checks what a cursor read after the kill of `round`, starting at `expected_first`.
fn check_round(round: u64, expected_first: Seq, records: &[Record], acks: &[Ack]) {
    let ctx = format!("round {round}");
    assert!(!acks.is_empty(), "{ctx}: the child acknowledged nothing");
    let last_acked = acks.iter().map(|a| a.last).max().unwrap();
    if let Some(gap) = records.iter().find(|r| r.kind != RecordKind::Event) {
        panic!(
            "{ctx}: a kill -9 produced a gap record: {gap:?} {:?}",
            gap.gap()
        );
    }
    assert_eq!(
        records.first().map(|r| r.seq),
        Some(expected_first),
        "{ctx}: the log does not continue where the previous round ended"
    );
    for w in records.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "{ctx}: seqs are not contiguous after recovery"
        );
    }
    let end = records.last().unwrap().seq;
    assert!(
        end >= last_acked,
        "{ctx}: acked seq {last_acked} is beyond the recovered end {end}: completed appends were lost"
    );

    // Every record, acked or not, is one the child appended, whole and unaltered, and each
    // producer's records follow each other without a hole (a producer appends its next
    // batch only after the previous one completed).
    let mut next_counter: BTreeMap<u64, u64> = BTreeMap::new();
    for r in records {
        let id = identity(&r.payload)
            .unwrap_or_else(|| panic!("{ctx}: seq {} has a foreign payload", r.seq));
        assert_eq!(
            id.round, round,
            "{ctx}: seq {} is from another round",
            r.seq
        );
        assert!(
            r.payload[..] == event(id)[..],
            "{ctx}: seq {} ({id:?}) has a damaged payload",
            r.seq
        );
        let want = next_counter.entry(id.producer).or_insert(0);
        assert_eq!(
            id.counter, *want,
            "{ctx}: seq {}: producer {} skipped records",
            r.seq, id.producer
        );
        *want += 1;
    }

    // Every acked append is there, at the seqs it was given, with the payloads it had.
    for a in acks {
        assert_eq!(
            a.last - a.first,
            a.counter_last - a.counter_first,
            "{ctx}: {a:?}"
        );
        for (i, seq) in (a.first..=a.last).enumerate() {
            let r = &records[(seq - expected_first) as usize];
            assert_eq!(r.seq, seq);
            let want = event(Identity {
                round,
                producer: a.producer,
                counter: a.counter_first + i as u64,
            });
            assert!(
                r.payload[..] == want[..],
                "{ctx}: acked seq {seq} ({a:?}) does not hold what was appended: {:?}",
                identity(&r.payload)
            );
        }
    }
}

/// Kills a child appending under `durability` again and again in one directory, and after
/// each kill reopens the log, checks it and appends once more.
fn kill_9_loses_no_completed_append(durability: Durability) {
    // Crash: SIGKILL while several threads append, at a random moment — in the middle of a
    // write(), between write() and fdatasync, during a segment rollover or while the
    // appender thread sleeps. The page cache survives; the process does not.
    let seed = std::env::var(SEED_ENV)
        .ok()
        .map(|s| s.parse().expect("GAPLESS_WAL_CRASH_SEED is a number"))
        .unwrap_or_else(seed_from_time);
    println!(
        "durability {}: seed {seed} (set {SEED_ENV} to replay the kill delays)",
        durability_name(durability)
    );
    let mut rng = XorShift::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut expected_first: Seq = 1;
    let mut acked_total = 0;
    for round in 1..=KILLS_PER_MODE {
        let delay = Duration::from_millis(rng.between(5, 150));
        let killed = run_child_and_kill(dir.path(), durability, round, delay);
        acked_total += killed.acks.len();

        let wal = Wal::open(dir.path(), options(durability)).unwrap();
        let report = wal.verify().unwrap();
        let damaged: Vec<_> = report
            .segments
            .iter()
            .filter(|s| !s.damaged.is_empty())
            .collect();
        assert!(
            damaged.is_empty(),
            "round {round}: damage left after recovery: {damaged:#?}"
        );
        let mut cursor = wal.cursor("check").unwrap();
        let records = drain(&mut cursor);
        check_round(round, expected_first, &records, &killed.acks);
        let end = records.last().unwrap().seq;

        let probe_id = Identity {
            round,
            producer: PROBE,
            counter: 0,
        };
        let mut probe = AppendBatch::new();
        probe.push(&event(probe_id));
        let probe = wal.appender().append_blocking(probe).unwrap();
        assert_eq!(
            probe.first,
            end + 1,
            "round {round}: the first append after recovery does not follow the recovered end \
             (every acked seq is at most {end}; seqs must never be reused)"
        );
        let after = drain(&mut cursor);
        assert_eq!(after.len(), 1, "round {round}: {after:?}");
        assert_eq!(
            (after[0].seq, &after[0].payload[..]),
            (probe.first, &event(probe_id)[..])
        );
        // Acknowledging lets retention delete what was checked, so the next round reads only
        // its own records and the directory stays small.
        cursor.ack(probe.last).unwrap();
        expected_first = probe.last + 1;
        wal.close();
    }
    println!(
        "durability {}: {KILLS_PER_MODE} kills, {acked_total} acked appends checked, last seq {}",
        durability_name(durability),
        expected_first - 1
    );
}

#[test]
fn kill_9_loses_no_completed_append_under_durability_always() {
    // Crash: kill -9 while appends complete after write() and fdatasync.
    kill_9_loses_no_completed_append(Durability::Always);
}

#[test]
fn kill_9_loses_no_completed_append_under_durability_interval() {
    // Crash: kill -9 while appends complete after write(), with unsynced bytes that a 20 ms
    // timer has not synced yet.
    kill_9_loses_no_completed_append(Durability::Interval);
}

#[test]
fn kill_9_loses_no_completed_append_under_durability_never() {
    // Crash: kill -9 while appends complete after write(), with bytes the log never syncs
    // (except when it seals a segment).
    kill_9_loses_no_completed_append(Durability::Never);
}
