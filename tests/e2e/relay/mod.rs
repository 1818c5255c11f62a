//! The relay tier (contract: a `gapless` sink on every host POSTs to a `gapless` source on
//! a relay, which stores each event with `origin_agent_id`/`origin_seq` in its own WAL and
//! forwards it through its own sinks with its own `seq`), end to end with real processes:
//!
//! - `delivery`: what arrives behind the relay — the origin's fields in order, both seqs,
//!   range records for an origin sink's `inputs` filter — and what the gapless sink posts.
//! - `verify`: `gapless verify-stream` per origin — gap records, heartbeats, holes named,
//!   and nothing a client of the origin's http source forges.
//! - `crash`: `kill -9` of the agents and of the relay during an outage of the platform.
//! - `dedup`: a repeated request is answered 200 with duplicates and stored once, also
//!   across a `kill -9` of the relay.
//! - `auth`: bearer tokens, per-agent tokens and client certificates, and which agent id
//!   each may claim.
//! - `requests`: what the gapless source refuses (400, 413), and that it keeps running.
//! - `config`: what `gapless validate` and `gapless run` refuse.
//! - `memory`: many agents posting big batches at once (not in the contract).

mod auth;
mod config;
mod crash;
mod dedup;
mod delivery;
mod memory;
mod requests;
mod verify;

use crate::harness::relay::gapless_source;
use crate::harness::snippets::http_sink;
use crate::harness::*;

/// The shared bearer token of the relays in these tests.
const TOKEN: &str = "relay-shared-token";

/// The URI an origin's gapless sink posts to, for a relay listening on `port`.
fn relay_uri(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

/// A relay: a gapless source `agents` on 127.0.0.1:`port` (`source_extra`: its `auth`,
/// `tls`, …) and an http sink `out` to `receiver`, one request in flight.
async fn start_relay(receiver: &Receiver, port: u16, source_extra: &str) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            gapless_source("agents", port, source_extra),
            http_sink(&receiver.url(), &["agents"], 200, "concurrency = 1")
        ))
        .start()
        .await
}

/// `agent_id = "<id>"`, the top-level key that names an origin agent.
fn agent_id(id: &str) -> String {
    format!("agent_id = \"{id}\"")
}
