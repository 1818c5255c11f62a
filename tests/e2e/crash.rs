//! `kill -9` of the agent, again and again, while it tails a growing file and uploads to a
//! receiver that fails now and then: no line is lost, and duplicates stay within what
//! could have been in flight at each kill (one batch per kill with `concurrency = 1`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::snippets::{file_source, http_sink};
use crate::harness::*;

const KILLS: usize = 8;
const MAX_EVENTS: usize = 100;
const LINES: usize = 12_000;
const LINES_PER_WRITE: usize = 100;

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

/// Runs the scenario: an agent following `logs/<include>`, a writer appending `LINES`
/// lines to `logs/app.log` (renaming it to `app.log.<n>` every `rotate_every` lines, if
/// set), `KILLS` SIGKILLs at random moments, then checks loss and duplicates.
async fn kill_9_while_tailing(include: &str, rotate_every: Option<usize>) {
    let receiver = Receiver::start(Mode::Cycle(vec![
        Mode::Ok,
        Mode::Status(503),
        Mode::Ok,
        Mode::Ok,
        Mode::Reset,
        Mode::Ok,
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
    for kill in 0..KILLS {
        // The pause is the fault schedule, not a synchronisation.
        tokio::time::sleep(jitter.millis(300, 900)).await;
        agent.kill9();
        eprintln!(
            "kill {kill}: {} lines arrived so far",
            receiver.unique_events().len()
        );
        agent.restart().await;
    }
    writer.join().unwrap();
    assert!(done.load(Ordering::Acquire));

    receiver.wait_for_lines(&lines, DELIVERY).await;
    let events = receiver.events();
    let delivery = check_delivery(&lines, &events);
    delivery.assert_nothing_lost();
    let (resent, reread) = duplicates_by_kind(&events);
    eprintln!(
        "{KILLS} kills: {} duplicates ({resent} resent by the sink, {reread} re-read by the source); {}",
        delivery.duplicates,
        receiver.summary()
    );
    assert!(
        delivery.duplicates <= KILLS * MAX_EVENTS,
        "{} duplicates after {KILLS} kills with batch.max_events = {MAX_EVENTS}: \
         {resent} resent by the sink (same seq), {reread} re-read by the file source (new seq)",
        delivery.duplicates
    );
    assert!(
        delivery.unexpected.is_empty(),
        "lines nobody wrote arrived: {:?}",
        &delivery.unexpected[..delivery.unexpected.len().min(3)]
    );
}

// Crash: SIGKILL at random moments, 300–900 ms apart, while a writer thread appends to the
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
