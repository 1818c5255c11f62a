//! The relay's memory with many agents sending at once. Not in the contract; what a user of
//! Vector or Fluent Bit expects of a tier meant for thousands of agents: memory bounded by
//! the relay's config, whatever the number of agents times their batch size. Requests past
//! that bound may wait or get 503 with `Retry-After` (the agents' sinks retry).

use std::time::Duration;

use super::{start_relay, TOKEN};
use crate::harness::relay::{continuity_headers, origin_lines, shared_token, RelayClient};
use crate::harness::*;

/// Agents posting at once.
const AGENTS: usize = 64;
/// Events per request, of about 2 KiB each: over 4 MiB of NDJSON (the sink's default
/// `batch.max_bytes`), few events (a debug build parses them slowly).
const EVENTS: u64 = 2_000;
/// The peak RSS allowed to the relay: less than the bodies of all the requests (64 × 4.2
/// MiB = 269 MiB), so that it holds only when the relay bounds what it takes at once.
const BOUND_MIB: u64 = 256;

/// The relay's peak RSS (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn many_agents_posting_big_batches_at_once_keep_the_relays_memory_bounded() {
    let platform = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let pad = "x".repeat(2_048);
    let lines: Vec<String> = origin_lines("memory", 1, EVENTS)
        .into_iter()
        .map(|l| format!("{},\"pad\":\"{pad}\"}}", l.strip_suffix('}').unwrap()))
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    assert!(bytes > 4 << 20, "{bytes} bytes per request");
    let posts = (0..AGENTS).map(|i| {
        let lines = &lines;
        async move {
            let client = RelayClient::new(port).with_token(TOKEN).without_gzip();
            let headers = continuity_headers(&format!("memory-{i}"), 1, EVENTS);
            loop {
                let answer = client.post(&headers, lines).await.unwrap();
                match answer.status {
                    200 => return,
                    503 => tokio::time::sleep(Duration::from_millis(200)).await,
                    _ => panic!("agent memory-{i}: {answer:?}"),
                }
            }
        }
    });
    tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(posts),
    )
    .await
    .expect("every agent's batch taken within 2 minutes");
    let peak = peak_rss_mib(relay.pid());
    assert!(
        peak <= BOUND_MIB,
        "the relay peaked at {peak} MiB RSS taking {AGENTS} requests of {} MiB at once (bound {BOUND_MIB} MiB)",
        bytes >> 20
    );
}
