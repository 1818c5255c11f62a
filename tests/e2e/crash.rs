//! `kill -9` of the agent, again and again, while it tails a growing file and uploads to a
//! receiver that fails now and then and holds some answers: no line is lost, the seq
//! ranges have no hole, and the duplicates after each kill stay within what could have
//! been in flight at that kill (one batch with `concurrency = 1`, and the appends the file
//! source had not checkpointed). Kills are aimed: some land at a random moment, some while
//! a request is held by the receiver, some right after a 2xx was written (before the agent
//! can have moved its cursor).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gapless::continuity::check;
use serde_json::Value;

use crate::harness::capture::received_batches;
use crate::harness::receiver::{Outcome, Request};
use crate::harness::snippets::{file_source, http_sink};
use crate::harness::*;

const KILLS: usize = 9;
const MAX_EVENTS: usize = 100;
const LINES: usize = 12_000;
const LINES_PER_WRITE: usize = 100;
/// Lines the file source may read again after one kill: appends whose completion it had
/// not yet taken (and so not checkpointed). The writer adds `LINES_PER_WRITE` lines every
/// 50 ms and the source reads them as they come, so a few writes' worth at most.
const REREAD_PER_KILL: usize = 4 * LINES_PER_WRITE;

/// Where a kill is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aim {
    /// A random moment.
    Anywhere,
    /// While the receiver holds a request (the batch is in flight).
    InFlight,
    /// Right after the receiver wrote a 2xx, before the agent can have acknowledged the
    /// batch in its cursor.
    AfterAnswer,
}

/// A small xorshift generator: the kill schedule differs from run to run, and the seed is
/// printed so that a failing schedule can be told apart.
struct Jitter(u64);

impl Jitter {
    fn from_clock() -> Jitter {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Jitter(nanos | 1)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low))
    }
}

