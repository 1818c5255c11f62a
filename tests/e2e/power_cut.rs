//! Power cuts under the running agent. data_dir lives on durafs ([`DuraMount`]), which
//! keeps what was fsynced apart from what was only written; the log files the file source
//! follows live on the ordinary disk, as an application's would. Round after round the agent
//! takes load, is killed (`kill -9`) at a random moment and the power is cut (`drop`,
//! `torn` or `pages`, from a seeded generator whose seed is printed), the same backing
//! directory is mounted again and the agent restarted on what survived.
//!
//! Under `durability = "always"` nothing acknowledged may be lost: every line an http
//! client got 200 for, every line of the followed file (its checkpoint only ever holds
//! what is durable, so a lost checkpoint costs duplicates), every line the stdin source
//! reported appended. The WAL must open every time (the agent becomes ready), the stream
//! must have no hole without a gap record and, with no drop policy at work, no gap record
//! at all; and a seq must never come back carrying another event. Under `interval` and
//! `never` a cut may lose what was acknowledged — `interval` no more than about one
//! `sync_interval` of it — but the agent still starts every time and reports any damage as
//! a gap record.
//!
//! `GAPLESS_POWER_CUTS=N` sets the number of cuts of the suite (default 240, shared among
//! the tests as `CI_SHARE` says); `GAPLESS_POWER_CUT_SEED` replays a run.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gapless::continuity::check;
use serde_json::Value;

use crate::harness::agent::metric_value;
use crate::harness::capture::received_batches;
use crate::harness::duramount::{seed_from_env, CutMode, Rng};
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

const CUTS_ENV: &str = "GAPLESS_POWER_CUTS";
const SEED_ENV: &str = "GAPLESS_POWER_CUT_SEED";
/// Cuts of the whole suite when `GAPLESS_POWER_CUTS` is not set.
const CI_CUTS: usize = 240;
const MODES: [CutMode; 3] = [CutMode::Drop, CutMode::Torn, CutMode::Pages];
/// Events of a sink batch: small, so that one round sees several requests.
const MAX_EVENTS: usize = 50;

/// This test's share of the suite's cuts (`share` of 100).
fn cuts(share: usize) -> usize {
    let total = std::env::var(CUTS_ENV)
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("{CUTS_ENV} must be a number"))
        })
        .unwrap_or(CI_CUTS);
    (total * share).div_ceil(100).max(3)
}

/// A receiver that fails or dawdles now and then, so that a backlog builds up.
fn unreliable() -> Mode {
    Mode::Cycle(vec![
        Mode::Ok,
        Mode::Status(503),
        Mode::Slow(Duration::from_millis(40)),
        Mode::Ok,
        Mode::Reset,
        Mode::Ok,
    ])
}

fn wal_table(durability: &str) -> String {
    // Small segments, so that cuts also land in rollovers and retention.
    format!(
        "[wal]\ndurability = \"{durability}\"\nsync_interval = \"100ms\"\nsegment_bytes = \"64KiB\"\nmax_bytes = \"256MiB\"\n"
    )
}

/// Lines an http client posted and got 200 for, each with the moment of the answer.
type Acks = Arc<Mutex<Vec<(String, Instant)>>>;

