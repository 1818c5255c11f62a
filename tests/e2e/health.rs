//! Health that means progress: `/health/delivery` answers 503 with a reason per sink once
//! a sink's outage outlasts `alert_after`, and 200 again by itself after recovery; a
//! request the receiver never answers is cut at `request_timeout` and delivery resumes
//! without restarting the agent.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::receiver::Outcome;
use crate::harness::snippets::{http_source, named_http_sink};
use crate::harness::*;

/// `GET /health/delivery`: status code and parsed body.
async fn delivery_health(agent: &Agent) -> (u16, Value) {
    let (code, body) = agent.api_get("/health/delivery").await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/health/delivery is not JSON ({e}): {body}"));
    (code, json)
}

/// Polls `/health/delivery` until it answers `code`; returns when it was seen and the body.
async fn wait_for_delivery_health(agent: &Agent, code: u16, timeout: Duration) -> (Instant, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (got, body) = delivery_health(agent).await;
        if got == code {
            return (Instant::now(), body);
        }
        assert!(
            Instant::now() < deadline,
            "/health/delivery did not answer {code} within {timeout:?}; last: {got} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent whose sink `out` turns unhealthy `alert_after` into an outage. The failed
/// request count is set out of reach, so that only the time rules can trip.
async fn agent_alerting_after(receiver: &Receiver, port: u16, sink_extra: &str) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            named_http_sink(
                "out",
                &receiver.url(),
                &["in"],
                50,
                &format!(
                    "request_timeout = \"2s\"\nalert_after = \"2s\"\n\
                     alert_after_failed_requests = 1000\n{sink_extra}"
                )
            )
        ))
        .start()
        .await
}

