//! An outage of the receiver — 503s, reset connections, a stalled request — while lines keep
//! coming in over HTTP, stdin or a tailed file: once it recovers every line arrives (a delay,
//! not a loss), retries of a batch carry the same idempotency key, and the accepted seq
//! ranges join without a hole.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use crate::harness::agent::wait_for_status;
use crate::harness::lines::seq_holes;
use crate::harness::receiver::{Outcome, Request};
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

/// Waits for a request with this outcome, so that each phase of an outage really happened.
async fn wait_for_outcome(receiver: &Receiver, outcome: Outcome) {
    receiver
        .wait_for_request(&format!("ended {outcome:?}"), SHORT, |r| {
            r.outcome == outcome
        })
        .await;
}

/// Checks what every request must carry: a seq range that matches its events, the
/// previous seq, one idempotency key per range across retries, the agent id, gzip.
fn assert_request_headers(requests: &[Request]) {
    let mut keys: BTreeMap<(u64, u64), BTreeSet<String>> = BTreeMap::new();
    let mut agent_ids = BTreeSet::new();
    for r in requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        let (first, last) = r
            .seq_range()
            .unwrap_or_else(|| panic!("a request without gapless-seq-range: {:?}", r.headers));
        assert_eq!(
            r.header("gapless-prev-seq"),
            Some((first - 1).to_string().as_str()),
            "gapless-prev-seq of range {first}-{last}"
        );
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "compression is gzip by default"
        );
        assert!(
            r.body_error.is_none(),
            "undecodable body: {:?}",
            r.body_error
        );
        let seqs: Vec<u64> = r
            .events
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.iter().all(|s| (first..=last).contains(s)),
            "events {seqs:?} outside their batch's range {first}-{last}"
        );
        let key = r
            .header("idempotency-key")
            .unwrap_or_else(|| panic!("a request without idempotency-key: {:?}", r.headers));
        keys.entry((first, last))
            .or_default()
            .insert(key.to_string());
        agent_ids.insert(r.header("gapless-agent-id").unwrap_or("").to_string());
    }
    for (range, k) in &keys {
        assert_eq!(
            k.len(),
            1,
            "retries of batch {range:?} used different idempotency keys: {k:?}"
        );
    }
    let distinct: BTreeSet<&String> = keys.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "two batches shared an idempotency key"
    );
    assert_eq!(
        agent_ids.len(),
        1,
        "gapless-agent-id varied or was missing: {agent_ids:?}"
    );
    assert!(
        !agent_ids.contains(""),
        "a request without gapless-agent-id"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_posted_during_a_receiver_outage_all_arrive_once_it_recovers() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 50, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let lines = numbered_lines("outage-http", 0, 800);

    for chunk in lines[..200].chunks(20) {
        ingest.post_ok(chunk).await;
    }
    wait_for_outcome(&receiver, Outcome::Answered(503)).await;
    wait_for_status(&agent, "the sink failing with HTTP 503", |s| {
        s["sinks"]["out"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    })
    .await;

    receiver.set_mode(Mode::Reset);
    for chunk in lines[200..400].chunks(20) {
        ingest.post_ok(chunk).await;
    }
    wait_for_outcome(&receiver, Outcome::Reset).await;

    // The sink's request_timeout is 2 s: the stalled request is abandoned and retried.
    receiver.set_mode(Mode::Stall);
    for chunk in lines[400..600].chunks(20) {
        ingest.post_ok(chunk).await;
    }
    wait_for_outcome(&receiver, Outcome::Stalled).await;

    receiver.set_mode(Mode::Ok);
    for chunk in lines[600..].chunks(20) {
        ingest.post_ok(chunk).await;
    }
    receiver.wait_for_lines(&lines, DELIVERY).await;

    // No crash, so nothing may be sent twice: every batch got exactly one 2xx.
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    // One client posting one request after another: the WAL keeps its order.
    assert_in_order(&lines, &receiver.events());
    let last_seq = receiver.unique_events().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(last_seq, lines.len() as u64, "one seq per line, from 1");
    let holes = seq_holes(&receiver.accepted_seq_ranges(), last_seq);
    assert!(
        holes.is_empty(),
        "accepted seq ranges leave holes: {holes:?}"
    );
    assert_request_headers(&receiver.requests());
    for e in receiver.unique_events() {
        assert_eq!(e["source"], "in", "event without its source: {e}");
        assert!(
            e["host"].is_string() && e["timestamp"].is_string(),
            "event fields: {e}"
        );
    }
    let status = wait_for_status(&agent, "an empty backlog and no error", |s| {
        s["sinks"]["out"]["backlog_events"] == 0 && s["sinks"]["out"]["last_error"].is_null()
    })
    .await;
    assert_eq!(status["sinks"]["out"]["delivered_events"], lines.len());
    let retries = agent
        .metric("gapless_sink_retries_total", &[("sink", "out")])
        .await;
    assert!(
        retries.is_some_and(|r| r >= 3.0),
        "gapless_sink_retries_total{{sink=\"out\"}} = {retries:?} after 503s, a reset and a stall"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_read_during_an_outage_is_delivered_and_then_the_agent_exits_0() {
    let receiver = Receiver::start(Mode::Status(500)).await;
    let mut agent = Agent::builder()
        .config(&format!(
            "[sources.pipe]\ntype = \"stdin\"\n{}",
            http_sink(&receiver.url(), &["pipe"], 100, "")
        ))
        .stdin_piped()
        .start()
        .await;
    let lines = numbered_lines("outage-stdin", 0, 500);
    // The last line has no newline: end of input ends it.
    agent
        .stdin()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    agent.close_stdin();

    wait_for_outcome(&receiver, Outcome::Answered(500)).await;
    assert!(
        agent.is_running(),
        "the agent exited at end of input although nothing was delivered yet"
    );
    receiver.set_mode(Mode::Ok);
    let status = agent.wait_exit(DELIVERY).await;
    assert!(
        status.success(),
        "exit status {status} after stdin was delivered"
    );
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_in_order(&lines, &receiver.events());
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_appended_to_a_file_during_a_receiver_outage_all_arrive_once_it_recovers() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut log = LogFile::create(&logs.join("app.log"));
    let agent = builder
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 100, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("outage-file", 0, 900);

    log.append(&lines[..300]);
    wait_for_outcome(&receiver, Outcome::Answered(503)).await;
    receiver.set_mode(Mode::Reset);
    log.append(&lines[300..600]);
    wait_for_outcome(&receiver, Outcome::Reset).await;
    receiver.set_mode(Mode::Ok);
    log.append(&lines[600..]);

    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_in_order(&lines, &receiver.events());
    let path = log.path().to_str().unwrap();
    for e in receiver.unique_events() {
        assert_eq!(e["file"], path, "a file event names its file: {e}");
        assert_eq!(e["source"], "app", "event without its source: {e}");
    }
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_operators_alert_on_show_an_outage_and_its_end() {
    // The README tells operators to alert on these: they must say what happened.
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 50, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let lines = numbered_lines("alerting", 0, 120);
    ingest.post_ok(&lines).await;
    wait_for_outcome(&receiver, Outcome::Answered(503)).await;
    let sink = [("sink", "out")];
    wait_until(
        SHORT,
        "the oldest undelivered age to pass 1 s",
        async || {
            agent
                .metric("gapless_sink_oldest_undelivered_age_seconds", &sink)
                .await
                .is_some_and(|age| age >= 1.0)
        },
    )
    .await;
    assert_eq!(
        agent.metric("gapless_sink_backlog_events", &sink).await,
        Some(120.0),
        "the backlog is the 120 undelivered events"
    );
    let failed = agent
        .metric(
            "gapless_sink_requests_total",
            &[("sink", "out"), ("status", "503")],
        )
        .await
        .expect("gapless_sink_requests_total{status=\"503\"}");
    assert!(failed >= 1.0, "{failed} requests answered 503 counted");

    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    wait_until(SHORT, "the backlog to drain", async || {
        agent.metric("gapless_sink_backlog_events", &sink).await == Some(0.0)
    })
    .await;
    assert_eq!(
        agent
            .metric("gapless_sink_oldest_undelivered_age_seconds", &sink)
            .await,
        Some(0.0),
        "nothing undelivered: age 0"
    );
    assert!(
        agent
            .metric(
                "gapless_sink_requests_total",
                &[("sink", "out"), ("status", "200")],
            )
            .await
            >= Some(1.0)
    );
    assert_eq!(
        agent
            .metric(
                "gapless_dropped_events_total",
                &[("reason", "wal_full_drop_oldest")]
            )
            .await
            .unwrap_or(0.0),
        0.0,
        "an outage under block drops nothing"
    );
}