/// Posts small batches of fresh lines to the http source until `stop`, recording the lines
/// of every 200. Lines of a post that failed or got another answer are not acknowledged
/// (they may or may not arrive).
async fn post_until(port: u16, prefix: String, stop: Arc<AtomicBool>, acks: Acks) -> usize {
    let ingest = Ingest::new(port);
    let mut posted = 0;
    let mut n = 1;
    while !stop.load(Ordering::Relaxed) {
        let lines = numbered_lines(&prefix, posted, n);
        posted += n;
        n = n % 5 + 1;
        if let Ok(answer) = ingest.post_lines(&lines).await {
            if answer.status == 200 {
                let at = Instant::now();
                acks.lock()
                    .unwrap()
                    .extend(lines.into_iter().map(|l| (l, at)));
            }
        }
        // Pacing: a few hundred lines a second, so that the backlog stays drainable.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    posted
}

/// Appends a few lines to the followed file every few milliseconds until `stop`.
async fn write_until(
    log: &mut LogFile,
    prefix: &str,
    written: &mut Vec<String>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let lines = numbered_lines(prefix, written.len(), 2);
        log.append(&lines);
        written.extend(lines);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seqs that arrived carrying two different events (seq, first, second): seqs handed out
/// again after a cut, which a receiver deduplicating by seq would silently drop.
fn reused_seqs(events: &[Value]) -> Vec<(u64, Value, Value)> {
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    let mut reused = Vec::new();
    for e in events.iter().filter(|e| e["gapless"] != "gap") {
        let Some(seq) = e["seq"].as_u64() else {
            continue;
        };
        if let Some(first) = by_seq.insert(seq, e) {
            if first["message"] != e["message"] {
                reused.push((seq, first["message"].clone(), e["message"].clone()));
            }
        }
    }
    reused
}

fn assert_no_seq_reused(events: &[Value], ctx: &str) {
    let reused = reused_seqs(events);
    assert!(
        reused.is_empty(),
        "{ctx}: {} seqs arrived carrying two different events (seq, first, second): {:?}",
        reused.len(),
        &reused[..reused.len().min(3)]
    );
}

/// What the continuity checker says of everything the receiver accepted: panics on a hole
/// without a gap record, and (when `gaps_allowed` is false) on any gap record.
fn assert_continuous(receiver: &Receiver, gaps_allowed: bool, ctx: &str) -> usize {
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty(),
        "{ctx}: seqs missing without a gap record: {:?}; {}",
        report.missing,
        receiver.summary()
    );
    assert!(
        gaps_allowed || report.gaps.is_empty(),
        "{ctx}: gap records although no policy dropped anything: {:?}",
        report.gaps
    );
    report.gaps.len()
}

fn seed_line(name: &str) -> (u64, Rng) {
    let seed = seed_from_env(SEED_ENV);
    eprintln!("{name}: seed {seed} (set {SEED_ENV}={seed} to replay the cut choices)");
    (seed, Rng::new(seed))
}

// Power cut: SIGKILL at a random moment under load, then the machine loses power (drop,
// torn or pages of everything not fsynced), while an http source and a file source append
// under `durability = "always"` and the sink uploads a backlog to a receiver that fails now
// and then: the WAL's tail, segment rollovers and deletions, the sink's cursor, the file
// checkpoint and its rename are each cut wherever they were.
#[tokio::test(flavor = "multi_thread")]
async fn power_cuts_under_always_lose_no_acknowledged_http_or_file_line_and_leave_no_gap() {
    let name = "always/http+file";
    let (seed, mut rng) = seed_line(name);
    let rounds = cuts(60);
    let mut mount = DuraMount::new(seed);
    let receiver = Receiver::start(unreliable()).await;
    let port = free_port();
    let builder = Agent::builder().data_dir(&mount.join("data"));
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut log = LogFile::create(&logs.join("app.log"));
    let mut agent = builder
        .config(&format!(
            "{}{}{}{}",
            wal_table("always"),
            file_source("app", &logs.join("*.log"), ""),
            http_source("web", port, ""),
            http_sink(&receiver.url(), &[], MAX_EVENTS, "")
        ))
        .listening_on(port)
        .start()
        .await;

    let acks: Acks = Arc::default();
    let mut file_lines = Vec::new();
    let mut kept = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let poster = tokio::spawn(post_until(
            port,
            format!("pc-http r{round}"),
            stop.clone(),
            acks.clone(),
        ));
        // Most runs are cut within a quarter second; every eighth outlives the file
        // checkpoint's sync period (1 s), so that re-reading after a cut stays bounded.
        let run_for = match round % 8 {
            7 => Duration::from_millis(rng.range(1_100, 1_400)),
            _ => Duration::from_millis(rng.range(10, 250)),
        };
        let _ = tokio::time::timeout(
            run_for,
            write_until(
                &mut log,
                &format!("pc-file r{round}"),
                &mut file_lines,
                &stop,
            ),
        )
        .await;
        agent.kill9();
        stop.store(true, Ordering::Relaxed);
        poster.await.unwrap();
        let mode = rng.pick(&MODES);
        kept += mount.cut(mode).kept_bytes;
        mount.remount();
        // The WAL must open on whatever survived: wait_ready panics (with stderr) if the
        // agent exits or is not ready in time.
        agent.restart().await;
    }
    let took = started.elapsed();

    receiver.set_mode(Mode::Ok);
    let acked: Vec<String> = acks
        .lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.clone())
        .collect();
    let mut expected = acked.clone();
    expected.extend(file_lines.iter().cloned());
    let ctx = format!("{name}: seed {seed}, {rounds} cuts");
    receiver.wait_for_lines(&expected, DELIVERY).await;
    let events = receiver.events();
    check_delivery(&expected, &events).assert_nothing_lost();
    assert_no_seq_reused(&events, &ctx);
    assert_continuous(&receiver, false, &ctx);
    eprintln!(
        "{name}: {rounds} cuts in {took:?}; {} http lines acknowledged, {} file lines written, \
         all arrived; {kept} unsynced bytes kept by torn/pages cuts; {}",
        acked.len(),
        file_lines.len(),
        receiver.summary()
    );
}

