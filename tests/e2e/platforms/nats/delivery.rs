//! What arrives and how: one message per event, in order, under its `Nats-Msg-Id`, with
//! the agent id and the seq; records the sink's `inputs` skip show up as seqs between a
//! message's `Gapless-Prev-Seq` and its own; no stream for the subject is an alarm naming
//! it, and the backlog arrives once the stream exists; bad configs are refused.

use std::ffi::OsStr;

use super::*;
use crate::harness::agent::run_command;
use crate::harness::nats::NatsServer;

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_one_message_in_order_under_its_msg_id_with_the_agent_id_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let s = start(&nats.url(), 10).await;
    let lines = numbered_lines("nats once", 0, 50);
    s.ingest.post_ok(&lines).await;
    let stored = wait_for_stream(&nats.url(), &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
    // Stream order is seq order: batches are published one after the other.
    let seqs: Vec<u64> = stored
        .iter()
        .map(|m| m.event["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(
        stored.iter().map(|m| m.stream_seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    for m in &stored {
        assert_eq!(m.event["agent_id"], s.agent_id.as_str(), "{}", m.event);
        assert_eq!(m.event["source"], "in", "{}", m.event);
    }
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["bus"]["backlog_events"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn seqs_the_inputs_skip_lie_between_a_messages_prev_seq_and_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let other = free_port();
    let s = start_with(&http_source("other", other, ""), &sink(&nats.url(), 7, "")).await;
    let skipped = Ingest::new(other);
    let mut lines = Vec::new();
    for round in 0..5 {
        let ours = numbered_lines(&format!("nats in {round}"), 0, 6);
        s.ingest.post_ok(&ours).await;
        lines.extend(ours);
        skipped
            .post_ok(&numbered_lines(&format!("nats other {round}"), 0, 3))
            .await;
    }
    let stored = wait_for_stream(&nats.url(), &s.agent_id, lines.len()).await;
    let events: Vec<Value> = stored.iter().map(|m| m.event.clone()).collect();
    check_delivery(&lines, &events).assert_exactly_once();
    // Each message accounts for the seqs from after its prev seq to its own: together,
    // every seq from 1 on, once, with the skipped ones inside the accounts.
    let mut next = 1;
    let mut gaps = 0;
    for m in &stored {
        let seq = m.event["seq"].as_u64().unwrap();
        assert_eq!(m.prev_seq + 1, next, "message {seq} does not follow on");
        gaps += seq - next;
        next = seq + 1;
    }
    assert_eq!(
        gaps, 12,
        "the other source's records before the last of ours"
    );
}

// A stream for the subject is an operator's job: until it exists, the sink says so in
// /health/delivery and /status, naming the subject, and keeps every event.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_stream_the_alarm_names_the_subject_and_the_backlog_arrives_once_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    let s = start_with("", &sink(&nats.url(), 10, "alert_after = \"1s\"")).await;
    let lines = numbered_lines("nats no stream", 0, 30);
    s.ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        s.agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let status = s.agent.status_json().await;
    let bus = &status["sinks"]["bus"];
    assert!(
        bus["last_error"].as_str().is_some_and(
            |e| e.contains(&format!("{SUBJECT:?}")) && e.contains("no JetStream stream")
        ),
        "{bus:#}"
    );
    assert_eq!(bus["backlog_events"], 30, "{bus:#}");
    assert!(
        s.agent.stderr_text().contains(SUBJECT),
        "the error log names the subject: {}",
        s.agent.stderr_tail()
    );
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let stored = wait_for_stream(&nats.url(), &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
    wait_until(SHORT, "/health/delivery answering 200 again", async || {
        s.agent.api_get("/health/delivery").await.0 == 200
    })
    .await;
}

#[test]
fn a_bad_url_or_a_wildcard_subject_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (url, subject, key) in [
        ("http://127.0.0.1:4222", SUBJECT, "sinks.bus.url"),
        ("nats://127.0.0.1:4222", "logs.*", "sinks.bus.subject"),
    ] {
        let path = dir.path().join("gapless.toml");
        std::fs::write(
            &path,
            format!(
                "data_dir = {}\n[sources.in]\ntype = \"stdin\"\n[sinks.bus]\ntype = \"nats\"\nurl = \"{url}\"\nsubject = \"{subject}\"\n",
                toml_path(dir.path())
            ),
        )
        .unwrap();
        let (status, _, stderr) = run_command(&[
            OsStr::new("validate"),
            OsStr::new("--config"),
            path.as_os_str(),
        ]);
        assert!(!status.success(), "{url} {subject} validated");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

// The server takes messages of at most `max_payload` bytes (headers included): a larger
// event is refused for good without being sent — a dead letter, announced in the stream
// by a notice covering its seq — and the others are delivered around it.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_max_payload_is_dead_lettered_with_a_notice_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with(dir.path(), "max_payload: 4096\n").await;
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let s = start(&nats.url(), 10).await;
    let mut lines = numbered_lines("nats payload", 0, 9);
    lines.insert(4, format!("nats payload too large {}", "y".repeat(6000)));
    s.ingest.post_ok(&lines).await;
    // 9 events and the notice.
    wait_for_messages(&nats.url(), STREAM, 10).await;
    let stored = read_stream(&nats.url(), STREAM).await;
    assert_eq!(stored.len(), 10);
    let notices: Vec<&Stored> = stored
        .iter()
        .filter(|m| m.event["gapless"] == "gap")
        .collect();
    assert_eq!(notices.len(), 1, "{stored:?}");
    let notice = &notices[0].event;
    assert_eq!(notice["reason"], "dead_letter", "{notice}");
    assert_eq!(
        (notice["first_seq"].as_u64(), notice["last_seq"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(notices[0].msg_id, format!("{}-5", s.agent_id));
    let events: Vec<Value> = stored
        .iter()
        .filter(|m| m.event.get("gapless").is_none())
        .map(|m| m.event.clone())
        .collect();
    let mut kept = lines.clone();
    kept.remove(4);
    check_delivery(&kept, &events).assert_exactly_once();
    let files = std::fs::read_dir(s.agent.data_dir().join("dead-letter").join("bus"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(files > 0, "the refused event is in the dead-letter queue");
    wait_for_status(&s.agent, "every event delivered or dead-lettered", |st| {
        st["sinks"]["bus"]["backlog_events"] == 0 && st["sinks"]["bus"]["dead_lettered_events"] == 1
    })
    .await;
}

// A server that requires a token: the sink reads `auth.token_file` at each connect. A wrong
// token is an alarm (a person must fix it), retried, never a drop; once the file holds the
// right token, everything arrives, and the token reaches no log line or /status.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_an_alarm_until_the_token_file_is_fixed_and_is_never_shown() {
    const TOKEN: &str = "s3cret-nats-token";
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start_with(
        dir.path(),
        &format!("authorization {{ token: \"{TOKEN}\" }}\n"),
    )
    .await;
    let harness_url = format!("nats://{TOKEN}@127.0.0.1:{}", nats.port);
    create_stream(&harness_url, STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let token_file = dir.path().join("nats.token");
    std::fs::write(&token_file, "not-the-token\n").unwrap();
    let s = start_with(
        "",
        &sink(
            &nats.url(),
            10,
            &format!(
                "alert_after = \"1s\"\nauth = {{ token_file = {} }}",
                toml_path(&token_file)
            ),
        ),
    )
    .await;
    let lines = numbered_lines("nats token", 0, 20);
    s.ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        s.agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let status = s.agent.status_json().await;
    assert!(
        status["sinks"]["bus"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect to NATS")),
        "{status:#}"
    );
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let stored = wait_for_stream(&harness_url, &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
    let said = format!("{}{}{status}", s.agent.stderr_text(), s.agent.stdout_text());
    assert!(
        !said.contains(TOKEN) && !said.contains("not-the-token"),
        "a token was shown"
    );
}
