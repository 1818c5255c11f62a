//! The DCR gapless ships (`packaging/azure/dcr.json`) against what the agent really sends:
//! Azure ingests only the columns a stream declares and drops the rest without an error, so
//! a field the agent writes that the DCR does not declare is lost in Sentinel, silently.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::harness::platforms::azure::{packaged_columns, rfc3339, Fault};
use crate::harness::snippets::file_source;
use crate::harness::*;

/// The columns dropped from every call so far.
fn dropped(azure: &Azure) -> BTreeSet<String> {
    azure
        .requests()
        .iter()
        .flat_map(|r| r.dropped_columns.iter().cloned())
        .collect()
}

// Lines from a file and from http, a client object whose fields collide with reserved
// names, an event over a day old, heartbeats and a dead-letter notice: every field of every
// row has its column.
#[tokio::test(flavor = "multi_thread")]
async fn every_field_the_agent_writes_is_a_column_of_the_packaged_dcr() {
    let azure = Azure::start().await;
    azure.declare_columns(&packaged_columns());
    azure.script(1, Fault::RejectEvents(400));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut file = LogFile::create(&log);
    let (_agent, ingest) = start_agent_full(
        &azure,
        &format!(
            "[sources.hb]\ntype = \"heartbeat\"\ninterval = \"300ms\"\n{}",
            file_source("app", &log, "")
        ),
        &["in", "app"],
        "max_events = 10",
        "",
        &[],
    )
    .await;
    ingest
        .post_ok(&numbered_lines("azure dcr refused", 0, 5))
        .await;
    wait_until(SHORT, "a dead-letter notice", async || {
        !notices(&azure).is_empty()
    })
    .await;
    file.append(&numbered_lines("azure dcr file", 0, 5));
    let old = rfc3339::format(rfc3339::now_micros() - 72 * 3_600_000_000);
    let objects = [
        json!({"message": "azure dcr client", "timestamp": old, "host": "h1", "seq": 7}),
        json!({"message": "azure dcr plain"}),
    ]
    .map(|o| o.to_string())
    .join("\n");
    let answer = ingest
        .post("application/x-ndjson", &[], objects.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    ingest
        .post_ok(&numbered_lines("azure dcr text", 0, 5))
        .await;
    wait_until(DELIVERY, "the client rows and two heartbeats", async || {
        let rows = azure.rows();
        rows.iter().any(|r| r["message"] == "azure dcr plain")
            && rows.iter().any(|r| !r["file"].is_null())
            && rows.iter().filter(|r| r["gapless"] == "heartbeat").count() >= 2
    })
    .await;
    assert!(
        azure.rows().iter().any(|r| !r["TimeOriginal"].is_null()),
        "no row with TimeOriginal was stored: {:?}",
        dropped(&azure)
    );
    assert_eq!(
        dropped(&azure),
        BTreeSet::new(),
        "fields the agent writes that the packaged DCR does not declare: Azure drops them"
    );
}

// A client's JSON object is forwarded as the client sent it (its own fields at the top of
// the event): with the packaged DCR, every field it does not happen to name is dropped by
// Azure, and Sentinel shows the event without them.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_own_fields_reach_the_table_through_the_packaged_dcr() {
    let azure = Azure::start().await;
    azure.declare_columns(&packaged_columns());
    let (_agent, ingest) = start_agent(&azure, "max_events = 10", "").await;
    let object = json!({"message": "login", "user": "alice", "level": "warn", "latency_ms": 12});
    let answer = ingest
        .post("application/x-ndjson", &[], object.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = azure.wait_for_rows(1, DELIVERY).await.remove(0);
    let stored = row.to_string();
    assert!(
        stored.contains("alice") && stored.contains("warn") && stored.contains("latency_ms"),
        "the client's fields did not reach the table; Azure dropped {:?}; stored {row}",
        dropped(&azure)
    );
}
