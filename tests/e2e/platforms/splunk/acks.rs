//! Indexer acknowledgement: the sink's one channel on every request; the cursor held until
//! every ackId of a batch read true, and only over a contiguous prefix when they come true
//! out of order; a batch resent after `ack_timeout` when its acks never come true, or its
//! ack queries keep failing, or the agent was killed before; a token without
//! acknowledgement taken as such (each event indexed once); a missing channel (code 10)
//! retried with an alarm, never dropped.

use std::time::{Duration, Instant};

use crate::harness::platforms::splunk::{AckAfter, Hec, Request};
use crate::harness::*;

use super::*;

/// How long acks take to come true in the tests that look at the cursor before they do:
/// long enough for a loaded CI machine to look in time.
const ACK_DELAY: Duration = Duration::from_secs(4);

/// Sink keys for acknowledgement with a quick poll; `extra` is added.
fn with_acks(extra: &str) -> String {
    format!("indexer_acknowledgement = true\nack_poll_interval = \"100ms\"\n{extra}")
}

fn event_requests(hec: &Hec) -> Vec<Request> {
    hec.requests()
        .into_iter()
        .filter(|r| r.is_event())
        .collect()
}

/// The ackIds an accepted event request was given.
fn ack_ids(requests: &[Request]) -> Vec<u64> {
    requests
        .iter()
        .filter_map(|r| r.answer["ackId"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_acknowledgement_every_request_carries_the_sinks_one_channel() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    let (agent, ingest) = start_agent(&hec, TOKEN, 50, &with_acks("")).await;
    let lines = numbered_lines("channel", 0, 200);
    ingest.post_ok(&lines).await;
    wait_for_seqs(&hec, 200).await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();

    let requests = hec.requests();
    let channels: std::collections::BTreeSet<String> = requests
        .iter()
        .filter(|r| r.is_event())
        .map(|r| {
            r.headers
                .get("x-splunk-request-channel")
                .cloned()
                .unwrap_or_else(|| panic!("an event request without a channel: {r:?}"))
        })
        .collect();
    assert_eq!(channels.len(), 1, "one channel per sink: {channels:?}");
    let channel = channels.first().unwrap();
    assert!(
        uuid::Uuid::parse_str(channel).is_ok(),
        "{channel} is not a GUID"
    );
    let polls: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path.starts_with("/services/collector/ack"))
        .collect();
    assert!(
        !polls.is_empty(),
        "the sink never asked for its acks; {}",
        hec.summary()
    );
    for p in polls {
        assert_eq!(p.status, 200, "{p:?}");
        let names_channel = p.path.contains(channel.as_str())
            || p.headers.get("x-splunk-request-channel") == Some(channel);
        assert!(names_channel, "an ack poll for another channel: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cursor_advances_only_once_every_ack_of_the_batch_read_true() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    hec.set_ack_after(AckAfter::Delay(ACK_DELAY));
    let (agent, ingest) = start_agent(&hec, TOKEN, 50, &with_acks("")).await;
    ingest.post_ok(&numbered_lines("held", 0, 100)).await;
    wait_until(SHORT, "a request given an ackId", async || {
        !ack_ids(&event_requests(&hec)).is_empty()
    })
    .await;
    let accepted_at = Instant::now();
    // A poll answered false: accepted is not yet delivered.
    wait_until(SHORT, "an ack poll answered false", async || {
        hec.requests().iter().any(|r| {
            r.answer["acks"]
                .as_object()
                .is_some_and(|a| a.values().any(|v| v == false))
        })
    })
    .await;
    let status = agent.status_json().await;
    let out = &status["sinks"]["out"];
    assert!(
        accepted_at.elapsed() < ACK_DELAY,
        "too slow to look before the ack came true; raise ACK_DELAY"
    );
    assert_eq!(out["delivered_events"], 0, "{out:#}");
    assert_eq!(out["backlog_events"], 100, "{out:#}");
    assert!(out["acked_seq"].as_u64().unwrap_or(0) == 0, "{out:#}");

    wait_for_status_within(&agent, DELIVERY, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    assert!(
        accepted_at.elapsed() >= ACK_DELAY,
        "the backlog emptied before the acks came true"
    );
    wait_for_seqs(&hec, 100).await;
    let counts = seq_counts(&hec);
    assert!(
        counts.values().all(|&n| n == 1),
        "resent though acked: {counts:?}"
    );
    let polls = hec
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/services/collector/ack"));
    let trues = polls
        .flat_map(|r| r.answer["acks"].as_object().cloned().unwrap_or_default())
        .filter(|(_, v)| v == true)
        .count();
    assert_eq!(trues, 2, "each ackId reads true once; {}", hec.summary());
}

#[tokio::test(flavor = "multi_thread")]
async fn acks_that_come_true_out_of_order_move_the_cursor_only_over_a_contiguous_prefix() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    hec.set_ack_after(AckAfter::Delay(ACK_DELAY));
    let (agent, ingest) = start_agent(&hec, TOKEN, 25, &with_acks("concurrency = 4")).await;
    ingest.post_ok(&numbered_lines("first", 0, 25)).await;
    wait_until(SHORT, "the first batch given an ackId", async || {
        !ack_ids(&event_requests(&hec)).is_empty()
    })
    .await;
    let first_accepted = Instant::now();
    hec.set_ack_after(AckAfter::Delay(Duration::ZERO));
    ingest.post_ok(&numbered_lines("later", 25, 75)).await;
    wait_until(SHORT, "the later batches' acks read true", async || {
        let trues = hec
            .requests()
            .iter()
            .flat_map(|r| r.answer["acks"].as_object().cloned().unwrap_or_default())
            .filter(|(_, v)| v == true)
            .count();
        trues >= 3
    })
    .await;
    let status = agent.status_json().await;
    let out = &status["sinks"]["out"];
    assert!(
        first_accepted.elapsed() < ACK_DELAY,
        "too slow to look before the first ack came true; raise ACK_DELAY"
    );
    assert!(out["acked_seq"].as_u64().unwrap_or(0) == 0, "{out:#}");
    assert_eq!(out["backlog_events"], 100, "{out:#}");

    wait_for_status_within(&agent, DELIVERY, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    wait_for_seqs(&hec, 100).await;
    assert!(
        seq_counts(&hec).values().all(|&n| n == 1),
        "{}",
        hec.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_before_the_acks_come_true_makes_the_restarted_agent_resend_the_batch() {
    // Crash after HEC accepted the request, before its ack read true: the cursor must not
    // have moved, so the restarted agent sends the batch again.
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    hec.set_ack_after(AckAfter::Never);
    let (mut agent, ingest) = start_agent(&hec, TOKEN, 50, &with_acks("")).await;
    ingest.post_ok(&numbered_lines("unacked", 0, 50)).await;
    wait_until(SHORT, "the batch accepted with an ackId", async || {
        !ack_ids(&event_requests(&hec)).is_empty()
    })
    .await;
    agent.kill9();
    let before = event_requests(&hec).len();
    hec.set_ack_after(AckAfter::Delay(Duration::ZERO));
    agent.restart().await;
    wait_for_seqs(&hec, 50).await;
    assert!(event_requests(&hec).len() > before, "nothing was resent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_acks_never_come_true_is_resent_after_ack_timeout() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    hec.set_ack_after(AckAfter::Never);
    let (agent, ingest) = start_agent(&hec, TOKEN, 50, &with_acks("ack_timeout = \"2s\"")).await;
    let lines = numbered_lines("lost", 0, 50);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "the batch accepted with an ackId", async || {
        !ack_ids(&event_requests(&hec)).is_empty()
    })
    .await;
    let first = event_requests(&hec)[0].arrived;
    hec.set_ack_after(AckAfter::Delay(Duration::ZERO));
    wait_for_seqs(&hec, 50).await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();
    let resent = event_requests(&hec)
        .into_iter()
        .find(|r| r.answer["ackId"].as_u64().is_some_and(|id| id > 0))
        .expect("a second accepted request");
    let waited = resent.arrived - first;
    assert!(
        waited >= Duration::from_millis(1900),
        "resent {waited:?} after the first send, before ack_timeout (2 s)"
    );
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_ack_queries_fail_until_ack_timeout_is_resent() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    hec.set_ack_busy(true);
    let extra = with_acks("ack_timeout = \"1s\"");
    let (agent, ingest) = start_agent(&hec, TOKEN, 50, &extra).await;
    let lines = numbered_lines("ack busy", 0, 50);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "the batch sent twice", async || {
        ack_ids(&event_requests(&hec)).len() >= 2
    })
    .await;
    let busy_polls = hec
        .requests()
        .iter()
        .filter(|r| r.code() == Some(9))
        .count();
    assert!(busy_polls >= 2, "{}", hec.summary());
    hec.set_ack_busy(false);
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    // Each send was indexed (its ack was only unreadable): duplicates, no loss.
    check_delivery(&lines, &hec.events()).assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_without_a_channel_on_a_token_with_acknowledgement_retries_with_an_alarm() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    let (agent, ingest) = start_agent(&hec, TOKEN, 50, "alert_after = \"1s\"").await;
    ingest.post_ok(&numbered_lines("no channel", 0, 50)).await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let refused = hec
        .requests()
        .iter()
        .filter(|r| r.code() == Some(10))
        .count();
    assert!(refused >= 2, "code 10 should be retried; {}", hec.summary());
    let status = agent.status_json().await;
    assert_eq!(
        status["sinks"]["out"]["dead_lettered_events"], 0,
        "{status:#}"
    );
    assert_eq!(status["sinks"]["out"]["backlog_events"], 50, "{status:#}");
}

/// HEC answers 200 without an `ackId` when the token has acknowledgement off: it took the
/// events as it does without acknowledgement ("when HEC receives an event successfully, it
/// immediately sends an HTTP Status 200", About HEC Indexer Acknowledgment; Vector's
/// splunk_hec sink, RFC 9465 observed on Splunk 7.3.2, falls back to the status code when
/// no `ackId` is found). Sending them again would get them indexed again, each time: the
/// sink takes them as delivered and says once why acknowledgement does not work.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_acknowledgement_gets_each_event_indexed_once_and_an_error_said_once() {
    let hec = Hec::builder(TOKEN).start().await;
    let (agent, ingest) = start_agent(&hec, TOKEN, 10, &with_acks("")).await;
    let lines = numbered_lines("ack disabled", 0, 50);
    ingest.post_ok(&lines).await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();
    let said = agent.stderr_text();
    let errors = said
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("ackId"))
        .count();
    assert_eq!(
        errors, 1,
        "the misconfiguration should be said once:\n{said}"
    );
}

/// [`crate::harness::agent::wait_for_status`] with its own deadline.
async fn wait_for_status_within(
    agent: &Agent,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let last = agent.status_json().await;
        if cond(&last) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for /status to show {what}; last: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
