//! How the sink takes each answer of the Logs Ingestion API: 413 splits, 429/503 wait
//! `Retry-After`, 403 (no role) is retried with an alarm and never dropped, other 4xx go
//! to the dead-letter queue with a notice, and `kill -9` during an outage loses nothing.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::harness::agent::run_command_async;
use crate::harness::platforms::azure::{Fault, IngestRequest};
use crate::harness::receiver::Outcome;
use crate::harness::*;

/// The calls answered `status`, and the call after each (the retry), if any.
fn answered_then_next(
    requests: &[IngestRequest],
    status: u16,
) -> Vec<(IngestRequest, Option<IngestRequest>)> {
    requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status() == Some(status))
        .map(|(i, r)| (r.clone(), requests.get(i + 1).cloned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_413_splits_the_call_and_every_row_is_stored() {
    let azure = Azure::start().await;
    azure.script(1, Fault::Status(413));
    let (_agent, ingest) = start_agent(
        &azure,
        "max_events = 200, timeout = \"500ms\"",
        "concurrency = 1",
    )
    .await;
    let lines = numbered_lines("azure 413", 0, 200);
    ingest.post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    let requests = azure.requests();
    let (refused, next) = answered_then_next(&requests, 413).remove(0);
    let next = next.expect("a call after the 413");
    assert!(
        next.rows.len() < refused.rows.len(),
        "after a 413 for {} rows the agent sent {} rows: not split",
        refused.rows.len(),
        next.rows.len()
    );
    assert!(
        dead_letter_files(_agent.data_dir()).is_empty(),
        "a 413 dead-lettered rows"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_of_a_429_and_a_503_is_waited_before_the_next_call() {
    let azure = Azure::start().await;
    azure.script(
        1,
        Fault::RetryAfter {
            status: 429,
            secs: 2,
        },
    );
    azure.script(
        1,
        Fault::RetryAfter {
            status: 503,
            secs: 1,
        },
    );
    let (_agent, ingest) = start_agent(&azure, "max_events = 100", "concurrency = 1").await;
    let lines = numbered_lines("azure retry-after", 0, 50);
    ingest.post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    let requests = azure.requests();
    for (status, secs) in [(429, 2), (503, 1)] {
        let (refused, next) = answered_then_next(&requests, status).remove(0);
        let next = next.unwrap_or_else(|| panic!("no call after the {status}"));
        let waited = next.arrived - refused.arrived;
        assert!(
            waited >= Duration::from_millis(secs * 1000 - 50),
            "the call after a {status} with Retry-After: {secs} came {waited:?} later"
        );
    }
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
}

// Without the Monitoring Metrics Publisher role every call is 403: a configuration
// problem to alarm about, never a reason to drop rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_403_for_a_missing_role_is_retried_with_an_alarm_and_nothing_is_dropped() {
    let azure = Azure::start().await;
    azure.set_role(false);
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 20",
        "alert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    let lines = numbered_lines("azure 403", 0, 100);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "several calls refused with 403", async || {
        azure
            .requests()
            .iter()
            .filter(|r| r.status() == Some(403))
            .count()
            >= 5
    })
    .await;
    wait_until(
        SHORT,
        "/health/delivery naming the missing role, and an ERROR line about it",
        async || {
            let (code, body) = agent.api_get("/health/delivery").await;
            code == 503
                && body.contains("Monitoring Metrics Publisher")
                && agent
                    .stderr_text()
                    .lines()
                    .any(|l| l.contains("ERROR") && l.contains("Monitoring Metrics Publisher"))
        },
    )
    .await;
    assert!(
        dead_letter_files(agent.data_dir()).is_empty() && notices(&azure).is_empty(),
        "a 403 dead-lettered rows: {:?}",
        dead_letter_files(agent.data_dir())
    );
    azure.set_role(true);
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert_secret_not_logged(&agent);
}

// A 400 is final for those rows: they go to data_dir/dead-letter/sentinel/, and a notice row
// tells Sentinel which seqs and where.
#[tokio::test(flavor = "multi_thread")]
async fn a_400_dead_letters_the_call_and_a_notice_row_covers_its_seqs() {
    let azure = Azure::start().await;
    azure.set_fault(Some(Fault::RejectEvents(400)));
    let (agent, ingest) = start_agent(&azure, "max_events = 10", "").await;
    let lines = numbered_lines("azure 400", 0, 30);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "notices covering all 30 seqs", async || {
        notices(&azure)
            .iter()
            .map(|n| n["events"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= 30
    })
    .await;
    let notices = notices(&azure);
    let mut covered: Vec<u64> = Vec::new();
    for n in &notices {
        let (a, z) = (
            n["first_seq"].as_u64().unwrap(),
            n["last_seq"].as_u64().unwrap(),
        );
        covered.extend(a..=z);
        assert_eq!(n["status"], 400, "{n}");
        assert_eq!(
            n["error"], "InvalidRequest",
            "the notice should carry x-ms-error-code: {n}"
        );
        assert_eq!(n["events"].as_u64(), Some(z - a + 1), "{n}");
        assert_eq!(n["seq"].as_u64(), Some(z), "{n}");
        assert!(
            n["TimeGenerated"].is_string(),
            "a notice row without TimeGenerated: {n}"
        );
        let file = n["dead_letter_file"]
            .as_str()
            .unwrap_or_else(|| panic!("{n}"));
        assert!(
            Path::new(file).exists(),
            "{file} named by {n} does not exist"
        );
    }
    covered.sort_unstable();
    assert_eq!(covered, (1..=30).collect::<Vec<u64>>(), "the notices' seqs");
    assert_eq!(dead_letter_files(agent.data_dir()).len(), notices.len());
    assert!(
        event_seqs(&azure.rows()).is_empty(),
        "rejected rows were stored"
    );

    let (status, stdout, stderr) = dead_letter_command(&agent, "list").await;
    assert!(
        status.success(),
        "dead-letter list exited {status}: {stderr}"
    );
    for n in &notices {
        let seqs = format!("seqs {}..={}", n["first_seq"], n["last_seq"]);
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&seqs) && l.contains("400")),
            "dead-letter list does not show {seqs} with its status:\n{stdout}"
        );
    }
}

