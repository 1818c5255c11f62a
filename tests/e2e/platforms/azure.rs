//! Azure Monitor Logs Ingestion (Microsoft Sentinel): the receiver checked against its
//! documentation ([`receiver`]), and the `azure_monitor_logs` sink of the real agent against
//! it: delivery, limits and time ([`delivery`]), Entra ID tokens ([`tokens`]), answers and
//! crashes ([`answers`]).

mod answers;
mod dcr;
mod delivery;
mod receiver;
mod tokens;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::platforms::azure::{Azure, CLIENT_SECRET};
use crate::harness::snippets::http_source;
use crate::harness::{free_port, Agent, Ingest};

/// The sink's name in every config here.
const SINK: &str = "sentinel";

/// An agent with an http source `in` and an `azure_monitor_logs` sink `sentinel` on
/// `azure`, batching `batch` (`max_events = 100`), `extra` lines in the sink's table.
async fn start_agent(azure: &Azure, batch: &str, extra: &str) -> (Agent, Ingest) {
    start_agent_with(azure, batch, extra, &[]).await
}

/// [`start_agent`] with these environment variables (`GAPLESS_LOG`).
async fn start_agent_with(
    azure: &Azure,
    batch: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Agent, Ingest) {
    start_agent_full(azure, "", &["in"], batch, extra, env).await
}

/// [`start_agent_with`] with more `sources` (TOML tables) beside `in`, the sink taking
/// `inputs`.
async fn start_agent_full(
    azure: &Azure,
    sources: &str,
    inputs: &[&str],
    batch: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (Agent, Ingest) {
    let port = free_port();
    let mut builder = Agent::builder().listening_on(port);
    let secret = builder.path("client_secret");
    builder = builder.config(&format!(
        "{sources}\n{}{}",
        http_source("in", port, ""),
        azure.sink(SINK, inputs, &secret, batch, extra)
    ));
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    (builder.start().await, Ingest::new(port))
}

/// The seqs of the stored rows that are events (not gap records or heartbeats).
fn event_seqs(rows: &[Value]) -> BTreeSet<u64> {
    rows.iter()
        .filter(|r| r["gapless"].is_null())
        .filter_map(|r| r["seq"].as_u64())
        .collect()
}

/// Panics unless the seqs `1..=last` were all stored (duplicates allowed: the API has no
/// de-duplication).
fn assert_no_hole(azure: &Azure, last: u64, at: &str) {
    let seqs = event_seqs(&azure.rows());
    let holes: Vec<u64> = (1..=last).filter(|s| !seqs.contains(s)).collect();
    assert!(
        holes.is_empty(),
        "{at}: {} of {last} seqs never stored (first {:?}); {}",
        holes.len(),
        holes.first(),
        azure.summary()
    );
}

/// Panics if the calls broke the documented protocol.
fn assert_protocol_kept(azure: &Azure) {
    let violations = azure.protocol_violations();
    assert!(
        violations.is_empty(),
        "the agent broke the Logs Ingestion protocol: {violations:?}"
    );
}

/// Panics if the client secret appears in anything the agent wrote.
fn assert_secret_not_logged(agent: &Agent) {
    for (what, text) in [
        ("stderr", agent.stderr_text()),
        ("stdout", agent.stdout_text()),
    ] {
        assert!(
            !text.contains(CLIENT_SECRET),
            "the client secret appears in the agent's {what}"
        );
    }
}

/// The `.ndjson` files (the events; each has a `.meta.json` beside it) in
/// `data_dir/dead-letter/sentinel/`, sorted.
fn dead_letter_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("dead-letter").join(SINK)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    files
}

/// The dead-letter notices among the stored rows.
fn notices(azure: &Azure) -> Vec<Value> {
    azure
        .rows()
        .into_iter()
        .filter(|r| r["gapless"] == "gap" && r["reason"] == "dead_letter")
        .collect()
}
