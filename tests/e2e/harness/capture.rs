//! What the platform got, as the continuity checker sees it: the requests a [`Receiver`]
//! accepted as [`ReceivedBatch`]es (for `gapless::continuity::check`), or written as a
//! capture file for `gapless verify-stream`; and the gap events among them.
//!
//! Only requests answered 2xx count: a request the platform refused was not received.
//!
//! [`Receiver`]: super::Receiver

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitStatus;

use gapless::continuity::ReceivedBatch;
use serde_json::{json, Value};

use super::agent::run_command;
use super::receiver::Request;

/// The accepted requests as the checker takes them: seq range from `gapless-seq-range`,
/// events as received.
pub fn received_batches(requests: &[Request]) -> Vec<ReceivedBatch> {
    requests
        .iter()
        .filter(|r| r.accepted())
        .map(|r| ReceivedBatch {
            seq_range: r.seq_range(),
            events: r.events.clone(),
        })
        .collect()
}

/// One capture line per accepted request, `{"headers":{…},"events":[…]}`, in arrival order.
pub fn capture_lines(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.accepted())
        .map(|r| json!({"headers": r.headers, "events": r.events}).to_string())
        .collect()
}

/// Writes capture lines to `path` as NDJSON.
pub fn write_capture(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("write the capture {}: {e}", path.display()));
}

/// `gapless verify-stream <capture> --from <from>` plus `extra` arguments: exit status,
/// stdout, stderr.
pub fn verify_stream(capture: &Path, from: u64, extra: &[&str]) -> (ExitStatus, String, String) {
    let from = from.to_string();
    let mut args = vec![
        "verify-stream".as_ref(),
        capture.as_os_str(),
        "--from".as_ref(),
        from.as_ref(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_command(&args)
}

/// The gap events (`"gapless":"gap"`) among `events` with this `reason`.
pub fn gap_events(events: &[Value], reason: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["gapless"] == "gap" && e["reason"] == reason)
        .cloned()
        .collect()
}

/// A gap event's `first_seq ..= last_seq`; panics if it lacks them.
pub fn gap_range(gap: &Value) -> (u64, u64) {
    match (gap["first_seq"].as_u64(), gap["last_seq"].as_u64()) {
        (Some(a), Some(z)) => (a, z),
        _ => panic!("a gap event without first_seq/last_seq: {gap}"),
    }
}

/// The `seq`s (under `seq_field`) of the events that are not gap records.
pub fn event_seqs(events: &[Value], seq_field: &str) -> BTreeSet<u64> {
    events
        .iter()
        .filter(|e| e["gapless"] != "gap")
        .filter_map(|e| e[seq_field].as_u64())
        .collect()
}
