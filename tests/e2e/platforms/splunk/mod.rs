//! The `splunk_hec` sink against [`Hec`], a collector that behaves as Splunk documents HEC
//! (see its module doc): first the collector itself, driven by hand ([`receiver`]), then
//! the real agent: delivery, rejections and credentials ([`delivery`]), indexer
//! acknowledgement ([`acks`]) and `kill -9` ([`crash`]).
//!
//! [`Hec`]: crate::harness::platforms::splunk::Hec

mod acks;
mod crash;
mod delivery;
mod receiver;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::agent::wait_for_status;
use crate::harness::platforms::splunk::Hec;
use crate::harness::snippets::http_source;
use crate::harness::*;

/// The collector's token (a GUID, as Splunk generates them).
const TOKEN: &str = "0f3c2a9e-8c1b-4f7e-9d4a-6b5e2c1d0a9f";

/// A `splunk_hec` sink `out` taking the http source `in`, its token in `token_file`,
/// batching up to `max_events` events or 100 ms, retrying after 50–500 ms; `extra` lines
/// go into the same table.
fn splunk_sink(hec: &Hec, token_file: &std::path::Path, max_events: usize, extra: &str) -> String {
    format!(
        r#"
[sinks.out]
type = "splunk_hec"
inputs = ["in"]
endpoint = "{endpoint}"
token_file = {token_file}
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#,
        endpoint = hec.endpoint(),
        token_file = toml_path(token_file),
    )
}

/// An agent with an http source (returned as its client) and a [`splunk_sink`] whose token
/// file holds `token`.
async fn start_agent(hec: &Hec, token: &str, max_events: usize, extra: &str) -> (Agent, Ingest) {
    let port = free_port();
    let builder = Agent::builder().listening_on(port);
    let token_file = builder.path("hec.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let agent = builder
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            splunk_sink(hec, &token_file, max_events, extra)
        ))
        .start()
        .await;
    (agent, Ingest::new(port))
}

/// How many times each `seq` was indexed (events only, not gap records or notices).
fn seq_counts(hec: &Hec) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for e in hec.events() {
        if e["gapless"] == "gap" {
            continue;
        }
        let seq = e["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("an indexed event without a numeric seq: {e}"));
        *counts.entry(seq).or_default() += 1;
    }
    counts
}

/// The seqs of `1..=last` never indexed.
fn missing_seqs(hec: &Hec, last: u64) -> Vec<u64> {
    let counts = seq_counts(hec);
    (1..=last).filter(|s| !counts.contains_key(s)).collect()
}

/// Waits until every seq of `1..=last` was indexed (the ack due, if there is one).
async fn wait_for_seqs(hec: &Hec, last: u64) {
    wait_until(DELIVERY, format!("seqs 1..={last} indexed"), async || {
        missing_seqs(hec, last).is_empty()
    })
    .await;
}

/// The `message`s of the indexed events.
fn messages(hec: &Hec) -> Vec<Value> {
    hec.events().iter().map(|e| e["message"].clone()).collect()
}
