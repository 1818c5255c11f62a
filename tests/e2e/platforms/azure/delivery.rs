//! The sink delivers to the Logs Ingestion API as documented: every seq stored as a row
//! with `TimeGenerated`, `agent_id` and `seq`, calls within 1 MiB (the boundary exact), an
//! event too large for any call dead-lettered, an event time Azure would rewrite kept in
//! `TimeOriginal`, and `validate` naming a missing `dcr_immutable_id`.

use serde_json::json;

use super::*;
use crate::harness::agent::{run_command, wait_for_status};
use crate::harness::platforms::azure::{
    rfc3339, CLIENT_ID, MAX_CALL_BYTES, MAX_FIELD_BYTES, TENANT,
};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_line_is_stored_as_a_row_with_time_generated_and_one_token_serves_every_call() {
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(&azure, "max_events = 100", "").await;
    let lines = numbered_lines("azure delivery", 0, 3000);
    for chunk in lines.chunks(500) {
        ingest.post_ok(chunk).await;
    }
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    assert_no_hole(&azure, lines.len() as u64, "after delivery");
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert_protocol_kept(&azure);

    let agent_id = agent.status_json().await["agent_id"].clone();
    for row in azure.unique_rows() {
        let time = row["TimeGenerated"].as_str().unwrap_or_default();
        assert!(
            rfc3339::parse(time).is_some() && time.ends_with('Z') && time.len() == 27,
            "TimeGenerated is not RFC 3339 UTC with microseconds: {row}"
        );
        assert_eq!(row["agent_id"], agent_id, "{row}");
        assert!(
            row["TimeOriginal"].is_null(),
            "a fresh event with TimeOriginal: {row}"
        );
    }
    let calls = azure.requests().len();
    assert!(
        calls >= 30,
        "3000 lines in batches of 100 took only {calls} calls"
    );
    assert_eq!(
        azure.tokens_issued(),
        1,
        "one token (valid an hour) should serve all {calls} calls; {}",
        azure.summary()
    );
    let token = &azure.token_requests()[0];
    assert_eq!(token.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(token.form["grant_type"], "client_credentials");
    assert_eq!(token.form["client_id"], CLIENT_ID);
    assert_eq!(token.form["client_secret"], CLIENT_SECRET);
    assert!(
        token.form["scope"].ends_with("/.default"),
        "{:?}",
        token.form
    );
    assert!(
        azure
            .requests()
            .iter()
            .all(|r| r.headers.get("content-encoding").map(String::as_str) == Some("gzip")),
        "calls not gzipped by default"
    );
    assert_secret_not_logged(&agent);
}

fn incompressible_lines(prefix: &str, count: usize, len: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|i| {
            let mut line = format!("{prefix} {i:06} ");
            while line.len() < len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push_str(&format!("{x:016x}"));
            }
            line.truncate(len);
            line
        })
        .collect()
}

// 3 MiB of lines in one batch: the agent must cut it into calls of at most 1 MiB (as sent
// and uncompressed) itself, without waiting for a 413; an event that alone is over 1 MiB
// can never be taken and goes to the dead-letter queue with a notice.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_split_into_calls_of_at_most_one_mib_and_an_event_over_one_mib_is_dead_lettered()
{
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 100000, max_bytes = \"8MiB\", timeout = \"1s\"",
        "",
    )
    .await;
    let lines = incompressible_lines("azure big", 3 * 1024, 1024);
    ingest.post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert_protocol_kept(&azure);
    let calls = azure.requests();
    assert!(
        calls.iter().all(|r| r.status() != Some(413)),
        "the agent sent a call the API refused as too large; {}",
        azure.summary()
    );
    assert!(calls.len() >= 4, "3 MiB in {} calls", calls.len());
    let largest = calls.iter().filter_map(|r| r.plain_bytes).max().unwrap();
    assert!(largest <= MAX_CALL_BYTES, "a call of {largest} bytes");

    let huge = format!("azure huge {}", "h".repeat(MAX_CALL_BYTES + 10));
    let after = numbered_lines("azure after huge", 0, 10);
    ingest.post_ok(&[huge]).await;
    ingest.post_ok(&after).await;
    let huge_seq = lines.len() as u64 + 1;
    wait_until(
        SHORT,
        "a dead-letter notice for the huge event",
        async || {
            notices(&azure).iter().any(|n| {
                n["first_seq"].as_u64() <= Some(huge_seq)
                    && n["last_seq"].as_u64() >= Some(huge_seq)
            })
        },
    )
    .await;
    azure
        .wait_for_rows(lines.len() + after.len(), DELIVERY)
        .await;
    check_delivery(&after, &azure.rows()).assert_nothing_lost();
    let files = dead_letter_files(agent.data_dir());
    assert_eq!(files.len(), 1, "dead-letter files: {files:?}");
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        kept.contains("azure huge hhhh"),
        "the huge event is not in {files:?}"
    );
    assert_protocol_kept(&azure);
}

