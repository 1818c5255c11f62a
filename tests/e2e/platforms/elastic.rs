//! The `elasticsearch` sink against [`Elastic`], a `_bulk` server writing into a data
//! stream: every event is a `create` under `<agent_id>-<seq>`, so the cluster itself
//! de-duplicates what the agent sends again (after an item 429, a lost answer, a kill -9)
//! and every seq is stored exactly once; items the mapping refuses go to the dead-letter
//! queue with a notice naming `mapper_parsing_exception`; whole requests answered 429/5xx
//! are sent again, 413 is split, and a node that is down is failed over to the next.
//! `server` checks the server itself first.

mod auth;
mod dead_letter;
mod delivery;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::agent::{run_command, run_command_async, wait_for_status};
use crate::harness::platforms::elastic::{
    basic_credentials, encoded_api_key, Document, Elastic, Fault, Settings,
};
use crate::harness::snippets::http_source;
use crate::harness::*;

/// The sink's data stream by default.
const INDEX: &str = "logs-gapless-default";

/// The API key the agent is given (its `encoded` form).
fn key() -> String {
    encoded_api_key("gapless-e2e", "k3y-s3cr3t-never-logged")
}

fn api_key_auth() -> String {
    format!("auth = {{ api_key = \"{}\" }}", key())
}

async fn cluster() -> Elastic {
    Elastic::start(Settings::default().api_key(&key())).await
}

/// A running agent with an http source `in` and an elasticsearch sink `search`.
struct Setup {
    agent: Agent,
    ingest: Ingest,
    agent_id: String,
}

/// The sink `search` taking `in`, sending to `endpoints` in batches of `max_events`, with
/// fast retries; `extra` lines (the `auth`, …) go into its table.
fn sink(endpoints: &[String], max_events: usize, extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[sinks.search]
type = "elasticsearch"
inputs = ["in"]
endpoints = [{endpoints}]
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#,
        endpoints = endpoints.join(", ")
    )
}

async fn start_with(builder: agent::AgentBuilder, sink_text: &str) -> Setup {
    let port = free_port();
    let agent = builder
        .listening_on(port)
        .config(&format!("{}{sink_text}", http_source("in", port, "")))
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

async fn start(endpoints: &[String], max_events: usize, extra: &str) -> Setup {
    start_with(Agent::builder(), &sink(endpoints, max_events, extra)).await
}

/// The documents of this agent that are events (not gap records), by seq; panics if a seq
/// is stored twice or under an `_id` other than `<agent_id>-<seq>`.
fn events_by_seq(es: &Elastic, agent_id: &str) -> BTreeMap<u64, Value> {
    let mut by_seq = BTreeMap::new();
    for doc in es.documents() {
        if doc.source.get("gapless").is_some() || doc.source["agent_id"] != agent_id {
            continue;
        }
        let seq = doc.source["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("a document without a numeric seq: {}", doc.source));
        assert_eq!(doc.id, format!("{agent_id}-{seq}"), "{}", doc.source);
        if let Some(earlier) = by_seq.insert(seq, doc.source.clone()) {
            panic!("seq {seq} is stored twice: {earlier} and {}", doc.source);
        }
    }
    by_seq
}

/// Waits until `n` events are stored; returns them by seq.
async fn wait_for_events(es: &Elastic, agent_id: &str, n: usize) -> BTreeMap<u64, Value> {
    wait_until(DELIVERY, format!("{n} events in the cluster"), async || {
        es.documents()
            .iter()
            .filter(|d| d.source.get("gapless").is_none())
            .count()
            >= n
    })
    .await;
    events_by_seq(es, agent_id)
}

/// Asserts that `lines` are stored exactly once, as seqs `1..=lines.len()`.
fn assert_stored_once(events: &BTreeMap<u64, Value>, lines: &[String]) {
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    let sources: Vec<Value> = events.values().cloned().collect();
    check_delivery(lines, &sources).assert_exactly_once();
}

/// The README's hole query (`packaging/elasticsearch/holes.esql`) run over the stored
/// documents: for this agent, every seq from the lowest to the highest is covered exactly
/// once, by an event or by a gap record's `first_seq..=last_seq` (a gap record whose
/// `last_seq` is below its own seq covers its own seq only, as the query says). Panics naming the holes and
/// the seqs covered twice.
fn assert_seqs_covered_once(es: &Elastic, agent_id: &str) {
    let mut covered: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // The query's own arithmetic: SUM(hi - lo + 1).
    let mut sum = 0;
    for doc in es.documents() {
        let d = &doc.source;
        let (Some(seq), true) = (d["seq"].as_u64(), d["agent_id"] == agent_id) else {
            continue;
        };
        let (lo, hi) = match (
            d["gapless"].as_str(),
            d["first_seq"].as_u64(),
            d["last_seq"].as_u64(),
        ) {
            // A gap record at or after the seqs it covers: the agent's account of them
            // for this sink. One stored before them (the WAL's own record of a drop, which
            // the sink's gap already covered) counts for its own seq only.
            (Some("gap"), Some(a), Some(z)) if z >= seq => (a.min(seq), z.max(seq)),
            _ => (seq, seq),
        };
        sum += hi - lo + 1;
        for s in lo..=hi {
            covered.entry(s).or_default().push(doc.id.clone());
        }
    }
    let (Some(&lo), Some(&hi)) = (covered.keys().next(), covered.keys().last()) else {
        return;
    };
    let holes = runs((lo..=hi).filter(|s| !covered.contains_key(s)));
    let twice = runs(
        covered
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(s, _)| *s),
    );
    assert!(
        holes.is_empty() && twice.is_empty(),
        "the hole query would miscount seqs {lo}..={hi} (it would say missing = {}): holes \
         {holes:?}, covered more than once {twice:?}",
        (hi - lo + 1) as i64 - sum as i64
    );
}

/// Ascending seqs as runs `(first, last)`.
fn runs(seqs: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match runs.last_mut() {
            Some((_, z)) if *z + 1 == s => *z = s,
            _ => runs.push((s, s)),
        }
    }
    runs
}

/// The statuses of every processed arrival of `<agent_id>-<seq>`, in order.
fn statuses(es: &Elastic, agent_id: &str, seq: u64) -> Vec<u16> {
    es.arrivals(&format!("{agent_id}-{seq}"))
        .iter()
        .filter_map(|i| i.status)
        .collect()
}

/// The stored dead-letter notices (`"gapless":"gap"`, `"reason":"dead_letter"`).
fn notices(es: &Elastic) -> Vec<(String, Value)> {
    es.documents()
        .into_iter()
        .filter(|d| d.source["gapless"] == "gap" && d.source["reason"] == "dead_letter")
        .map(|d| (d.id, d.source))
        .collect()
}

fn dead_letter_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("dead-letter").join("search")) else {
        return Vec::new();
    };
    entries.map(|e| e.unwrap().path()).collect()
}

/// Posts NDJSON objects to the http source.
async fn post_objects(ingest: &Ingest, objects: &[Value]) {
    let body: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let answer = ingest
        .post("application/x-ndjson", &[], body.into_bytes())
        .await
        .expect("POST to the http source");
    assert_eq!(answer.status, 200, "{}", answer.body);
}