// Uncompressed this time, to cover `compression = "none"` too.
#[tokio::test(flavor = "multi_thread")]
async fn a_500_a_reset_a_408_and_a_stall_are_retried_until_stored() {
    let azure = Azure::start().await;
    azure.script(2, Fault::Status(500));
    azure.script(1, Fault::Reset);
    azure.script(1, Fault::Status(408));
    azure.script(1, Fault::Stall);
    let (agent, ingest) = start_agent(&azure, "max_events = 25", "compression = \"none\"").await;
    let lines = numbered_lines("azure 5xx", 0, 100);
    ingest.post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert!(dead_letter_files(agent.data_dir()).is_empty());
    assert!(
        azure
            .requests()
            .iter()
            .all(|r| !r.headers.contains_key("content-encoding")),
        "compression = \"none\" but a call was encoded"
    );
    assert_protocol_kept(&azure);
}

// A 404 means a wrong DCR, stream or endpoint: configuration to fix. The agent retries
// with an alarm rather than dead-lettering every row of a misconfigured sink.
#[tokio::test(flavor = "multi_thread")]
async fn a_404_is_retried_with_an_alarm_and_nothing_is_dead_lettered() {
    let azure = Azure::start().await;
    azure.set_fault(Some(Fault::Status(404)));
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 20",
        "alert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    let lines = numbered_lines("azure 404", 0, 60);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "/health/delivery naming the DCR", async || {
        let (code, body) = agent.api_get("/health/delivery").await;
        code == 503 && body.contains("dcr_immutable_id")
    })
    .await;
    assert!(dead_letter_files(agent.data_dir()).is_empty() && notices(&azure).is_empty());
    azure.set_fault(None);
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
}