/// The stdin source's only acknowledgement: `gapless_source_events_total` of the source,
/// which counts events whose append completed.
async fn stdin_appended(agent: &Agent) -> Option<usize> {
    let resp = reqwest::Client::new()
        .get(agent.api_url("/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let text = resp.text().await.ok()?;
    Some(
        metric_value(&text, "gapless_source_events_total", &[("source", "pipe")]).unwrap_or(0.0)
            as usize,
    )
}

// Power cut: SIGKILL then a power cut while lines stream in on stdin under `always`. A pipe
// has no acknowledgement for its writer, so what is promised is what the agent counted as
// appended (`gapless_source_events_total`, read just before the kill): those lines, in
// order the first of the round, must all arrive. Each run gets a new pipe with new lines.
#[tokio::test(flavor = "multi_thread")]
async fn power_cuts_under_always_lose_no_line_the_stdin_source_counted_as_appended() {
    let name = "always/stdin";
    let (seed, mut rng) = seed_line(name);
    let rounds = cuts(20);
    let mut mount = DuraMount::new(seed);
    let receiver = Receiver::start(unreliable()).await;
    let mut agent = Agent::builder()
        .data_dir(&mount.join("data"))
        .config(&format!(
            "{}[sources.pipe]\ntype = \"stdin\"\n{}",
            wal_table("always"),
            http_sink(&receiver.url(), &[], MAX_EVENTS, "")
        ))
        .stdin_piped()
        .start()
        .await;
    let mut appended = Vec::new();
    let mut written_total = 0;
    for round in 0..rounds {
        let lines = numbered_lines(&format!("pc-stdin r{round}"), 0, 2_000);
        let deadline = Instant::now() + Duration::from_millis(rng.range(10, 250));
        let mut written = 0;
        while Instant::now() < deadline && written < lines.len() {
            let chunk = &lines[written..(written + 5).min(lines.len())];
            let mut text = chunk.join("\n");
            text.push('\n');
            agent.stdin().write_all(text.as_bytes()).unwrap();
            written += chunk.len();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let counted = stdin_appended(&agent).await.unwrap_or(0);
        agent.kill9();
        assert!(
            counted <= written,
            "the agent counted {counted} of {written} lines"
        );
        appended.extend(lines[..counted].iter().cloned());
        written_total += written;
        mount.cut(rng.pick(&MODES));
        mount.remount();
        agent.restart().await;
    }
    receiver.set_mode(Mode::Ok);
    let ctx = format!("{name}: seed {seed}, {rounds} cuts");
    receiver.wait_for_lines(&appended, DELIVERY).await;
    let events = receiver.events();
    assert_no_seq_reused(&events, &ctx);
    assert_continuous(&receiver, false, &ctx);
    eprintln!(
        "{name}: {rounds} cuts; {} of {written_total} lines written were counted as appended \
         before a kill, all arrived; {}",
        appended.len(),
        receiver.summary()
    );
}

/// One round-robin run under a durability that may lose acknowledged events at a cut.
/// Returns, per lost line, how long before its round's cut it was acknowledged.
async fn power_cuts_that_may_lose_acks(
    name: &str,
    durability: &str,
    rounds: usize,
    seqs_may_be_reused: bool,
) -> Vec<Duration> {
    let (seed, mut rng) = seed_line(name);
    let mut mount = DuraMount::new(seed);
    let receiver = Receiver::start(unreliable()).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .data_dir(&mount.join("data"))
        .config(&format!(
            "{}{}{}",
            wal_table(durability),
            http_source("web", port, ""),
            http_sink(&receiver.url(), &[], MAX_EVENTS, "")
        ))
        .listening_on(port)
        .start()
        .await;
    // (line, acknowledged at, cut at)
    let mut acked: Vec<(String, Instant, Instant)> = Vec::new();
    for round in 0..rounds {
        let acks: Acks = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let poster = tokio::spawn(post_until(
            port,
            format!("pc-{durability} r{round}"),
            stop.clone(),
            acks.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        agent.kill9();
        let cut_at = Instant::now();
        stop.store(true, Ordering::Relaxed);
        poster.await.unwrap();
        acked.extend(
            acks.lock()
                .unwrap()
                .drain(..)
                .map(|(l, at)| (l, at, cut_at)),
        );
        mount.cut(rng.pick(&MODES));
        mount.remount();
        // Whatever the cut took, the WAL opens and the agent becomes ready: no crash loop.
        agent.restart().await;
    }
    let ctx = format!("{name}: seed {seed}, {rounds} cuts");
    receiver.set_mode(Mode::Ok);
    // Let the last run deliver what survived, then look at what is missing.
    let all: Vec<String> = acked.iter().map(|(l, ..)| l.clone()).collect();
    let quiet = async {
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n = receiver.events().len();
            if n == last {
                return;
            }
            last = n;
        }
    };
    tokio::time::timeout(DELIVERY, quiet)
        .await
        .unwrap_or_else(|_| panic!("{ctx}: delivery never settled"));
    let events = receiver.events();
    let delivery = check_delivery(&all, &events);
    let missing: std::collections::BTreeSet<&String> = delivery.missing.iter().collect();
    let lost: Vec<Duration> = acked
        .iter()
        .filter(|(l, ..)| missing.contains(l))
        .map(|(_, at, cut)| cut.saturating_duration_since(*at))
        .collect();
    let gaps = assert_continuous(&receiver, true, &ctx);
    let reused = reused_seqs(&events).len();
    if !seqs_may_be_reused {
        assert_no_seq_reused(&events, &ctx);
    }
    assert!(agent.is_running(), "{ctx}: the agent stopped");
    eprintln!(
        "{ctx}: {} of {} acknowledged lines lost (acknowledged at most {:?} before their cut); \
         {gaps} gap records; {reused} seqs reused; {}",
        lost.len(),
        all.len(),
        lost.iter().max(),
        receiver.summary()
    );
    lost
}

// Power cut under `durability = "interval"` (sync_interval 100 ms): SIGKILL then a cut while
// clients post and the sink works off a backlog. What was acknowledged within the last
// interval (plus the sync's own time) may be lost; anything acknowledged earlier may not. The
// sink only ever sees synced records, so no seq it sent is handed out again.
#[tokio::test(flavor = "multi_thread")]
async fn power_cuts_under_interval_lose_at_most_about_one_sync_interval_of_acknowledged_lines() {
    let lost = power_cuts_that_may_lose_acks("interval/http", "interval", cuts(10), false).await;
    // One interval (100 ms) and a generous margin for the sync itself and a loaded machine.
    let bound = Duration::from_millis(100 + 400);
    let beyond: Vec<&Duration> = lost.iter().filter(|d| **d > bound).collect();
    assert!(
        beyond.is_empty(),
        "{} lost lines had been acknowledged more than {bound:?} before the cut (the longest \
         {:?})",
        beyond.len(),
        beyond.iter().max()
    );
}

// Power cut under `durability = "never"`: SIGKILL then a cut while clients post. Anything not
// yet written back may be lost, and — the sink sending records as soon as they are written —
// seqs it sent may come back with other events (documented); the agent must still start
// every time and say what damage cost as gap records, never fail or stall on it.
#[tokio::test(flavor = "multi_thread")]
async fn power_cuts_under_never_may_lose_acknowledged_lines_but_the_agent_always_starts() {
    power_cuts_that_may_lose_acks("never/http", "never", cuts(10), true).await;
}