// Azure replaces a TimeGenerated over 2 days old by the receive time: the agent keeps the
// event's own time in TimeOriginal (for events over a day old) and says so in its log.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_a_day_old_keeps_its_time_in_time_original_and_the_agent_warns() {
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(&azure, "max_events = 100", "").await;
    let now = rfc3339::now_micros();
    let hour = 3_600_000_000;
    let old = rfc3339::format(now - 72 * hour);
    let recent = rfc3339::format(now - 2 * hour);
    let body = [
        json!({"message": "azure three days old", "timestamp": old}),
        json!({"message": "azure two hours old", "timestamp": recent}),
    ]
    .map(|v| v.to_string())
    .join("\n");
    let answer = ingest
        .post("application/x-ndjson", &[], body.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let rows = azure.wait_for_rows(2, DELIVERY).await;
    let by_message = |m: &str| rows.iter().find(|r| r["message"] == m).unwrap().clone();
    let old_row = by_message("azure three days old");
    assert_eq!(old_row["TimeOriginal"], json!(old), "{old_row}");
    let stored = rfc3339::parse(old_row["TimeGenerated"].as_str().unwrap()).unwrap();
    assert!(
        (stored - now).abs() < 60_000_000,
        "Azure should have stored the receive time: {old_row}"
    );
    let recent_row = by_message("azure two hours old");
    assert_eq!(recent_row["TimeGenerated"], json!(recent), "{recent_row}");
    assert!(recent_row["TimeOriginal"].is_null(), "{recent_row}");
    wait_until(SHORT, "a warning about the old event", async || {
        agent
            .stderr_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("TimeOriginal"))
    })
    .await;
    wait_for_status(&agent, "the sink delivered", |s| {
        s["sinks"][SINK]["backlog_events"] == 0
    })
    .await;
}