// kill -9 during an outage (503), then again while a call is in flight (held, never
// answered): after each restart every seq is stored; duplicates are allowed, since the
// API cannot de-duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_an_outage_and_mid_call_loses_no_seq() {
    let azure = Azure::start().await;
    azure.set_fault(Some(Fault::Status(503)));
    let (mut agent, ingest) = start_agent(&azure, "max_events = 50", "").await;
    let first = numbered_lines("azure kill outage", 0, 300);
    ingest.post_ok(&first).await;
    wait_until(SHORT, "calls refused with 503", async || {
        azure
            .requests()
            .iter()
            .filter(|r| r.status() == Some(503))
            .count()
            >= 3
    })
    .await;
    // Crash mid-outage: the WAL holds every line, none was stored.
    agent.kill9();
    azure.set_fault(Some(Fault::Stall));
    agent.restart().await;
    let second = numbered_lines("azure kill stall", 0, 100);
    ingest.post_ok(&second).await;
    wait_until(SHORT, "a call held in flight", async || {
        azure
            .requests()
            .iter()
            .any(|r| r.outcome == Outcome::Stalled)
    })
    .await;
    // Crash with a call in flight: its answer never comes.
    agent.kill9();
    azure.set_fault(None);
    agent.restart().await;
    let total = first.len() + second.len();
    azure.wait_for_rows(total, DELIVERY).await;
    assert_no_hole(&azure, total as u64, "after two kill -9");
    let mut all = first.clone();
    all.extend(second);
    check_delivery(&all, &azure.rows()).assert_nothing_lost();
    assert_protocol_kept(&azure);
}

// A 413 for a call of one row: Azure found it too large although the agent thought it
// fit. It cannot be split, so it is dead-lettered with a notice.
#[tokio::test(flavor = "multi_thread")]
async fn a_413_for_a_single_row_dead_letters_it_with_a_notice() {
    let azure = Azure::start().await;
    let notice = single_row_refused_413(&azure).await;
    assert_eq!(notice["status"], 413, "{notice}");
}

// The notice's `error` is "the error type or code" the platform gave (platform-spec): for
// this 413 that is `ContentLengthLimitExceeded`, as for a 400 it is its x-ms-error-code.
#[tokio::test(flavor = "multi_thread")]
async fn a_413_notice_carries_the_platforms_error_code() {
    let azure = Azure::start().await;
    let notice = single_row_refused_413(&azure).await;
    assert_eq!(notice["error"], "ContentLengthLimitExceeded", "{notice}");
}

/// Sends three one-row calls, the first refused 413; checks that it alone was
/// dead-lettered and the others stored; returns its notice.
async fn single_row_refused_413(azure: &Azure) -> Value {
    azure.script(1, Fault::Status(413));
    let (agent, ingest) = start_agent(azure, "max_events = 1", "concurrency = 1").await;
    let lines = numbered_lines("azure 413 one", 0, 3);
    ingest.post_ok(&lines[..1]).await;
    wait_until(SHORT, "a notice for seq 1", async || {
        notices(azure).iter().any(|n| n["first_seq"] == 1)
    })
    .await;
    ingest.post_ok(&lines[1..]).await;
    azure.wait_for_rows(3, DELIVERY).await;
    assert_eq!(dead_letter_files(agent.data_dir()).len(), 1);
    check_delivery(&lines[1..], &azure.rows()).assert_nothing_lost();
    notices(azure).remove(0)
}

// Once the platform takes them, `gapless dead-letter replay` must send an azure sink's dead
// letters through the same API as the sink: a token, the DCR's URL, an array of rows.
#[tokio::test(flavor = "multi_thread")]
async fn dead_lettered_rows_are_replayed_through_the_logs_ingestion_api() {
    let azure = Azure::start().await;
    azure.set_fault(Some(Fault::RejectEvents(400)));
    let (agent, ingest) = start_agent(&azure, "max_events = 10", "").await;
    let lines = numbered_lines("azure replay", 0, 30);
    ingest.post_ok(&lines).await;
    wait_until(SHORT, "three dead-letter files", async || {
        dead_letter_files(agent.data_dir()).len() == 3
    })
    .await;
    azure.set_fault(None);
    let (status, stdout, stderr) = dead_letter_command(&agent, "replay").await;
    assert!(
        status.success(),
        "dead-letter replay exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        event_seqs(&azure.rows()),
        (1..=30).collect(),
        "the replayed rows; {}",
        azure.summary()
    );
    check_delivery(&lines, &azure.rows()).assert_exactly_once();
    assert!(
        dead_letter_files(agent.data_dir()).is_empty(),
        "replay left files behind"
    );
    assert_protocol_kept(&azure);
    assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));
}

/// `gapless dead-letter <command> --sink sentinel --config <the agent's config>`.
async fn dead_letter_command(
    agent: &Agent,
    command: &str,
) -> (std::process::ExitStatus, String, String) {
    run_command_async(&[
        "dead-letter".as_ref(),
        command.as_ref(),
        "--sink".as_ref(),
        SINK.as_ref(),
        "--config".as_ref(),
        agent.config_path().as_os_str(),
    ])
    .await
}
