//! Delivery without acknowledgement: every seq exactly once with its indexed fields; a
//! busy (also part-way) or failing collector retried, `Retry-After` honoured; a request
//! over `max_content_length` split; one malformed event dead-lettered alone, announced by a
//! notice and replayed on demand; an index the token may not use alarmed; a refused or
//! missing token retried with an alarm (never dropped) until the token file is fixed; the
//! token kept out of everything the agent says; `validate` refusing a sink without one.

use std::time::Duration;

use serde_json::Value;

use crate::harness::capture::{gap_events, gap_range};
use crate::harness::platforms::splunk::{Cue, Hec, Partial};
use crate::harness::snippets::http_source;
use crate::harness::*;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_seq_is_indexed_exactly_once_with_its_indexed_fields() {
    let hec = Hec::builder(TOKEN)
        .allowed_indexes(&["gapless"])
        .start()
        .await;
    let (agent, ingest) = start_agent(
        &hec,
        TOKEN,
        50,
        "index = \"gapless\"\nsourcetype = \"gapless:json\"",
    )
    .await;
    let lines = numbered_lines("splunk", 0, 500);
    ingest.post_ok(&lines).await;
    wait_for_seqs(&hec, 500).await;

    let counts = seq_counts(&hec);
    assert!(
        counts.values().all(|&n| n == 1) && counts.len() == 500,
        "not every seq exactly once: {:?}; {}",
        counts.iter().filter(|(_, &n)| n != 1).collect::<Vec<_>>(),
        hec.summary()
    );
    check_delivery(&lines, &hec.events()).assert_exactly_once();
    let agent_id = agent.status_json().await["agent_id"].clone();
    for i in hec.indexed() {
        let seq = i.event["seq"].as_u64().unwrap();
        assert_eq!(i.fields["seq"], seq.to_string(), "{i:?}");
        assert_eq!(i.fields["agent_id"], agent_id, "{i:?}");
        assert_eq!(i.index.as_deref(), Some("gapless"));
        assert_eq!(i.sourcetype.as_deref(), Some("gapless:json"));
        assert_eq!(i.host.as_deref(), i.event["host"].as_str(), "{i:?}");
        assert_eq!(i.source.as_deref(), Some("in"), "the source's name: {i:?}");
        let time = i.time.expect("every event has a time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - time).abs() < 600.0, "time {time} is not now ({now})");
    }
    for r in hec.requests().iter().filter(|r| r.is_event()) {
        assert_eq!(
            r.headers.get("content-encoding").map(String::as_str),
            Some("gzip")
        );
        assert_eq!(r.code(), Some(0), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hec_time_is_the_events_own_timestamp_to_the_microsecond() {
    let hec = Hec::builder(TOKEN).start().await;
    let (_agent, ingest) = start_agent(&hec, TOKEN, 10, "").await;
    // 2020-01-02T03:04:05Z is 1577934245 s after the epoch.
    let body = concat!(
        r#"{"message":"old","timestamp":"2020-01-02T03:04:05.123456Z"}"#,
        "\n",
        r#"{"message":"offset","timestamp":"2020-01-02T05:04:05.000001+02:00"}"#,
        "\n"
    );
    let answer = ingest
        .post("application/x-ndjson", &[], body.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for_seqs(&hec, 2).await;
    let times: Vec<(Value, f64)> = hec
        .indexed()
        .iter()
        .map(|i| (i.event["message"].clone(), i.time.unwrap()))
        .collect();
    for (message, want) in [("old", 1577934245.123456), ("offset", 1577934245.000001)] {
        let (_, got) = times
            .iter()
            .find(|(m, _)| m == message)
            .unwrap_or_else(|| panic!("no {message} in {times:?}"));
        assert!(
            (got - want).abs() < 5e-7,
            "{message}: time {got:.6}, want {want:.6}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_or_failing_collector_is_retried_honouring_retry_after() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.script([
        Cue::Busy {
            retry_after_secs: Some(1),
        },
        Cue::Busy {
            retry_after_secs: None,
        },
        Cue::InternalError,
    ]);
    let (_agent, ingest) = start_agent(&hec, TOKEN, 100, "concurrency = 1").await;
    let lines = numbered_lines("busy", 0, 100);
    ingest.post_ok(&lines).await;
    wait_for_seqs(&hec, 100).await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();

    let requests: Vec<_> = hec
        .requests()
        .into_iter()
        .filter(|r| r.is_event())
        .collect();
    let codes: Vec<_> = requests.iter().map(|r| r.code()).collect();
    assert_eq!(
        &codes[..4],
        [Some(9), Some(9), Some(8), Some(0)],
        "{}",
        hec.summary()
    );
    let waited = requests[1].arrived - requests[0].arrived;
    assert!(
        waited >= Duration::from_millis(950),
        "the retry after a 503 with Retry-After: 1 came after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_busy_part_way_through_a_request_loses_nothing() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.script([Cue::BusyAfter { events: 10 }]);
    let (_agent, ingest) = start_agent(&hec, TOKEN, 30, "concurrency = 1").await;
    let lines = numbered_lines("part way", 0, 30);
    ingest.post_ok(&lines).await;
    wait_for_seqs(&hec, 30).await;
    let delivery = check_delivery(&lines, &hec.events());
    delivery.assert_nothing_lost();
    // The 10 indexed before HEC got busy come again with the retry: no id to tell them by.
    assert!(delivery.duplicates <= 10, "{delivery:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_the_collectors_max_content_length_is_split() {
    let hec = Hec::builder(TOKEN).max_content_length(8_000).start().await;
    let (_agent, ingest) = start_agent(&hec, TOKEN, 100, "compression = \"none\"").await;
    let lines = numbered_lines("split", 0, 100);
    ingest.post_ok(&lines).await;
    wait_for_seqs(&hec, 100).await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();
    let too_large = hec.requests().iter().filter(|r| r.status == 413).count();
    assert!(
        too_large >= 1,
        "no request was over the limit; {}",
        hec.summary()
    );
}

/// Sends 30 lines, the 15th malformed in the collector's eyes, in one request of 30.
async fn one_malformed_event(partial: Partial) {
    let hec = Hec::builder(TOKEN).partial(partial).start().await;
    hec.set_poison(Some("POISON"));
    let (agent, ingest) = start_agent(&hec, TOKEN, 30, "concurrency = 1").await;
    let mut lines = numbered_lines("dead letter", 0, 30);
    lines[14].push_str(" POISON");
    ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "a dead_letter notice", async || {
        !gap_events(&hec.events(), "dead_letter").is_empty()
    })
    .await;
    let mut others = lines.clone();
    let poisoned = others.remove(14);
    wait_for_seqs_but(&hec, 30, 15).await;

    let notices = gap_events(&hec.events(), "dead_letter");
    assert_eq!(notices.len(), 1, "{notices:?}");
    let notice = &notices[0];
    assert_eq!(
        gap_range(notice),
        (15, 15),
        "only the malformed event: {notice}"
    );
    assert_eq!(notice["events"], 1, "{notice}");
    assert_eq!(notice["status"], 400, "{notice}");
    let error = notice["error"].as_str().unwrap_or_default();
    assert!(
        error.contains('6'),
        "the notice should name code 6: {notice}"
    );
    let file = notice["dead_letter_file"]
        .as_str()
        .expect("a dead_letter_file");
    let stored = std::fs::read_to_string(file).expect("the dead-letter file exists");
    assert!(stored.contains("POISON"), "{file} holds:\n{stored}");
    assert_eq!(
        stored.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{stored}"
    );

    let delivery = check_delivery(&others, &hec.events());
    delivery.assert_nothing_lost();
    assert!(!messages(&hec).contains(&poisoned.clone().into()));
    if partial == Partial::Nothing {
        delivery.assert_exactly_once();
    } else {
        // The 14 before it were indexed with the rejected request and are resent: HEC has
        // no id to de-duplicate them by.
        assert!(delivery.duplicates <= 14, "{delivery:?}");
    }
    wait_for_status(&agent, "one dead-lettered event", |s| {
        s["sinks"]["out"]["dead_lettered_events"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_lettered_event_is_replayed_into_hec_once_hec_takes_it() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.set_poison(Some("POISON"));
    let (agent, ingest) = start_agent(&hec, TOKEN, 10, "").await;
    let mut lines = numbered_lines("replay", 0, 10);
    lines[3].push_str(" POISON");
    ingest.post_ok(&lines).await;
    wait_for_seqs_but(&hec, 10, 4).await;
    wait_for_status(&agent, "one dead-lettered event", |s| {
        s["sinks"]["out"]["dead_lettered_events"] == 1
    })
    .await;

    hec.set_poison(None);
    let (status, stdout, stderr) = crate::harness::agent::run_command_async(&[
        "dead-letter".as_ref(),
        "replay".as_ref(),
        "--sink".as_ref(),
        "out".as_ref(),
        "--config".as_ref(),
        agent.config_path().as_os_str(),
    ])
    .await;
    assert!(
        status.success(),
        "replay exited {status}:\n{stdout}\n{stderr}"
    );
    let replayed: Vec<_> = hec
        .indexed()
        .into_iter()
        .filter(|i| i.event["seq"] == 4 && i.event["gapless"] != "gap")
        .collect();
    assert_eq!(replayed.len(), 1, "{}", hec.summary());
    assert_eq!(replayed[0].event["message"], lines[3].as_str());
    assert_eq!(
        replayed[0].fields["seq"], "4",
        "replayed with its indexed fields"
    );
    let left = std::fs::read_dir(agent.data_dir().join("dead-letter").join("out"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "replay left dead-letter files behind");
}

/// Waits until every seq of `1..=last` but `except` was indexed.
async fn wait_for_seqs_but(hec: &Hec, last: u64, except: u64) {
    wait_until(
        DELIVERY,
        format!("seqs 1..={last} but {except}"),
        async || missing_seqs(hec, last) == [except],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_is_dead_lettered_alone_and_the_rest_delivered() {
    one_malformed_event(Partial::Prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_is_dead_lettered_alone_when_hec_indexed_nothing_of_its_request() {
    one_malformed_event(Partial::Nothing).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_retried_with_an_alarm_until_the_token_file_is_fixed() {
    let hec = Hec::builder(TOKEN).start().await;
    let (agent, ingest) = start_agent(&hec, "not-the-token", 50, "alert_after = \"1s\"").await;
    let lines = numbered_lines("token", 0, 100);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let status = agent.status_json().await;
    let out = &status["sinks"]["out"];
    assert_eq!(out["dead_lettered_events"], 0, "{out:#}");
    assert_eq!(out["backlog_events"], 100, "{out:#}");
    assert!(
        out["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{out:#}"
    );
    assert!(hec.indexed().is_empty());
    let refused = hec
        .requests()
        .iter()
        .filter(|r| r.code() == Some(4))
        .count();
    assert!(refused >= 2, "the 403 should be retried; {}", hec.summary());

    std::fs::write(
        agent.config_path().with_file_name("hec.token"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    wait_for_seqs(&hec, 100).await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();
    let said = format!("{}{}{status}", agent.stderr_text(), agent.stdout_text());
    assert!(
        !said.contains("not-the-token"),
        "the agent printed its token:\n{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_appears_in_what_the_agent_says() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.script([
        Cue::Busy {
            retry_after_secs: None,
        },
        Cue::InternalError,
    ]);
    // Inline this time, and with debug logs: the most places it could leak from.
    let port = free_port();
    let builder = Agent::builder()
        .listening_on(port)
        .env("GAPLESS_LOG", "debug");
    let sink = splunk_sink(&hec, &builder.path("unused"), 10, "");
    let sink = inline_token(&sink, TOKEN);
    let mut agent = builder
        .config(&format!("{}{sink}", http_source("in", port, "")))
        .start()
        .await;
    Ingest::new(port)
        .post_ok(&numbered_lines("secret", 0, 20))
        .await;
    wait_for_seqs(&hec, 20).await;
    let status = agent.status_json().await.to_string();
    let metrics = agent.metrics_text().await;
    let health = agent.api_get("/health/delivery").await.1;
    agent.sigterm();
    agent.wait_exit(SHORT).await;
    for (what, text) in [
        ("stderr", agent.stderr_text()),
        ("stdout", agent.stdout_text()),
        ("/status", status),
        ("/metrics", metrics),
        ("/health/delivery", health),
    ] {
        assert!(
            !text.contains(TOKEN),
            "the token appears in {what}:\n{text}"
        );
    }
}

/// The sink table with `token = "<token>"` in place of its `token_file` line.
fn inline_token(sink: &str, token: &str) -> String {
    sink.lines()
        .map(|l| {
            if l.starts_with("token_file") {
                format!("token = \"{token}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn validate_does_not_print_an_inline_token_next_to_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let hec_endpoint = "http://127.0.0.1:9";
    let config = format!(
        "data_dir = {}\n\n[sources.in]\ntype = \"stdin\"\n\n\
         [sinks.out]\ntype = \"splunk_hec\"\ninputs = [\"in\"]\nendpoint = \"{hec_endpoint}\"\n\
         token = \"{TOKEN}\"\nindexer_acknowledgement = true\nack_timeout = \"soon\"\n",
        toml_path(&dir.path().join("data"))
    );
    let path = dir.path().join("gapless.toml");
    std::fs::write(&path, config).unwrap();
    let (status, stdout, stderr) = crate::harness::agent::run_command(&[
        "validate".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
    assert!(
        !status.success(),
        "validate accepted ack_timeout = \"soon\""
    );
    assert!(stderr.contains("ack_timeout"), "{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains(TOKEN),
        "validate printed the token:\n{stderr}"
    );
}

#[test]
fn validate_refuses_a_splunk_hec_sink_without_a_token_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = {}\n\n[sources.in]\ntype = \"stdin\"\n\n\
         [sinks.out]\ntype = \"splunk_hec\"\ninputs = [\"in\"]\nendpoint = \"http://127.0.0.1:9\"\n",
        toml_path(&dir.path().join("data"))
    );
    let path = dir.path().join("gapless.toml");
    std::fs::write(&path, config).unwrap();
    let (status, _, stderr) = crate::harness::agent::run_command(&[
        "validate".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
    assert!(
        !status.success(),
        "validate accepted a splunk_hec sink without a token"
    );
    assert!(
        stderr.contains("token"),
        "the error should name the token key: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_token_file_is_retried_with_an_alarm_until_the_token_is_written() {
    let hec = Hec::builder(TOKEN).start().await;
    let (agent, ingest) = start_agent(&hec, "", 50, "alert_after = \"1s\"").await;
    let lines = numbered_lines("no token", 0, 50);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let unauthorized = hec.requests().iter().filter(|r| r.status == 401).count();
    assert!(
        unauthorized >= 2,
        "the 401 should be retried; {}",
        hec.summary()
    );
    let status = agent.status_json().await;
    assert_eq!(
        status["sinks"]["out"]["dead_lettered_events"], 0,
        "{status:#}"
    );

    std::fs::write(agent.config_path().with_file_name("hec.token"), TOKEN).unwrap();
    wait_for_seqs(&hec, 50).await;
    check_delivery(&lines, &hec.events()).assert_exactly_once();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_the_token_may_not_write_to_raises_an_alarm_naming_code_7() {
    let hec = Hec::builder(TOKEN).allowed_indexes(&["main"]).start().await;
    let (agent, ingest) = start_agent(
        &hec,
        TOKEN,
        10,
        "index = \"secret\"\nalert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    ingest.post_ok(&numbered_lines("index", 0, 30)).await;
    wait_until(SHORT, "a request refused with code 7", async || {
        hec.requests().iter().any(|r| r.code() == Some(7))
    })
    .await;
    // Code 7 is a configuration problem: every request will be refused until the index or
    // the token's allowed indexes change, dead-letter notices included (they name the same
    // index). The sink must say so rather than look healthy.
    wait_until(SHORT, "/health/delivery answering 503", async || {
        agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let (_, health) = agent.api_get("/health/delivery").await;
    let status = agent.status_json().await;
    let error = status["sinks"]["out"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("code 7"),
        "/status does not say why the sink holds: {:#}\n/health/delivery: {health}",
        status["sinks"]["out"]
    );
}
