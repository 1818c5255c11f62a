//! The `nats` sink against a real `nats-server -js` ([`crate::harness::nats`]): every event
//! one message, acknowledged by the stream before the cursor moves, de-duplicated by the
//! stream under `Nats-Msg-Id` so that kill -9 of the agent, a restart of the server or the
//! loss of a cluster node leaves every seq in the stream exactly once; no stream for the
//! subject raises an alarm naming it, and everything arrives once the stream exists.

mod delivery;
mod faults;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::agent::wait_for_status;
use crate::harness::nats::{create_stream, read_stream, wait_for_messages, Stored};
use crate::harness::snippets::http_source;
use crate::harness::*;

/// The stream the tests create, and the subject it takes.
const STREAM: &str = "GAPLESS";
const SUBJECT: &str = "logs.gapless";

/// A running agent with an http source `in` and a nats sink `bus`.
struct Setup {
    agent: Agent,
    ingest: Ingest,
    agent_id: String,
}

/// The sink `bus` taking `in`, publishing to `url` in batches of `max_events`, with fast
/// retries; `extra` lines go into its table.
fn sink(url: &str, max_events: usize, extra: &str) -> String {
    format!(
        r#"
[sinks.bus]
type = "nats"
inputs = ["in"]
url = "{url}"
subject = "{SUBJECT}"
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#
    )
}

/// Starts an agent with `sources` (besides `in`) and `sink_text`.
async fn start_with(sources: &str, sink_text: &str) -> Setup {
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{sources}{sink_text}",
            http_source("in", port, "")
        ))
        .start()
        .await;
    let agent_id = agent.status_json().await["agent_id"]
        .as_str()
        .expect("/status names the agent_id")
        .to_string();
    Setup {
        agent,
        ingest: Ingest::new(port),
        agent_id,
    }
}

async fn start(url: &str, max_events: usize) -> Setup {
    start_with("", &sink(url, max_events, "")).await
}

/// Reads the stream once it holds `n` messages; checks every message is this agent's,
/// under `Nats-Msg-Id` `<agent_id>-<seq>`, and holds each seq once.
async fn wait_for_stream(url: &str, agent_id: &str, n: usize) -> Vec<Stored> {
    wait_for_messages(url, STREAM, n as u64).await;
    let stored = read_stream(url, STREAM).await;
    let mut seen = BTreeSet::new();
    for m in &stored {
        let seq = m.event["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("a message without a numeric seq: {}", m.event));
        assert_eq!(m.msg_id, format!("{agent_id}-{seq}"), "{}", m.event);
        assert_eq!(m.agent_id, agent_id);
        assert!(seen.insert(seq), "seq {seq} is in the stream twice");
    }
    stored
}

/// Asserts that `lines` are in the stream exactly once, as seqs `1..=lines.len()`, and
/// that each message's `Gapless-Prev-Seq` is the seq before it (no `inputs` skipped).
fn assert_stored_once(stored: &[Stored], lines: &[String]) {
    let mut seqs: Vec<u64> = stored
        .iter()
        .map(|m| m.event["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    for m in stored {
        assert_eq!(
            m.prev_seq + 1,
            m.event["seq"].as_u64().unwrap(),
            "{}",
            m.event
        );
    }
    let events: Vec<Value> = stored.iter().map(|m| m.event.clone()).collect();
    check_delivery(lines, &events).assert_exactly_once();
}