#[test]
fn validate_refuses_an_azure_sink_without_dcr_immutable_id_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gapless.toml");
    let text = format!(
        r#"data_dir = {data}

[sources.in]
type = "stdin"

[sinks.{SINK}]
type = "azure_monitor_logs"
inputs = ["in"]
endpoint = "https://example.ingest.monitor.azure.com"
stream_name = "Custom-GaplessLogs_CL"
auth = {{ tenant_id = "t", client_id = "c", client_secret = "s" }}
"#,
        data = toml_path(&dir.path().join("data"))
    );
    std::fs::write(&config, &text).unwrap();
    let (status, _, stderr) =
        run_command(&["validate".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert!(
        !status.success(),
        "validate accepted a sink without dcr_immutable_id"
    );
    assert!(
        stderr.contains("dcr_immutable_id"),
        "the error does not name the key: {stderr}"
    );

    let with_id = text.replace(
        "stream_name",
        "dcr_immutable_id = \"dcr-0123456789abcdef0123456789abcdef\"\nstream_name",
    );
    std::fs::write(&config, with_id).unwrap();
    let (status, _, stderr) =
        run_command(&["validate".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert!(
        status.success(),
        "validate refused a complete azure sink: {stderr}"
    );
}

// The limit is on the whole call: `[` + rows joined by `,` + `]`. Rows that make a call of
// exactly 1,048,576 bytes go in one call; one byte more, and they go in two, none over the
// limit and none dead-lettered. (Messages stay under 60,000 bytes: a longer one is sent over
// several rows, see `a_line_over_64_kb_reaches_the_table_whole`.)
#[tokio::test(flavor = "multi_thread")]
async fn a_call_of_exactly_one_mib_is_sent_whole_and_one_byte_more_goes_in_two_calls() {
    const ROWS: usize = 20;
    let azure = Azure::start().await;
    let batch = format!("max_events = {ROWS}, timeout = \"2s\"");
    let (agent, ingest) = start_agent(&azure, &batch, "compression = \"none\"").await;
    // A small row shows what the agent adds around a message (fields, time, ids) for a
    // one-digit seq; every further digit of the seq adds a byte.
    ingest.post_ok(&["m".to_string()]).await;
    let probe = azure.wait_for_rows(1, DELIVERY).await.remove(0);
    assert_eq!(probe["seq"], 1);
    let overhead = probe.to_string().len() - 1;
    let digits = |seq: usize| seq.to_string().len();
    // Messages for seqs first..first+ROWS making a call of `call_bytes`.
    let lines = |first: usize, call_bytes: usize| {
        let fixed: usize = (first..first + ROWS)
            .map(|s| overhead + digits(s) - 1)
            .sum::<usize>()
            + 2
            + (ROWS - 1);
        let total = call_bytes - fixed;
        (0..ROWS)
            .map(|i| {
                let len = total / ROWS + usize::from(i < total % ROWS);
                assert!(len < 60_000, "{len}");
                "b".repeat(len)
            })
            .collect::<Vec<_>>()
    };
    ingest.post_ok(&lines(2, MAX_CALL_BYTES)).await;
    azure.wait_for_rows(1 + ROWS, DELIVERY).await;
    let exact: Vec<_> = azure
        .requests()
        .into_iter()
        .filter(|r| r.rows.iter().any(|row| row["seq"] == 2))
        .collect();
    assert_eq!(exact.len(), 1, "{}", azure.summary());
    assert_eq!(exact[0].rows.len(), ROWS, "{}", azure.summary());
    assert_eq!(
        exact[0].sent_bytes, MAX_CALL_BYTES,
        "the probe's overhead was misjudged"
    );
    assert!(exact[0].accepted(), "{}", azure.summary());

    let first = 2 + ROWS;
    ingest.post_ok(&lines(first, MAX_CALL_BYTES + 1)).await;
    azure.wait_for_rows(1 + 2 * ROWS, DELIVERY).await;
    let split: Vec<_> = azure
        .requests()
        .into_iter()
        .filter(|r| {
            r.rows
                .iter()
                .any(|row| row["seq"].as_u64().is_some_and(|s| s as usize >= first))
        })
        .collect();
    assert_eq!(split.len(), 2, "{}", azure.summary());
    assert!(
        split
            .iter()
            .all(|r| r.sent_bytes <= MAX_CALL_BYTES && r.accepted()),
        "{}",
        azure.summary()
    );
    assert!(dead_letter_files(agent.data_dir()).is_empty());
    assert_protocol_kept(&azure);
}

// Azure replaces a TimeGenerated over a day in the future just as it replaces one over two
// days old [10]: a source with a clock running days ahead loses its time the same way.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_a_day_ahead_keeps_its_time_in_time_original_and_the_agent_warns() {
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(&azure, "max_events = 100", "").await;
    let ahead = rfc3339::format(rfc3339::now_micros() + 48 * 3_600_000_000);
    let body = json!({"message": "azure two days ahead", "timestamp": ahead}).to_string();
    let answer = ingest
        .post("application/x-ndjson", &[], body.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = azure.wait_for_rows(1, DELIVERY).await.remove(0);
    assert_eq!(
        azure.requests()[0].replaced_times,
        vec![Some(json!(ahead))],
        "Azure should have replaced the TimeGenerated two days ahead"
    );
    assert_eq!(
        row["TimeOriginal"],
        json!(ahead),
        "the event's own time is lost from TimeGenerated and not kept in TimeOriginal: {row}"
    );
    assert!(
        agent
            .stderr_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("TimeOriginal")),
        "no warning about an event Azure will re-time"
    );
}

// An event whose time is unreadable (here a client's "timestamp" that is not RFC 3339)
// goes out with the time it was received, in range, and keeps the client's field.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_with_an_unreadable_timestamp_is_sent_with_its_receive_time() {
    let azure = Azure::start().await;
    let (_agent, ingest) = start_agent(&azure, "max_events = 100", "").await;
    let body = json!({"message": "azure odd time", "timestamp": "yesterday at noon"}).to_string();
    let answer = ingest
        .post("application/x-ndjson", &[], body.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = azure.wait_for_rows(1, DELIVERY).await.remove(0);
    let sent = rfc3339::parse(row["TimeGenerated"].as_str().unwrap()).unwrap();
    assert!((rfc3339::now_micros() - sent).abs() < 60_000_000, "{row}");
    assert!(azure.requests()[0].replaced_times.is_empty(), "{row}");
    assert_eq!(row["timestamp"], "yesterday at noon", "{row}");
    assert_protocol_kept(&azure);
}

// Heartbeats go to every sink: here as rows like any other, with TimeGenerated and the
// agent's id, so that Sentinel can alert on an agent gone quiet.
#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_arrive_as_rows_with_time_generated_and_the_agent_id() {
    let azure = Azure::start().await;
    let (agent, _ingest) = start_agent_full(
        &azure,
        "[sources.hb]\ntype = \"heartbeat\"\ninterval = \"300ms\"\n",
        &["in"],
        "max_events = 10",
        "",
        &[],
    )
    .await;
    wait_until(SHORT, "two heartbeat rows", async || {
        azure
            .rows()
            .iter()
            .filter(|r| r["gapless"] == "heartbeat")
            .count()
            >= 2
    })
    .await;
    let agent_id = agent.status_json().await["agent_id"].clone();
    for row in azure.rows().iter().filter(|r| r["gapless"] == "heartbeat") {
        assert_eq!(row["agent_id"], agent_id, "{row}");
        let time = row["TimeGenerated"].as_str().unwrap_or_default();
        assert!(rfc3339::parse(time).is_some(), "{row}");
    }
    assert_protocol_kept(&azure);
}

// Azure truncates a field value over 64 KB [5]: a long line sent as one `message` loses its
// tail in Sentinel without any error. It must reach the table whole (split over rows, as
// the DCR's `partial`/`continued` columns allow), or at least not silently.
#[tokio::test(flavor = "multi_thread")]
async fn a_line_over_64_kb_reaches_the_table_whole() {
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(&azure, "max_events = 10", "").await;
    let line = format!("azure long {}", "0123456789".repeat(MAX_FIELD_BYTES / 5));
    ingest.post_ok(std::slice::from_ref(&line)).await;
    azure.wait_for_rows(1, DELIVERY).await;
    wait_for_status(&agent, "the sink's backlog delivered", |s| {
        s["sinks"][SINK]["backlog_events"] == 0
    })
    .await;
    // Azure keeps rows, not events: the parts of the line are rows with its seq, flagged
    // `partial`/`continued`, joined in order by whoever reads them.
    let stored: String = azure
        .rows()
        .iter()
        .filter(|r| r["gapless"].is_null())
        .filter_map(|r| r["message"].as_str())
        .collect();
    let truncated: Vec<_> = azure
        .requests()
        .iter()
        .flat_map(|r| r.truncated_columns.clone())
        .collect();
    assert_eq!(
        stored.len(),
        line.len(),
        "the table holds {} of the line's {} bytes; Azure truncated {truncated:?}",
        stored.len(),
        line.len()
    );
}