fn assert_unhealthy_for_out(body: &Value) {
    assert_eq!(body["status"], "unhealthy", "{body:#}");
    let out = &body["sinks"]["out"];
    assert_eq!(out["healthy"], false, "{body:#}");
    let reasons = out["reasons"].as_array().cloned().unwrap_or_default();
    assert!(
        !reasons.is_empty()
            && reasons
                .iter()
                .all(|r| r.as_str().is_some_and(|r| !r.is_empty())),
        "no reason given for the unhealthy sink: {body:#}"
    );
    assert!(
        out["backlog_events"].as_u64() > Some(0),
        "unhealthy without a backlog: {body:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_health_turns_503_during_an_outage_longer_than_alert_after_and_200_after_recovery()
{
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = agent_alerting_after(&receiver, port, "").await;
    let ingest = Ingest::new(port);
    let before = numbered_lines("health before", 0, 20);
    ingest.post_ok(&before).await;
    receiver.wait_for_lines(&before, DELIVERY).await;
    let (code, body) = delivery_health(&agent).await;
    assert_eq!(code, 200, "while delivering: {body:#}");
    assert_eq!(body["status"], "healthy", "{body:#}");
    assert_eq!(body["sinks"]["out"]["healthy"], true, "{body:#}");
    let last_delivery = receiver
        .requests()
        .iter()
        .filter_map(|r| r.answered)
        .max()
        .unwrap();

    receiver.set_mode(Mode::Status(503));
    let during = numbered_lines("health during", 0, 20);
    ingest.post_ok(&during).await;
    let (flipped, body) = wait_for_delivery_health(&agent, 503, SHORT).await;
    assert!(
        flipped - last_delivery >= Duration::from_secs(2),
        "unhealthy {:?} after the last delivery, before alert_after (2s): {body:#}",
        flipped - last_delivery
    );
    assert_unhealthy_for_out(&body);
    wait_until(
        SHORT,
        "an error log while the sink stays down",
        async || agent.stderr_text().contains("sink still down"),
    )
    .await;

    receiver.set_mode(Mode::Ok);
    let (_, body) = wait_for_delivery_health(&agent, 200, DELIVERY).await;
    assert_eq!(body["status"], "healthy", "{body:#}");
    receiver.wait_for_lines(&during, SHORT).await;
    let stderr = agent.stderr_text();
    for (level, words) in [
        ("WARN", "sink failing"),
        ("ERROR", "sink still down"),
        ("INFO", "sink recovered"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(level) && l.contains(words)),
            "no {level} line saying {words:?} in the agent's stderr"
        );
    }
}

// An agent idle for longer than alert_after has made no progress only because there was
// nothing to deliver: the first failed request after that is not yet an outage.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_period_longer_than_alert_after_does_not_count_as_an_outage() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = agent_alerting_after(&receiver, port, "").await;
    let ingest = Ingest::new(port);
    let before = numbered_lines("idle before", 0, 20);
    ingest.post_ok(&before).await;
    receiver.wait_for_lines(&before, DELIVERY).await;
    // Deliberately idle for longer than alert_after (2s), with nothing to deliver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, body) = delivery_health(&agent).await;
    assert_eq!(code, 200, "idle with an empty backlog: {body:#}");

    receiver.set_mode(Mode::Status(503));
    let posted = Instant::now();
    ingest.post_ok(&numbered_lines("idle after", 0, 20)).await;
    receiver
        .wait_for_request("was answered 503", SHORT, |r| {
            r.outcome == Outcome::Answered(503)
        })
        .await;
    let (code, body) = delivery_health(&agent).await;
    let waited = posted.elapsed();
    if waited < Duration::from_secs(2) {
        assert_eq!(
            code, 200,
            "{waited:?} into an outage (alert_after 2s) after an idle period, the sink is \
             already unhealthy: {body:#}"
        );
    } else {
        // A loaded machine: the moment to look has passed. The check below still holds.
        eprintln!("NOTE: {waited:?} passed before health could be read; the not-yet-unhealthy check is left out this run");
    }
    let (flipped, body) = wait_for_delivery_health(&agent, 503, SHORT).await;
    assert!(
        flipped - posted >= Duration::from_secs(2),
        "unhealthy {:?} into the outage: {body:#}",
        flipped - posted
    );
    assert_unhealthy_for_out(&body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_receiver_never_answers_is_cut_at_request_timeout_and_delivery_resumes() {
    let receiver = Receiver::start(Mode::Stall).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            named_http_sink(
                "out",
                &receiver.url(),
                &["in"],
                50,
                "request_timeout = \"1s\"\nstall_timeout = \"2s\""
            )
        ))
        .start()
        .await;
    let pid = agent.pid();
    let lines = numbered_lines("stall", 0, 40);
    Ingest::new(port).post_ok(&lines).await;
    wait_until(SHORT, "two stalled requests", async || {
        receiver
            .requests()
            .iter()
            .filter(|r| r.outcome == Outcome::Stalled)
            .count()
            >= 2
    })
    .await;
    let stalled: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.outcome == Outcome::Stalled)
        .collect();
    assert_eq!(
        stalled[0].seq_range(),
        stalled[1].seq_range(),
        "the retry is the same batch"
    );
    let apart = stalled[1].arrived - stalled[0].arrived;
    // request_timeout 1s, then a backoff of at most 500ms.
    assert!(
        // request_timeout (1s) + max_backoff (500ms), and a generous margin for a loaded
        // machine: what matters is that it was cut, not hung for good.
        apart >= Duration::from_millis(1000)
            && apart < Duration::from_millis(1500) + Duration::from_secs(10),
        "a hung request was given up after {apart:?} (request_timeout 1s, max_backoff 500ms)"
    );

    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&lines, SHORT).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_eq!(agent.pid(), pid, "the agent was restarted");
    let retries = agent
        .metric("gapless_sink_retries_total", &[("sink", "out")])
        .await;
    let restarts = agent
        .metric("gapless_sink_watchdog_restarts_total", &[("sink", "out")])
        .await;
    eprintln!("retries {retries:?}, watchdog restarts {restarts:?}");
    assert!(
        retries >= Some(1.0) || restarts >= Some(1.0),
        "neither gapless_sink_retries_total ({retries:?}) nor \
         gapless_sink_watchdog_restarts_total ({restarts:?}) counted the hung requests"
    );
}

// The watchdog is for an uploader stuck while data waits. A sink that was idle (caught up,
// nothing to send) for longer than stall_timeout and then fills a batch is not stuck.
#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_leaves_alone_an_uploader_that_was_idle_and_is_filling_a_batch() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            r#"{}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "{}"
batch = {{ max_events = 1000, timeout = "1s" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
stall_timeout = "2s"
"#,
            http_source("in", port, ""),
            receiver.url()
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let first = numbered_lines("watchdog idle before", 0, 1);
    ingest.post_ok(&first).await;
    receiver.wait_for_lines(&first, SHORT).await;
    // Deliberately idle for longer than stall_timeout (2s), with nothing to deliver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = numbered_lines("watchdog idle after", 0, 1);
    ingest.post_ok(&second).await;
    receiver.wait_for_lines(&second, SHORT).await;

    let restarts = agent
        .metric("gapless_sink_watchdog_restarts_total", &[("sink", "out")])
        .await;
    let stderr = agent.stderr_text();
    let logged: Vec<&str> = stderr.lines().filter(|l| l.contains("watchdog")).collect();
    assert!(
        restarts == Some(0.0) && logged.is_empty(),
        "the watchdog restarted a healthy uploader filling its first batch after an idle \
         period: gapless_sink_watchdog_restarts_total = {restarts:?}; log: {logged:#?}"
    );
}