/// Duplicates resent by a sink (same seq twice) and re-read by a source (same line under
/// two seqs).
fn duplicates_by_kind(events: &[Value]) -> (usize, usize) {
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    let mut resent = 0;
    for e in events {
        if by_seq.insert(e["seq"].as_u64().unwrap(), e).is_some() {
            resent += 1;
        }
    }
    let mut per_line: BTreeMap<&str, usize> = BTreeMap::new();
    for e in by_seq.values() {
        *per_line
            .entry(e["message"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    let reread = per_line.values().map(|n| n - 1).sum();
    (resent, reread)
}

/// Duplicates after each kill, as (sent again by the sink: same seq; read again by the
/// source: same line under a new seq), each counted against the last kill before the
/// request that brought the second copy.
fn duplicates_per_kill(requests: &[Request], kills: &[(Instant, Aim)]) -> Vec<(usize, usize)> {
    let mut per_kill = vec![(0, 0); kills.len()];
    let mut seen_seqs = std::collections::BTreeSet::new();
    let mut seen_lines = std::collections::BTreeSet::new();
    let mut accepted: Vec<&Request> = requests.iter().filter(|r| r.accepted()).collect();
    accepted.sort_by_key(|r| r.arrived);
    for r in accepted {
        let after = kills.iter().rposition(|(t, _)| *t <= r.arrived);
        for e in &r.events {
            let (Some(seq), Some(line)) = (e["seq"].as_u64(), e["message"].as_str()) else {
                continue;
            };
            if !seen_seqs.insert(seq) {
                if let Some(k) = after {
                    per_kill[k].0 += 1;
                }
            } else if !seen_lines.insert(line.to_string()) {
                if let Some(k) = after {
                    per_kill[k].1 += 1;
                }
            }
        }
    }
    per_kill
}

/// Runs the scenario: an agent following `logs/<include>`, a writer appending `LINES`
/// lines to `logs/app.log` (renaming it to `app.log.<n>` every `rotate_every` lines, if
/// set), `KILLS` SIGKILLs at random moments, then checks loss and duplicates.
async fn kill_9_while_tailing(include: &str, rotate_every: Option<usize>) {
    let receiver = Receiver::start(Mode::Cycle(vec![
        Mode::Ok,
        Mode::Status(503),
        Mode::Slow(Duration::from_millis(150)),
        Mode::Ok,
        Mode::Reset,
        Mode::Slow(Duration::from_millis(150)),
        Mode::Status(500),
    ]))
    .await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let log_path = logs.join("app.log");
    let mut agent = builder
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join(include), ""),
            http_sink(&receiver.url(), &["app"], MAX_EVENTS, "concurrency = 1")
        ))
        .start()
        .await;

    let lines = numbered_lines("kill9", 0, LINES);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let lines = lines.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut log = LogFile::create(&log_path);
            let mut rotations = 0;
            // About 6 s of writing: the kills land while the file grows.
            for (i, chunk) in lines.chunks(LINES_PER_WRITE).enumerate() {
                log.append(chunk);
                if rotate_every.is_some_and(|n| ((i + 1) * LINES_PER_WRITE).is_multiple_of(n)) {
                    rotations += 1;
                    log.rename_to(&log_path.with_extension(format!("log.{rotations}")));
                    log.reopen();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut jitter = Jitter::from_clock();
    eprintln!("kill schedule seed: {}", jitter.0);
    let mut kills: Vec<(Instant, Aim)> = Vec::new();
    let mut in_flight_hits = 0;
    for kill in 0..KILLS {
        let aim = [Aim::Anywhere, Aim::InFlight, Aim::AfterAnswer][kill % 3];
        // The pause is the fault schedule, not a synchronisation.
        tokio::time::sleep(jitter.millis(200, 600)).await;
        let since = Instant::now();
        match aim {
            Aim::Anywhere => {}
            Aim::InFlight => {
                let held = receiver
                    .wait_for_request("is held with a batch in it", DELIVERY, |r| {
                        r.arrived >= since && r.outcome == Outcome::Pending && !r.events.is_empty()
                    })
                    .await;
                let still_held = receiver
                    .requests()
                    .iter()
                    .any(|r| r.arrived == held.arrived && r.outcome == Outcome::Pending);
                if still_held {
                    in_flight_hits += 1;
                }
            }
            Aim::AfterAnswer => {
                receiver
                    .wait_for_request("was answered 2xx", DELIVERY, |r: &Request| {
                        r.answered.is_some_and(|t| t >= since) && r.accepted()
                    })
                    .await;
            }
        }
        agent.kill9();
        kills.push((Instant::now(), aim));
        eprintln!(
            "kill {kill} ({aim:?}): {} lines arrived so far",
            receiver.unique_events().len()
        );
        agent.restart().await;
    }
    writer.join().unwrap();
    assert!(done.load(Ordering::Acquire));
    assert!(
        in_flight_hits >= 1,
        "no kill landed while the receiver held a request"
    );

    receiver.wait_for_lines(&lines, DELIVERY).await;
    let events = receiver.events();
    let delivery = check_delivery(&lines, &events);
    delivery.assert_nothing_lost();
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty() && report.gaps.is_empty(),
        "seq ranges with holes or gap records after kill -9: missing {:?}, gaps {:?}",
        report.missing,
        report.gaps
    );
    let (resent, reread) = duplicates_by_kind(&events);
    eprintln!(
        "{KILLS} kills ({in_flight_hits} while a request was held): {} duplicates ({resent} resent by the sink, {reread} re-read by the source); {}",
        delivery.duplicates,
        receiver.summary()
    );
    for (k, (sink, source)) in duplicates_per_kill(&receiver.requests(), &kills)
        .into_iter()
        .enumerate()
    {
        assert!(
            sink <= MAX_EVENTS,
            "kill {k} ({:?}): the sink sent {sink} events again, more than one batch ({MAX_EVENTS})",
            kills[k].1
        );
        assert!(
            source <= REREAD_PER_KILL,
            "kill {k} ({:?}): the file source read {source} lines again (bound {REREAD_PER_KILL})",
            kills[k].1
        );
    }
    assert!(
        delivery.unexpected.is_empty(),
        "lines nobody wrote arrived: {:?}",
        &delivery.unexpected[..delivery.unexpected.len().min(3)]
    );
}

// Crash: SIGKILL at random moments, while a request is held, and right after a 2xx, while a writer thread appends to the
// tailed file and the receiver answers 503, resets or 500 to some requests: the file
// source's checkpoint, the WAL's tail and the sink's cursor are each cut wherever they were.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_kill_9_while_tailing_loses_no_line_and_duplicates_at_most_a_batch_per_kill() {
    kill_9_while_tailing("*.log", None).await;
}

// Crash: as above, and the file is renamed away (app.log -> app.log.N, a new app.log)
// every 3,000 lines, so that kills also land between a rotation and the agent noticing it.
// The include pattern app.log* keeps rotated files followed across restarts.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_kill_9_across_rename_rotations_loses_no_line() {
    kill_9_while_tailing("app.log*", Some(3000)).await;
}
