//! The continuity protocol as the platform sees it: every accepted batch carries its seq
//! range, the ranges and event seqs join without a hole — through an outage and `kill -9`
//! after `kill -9` under `when_full = "block"` — the reference checker (the library's
//! `continuity::check` and `gapless verify-stream`) says so, and it names the range of a
//! batch taken out of the capture. `seq_field` renames the seq or leaves it out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gapless::continuity::check;
use serde_json::Value;

use crate::harness::capture::{
    capture_lines, event_seqs, received_batches, verify_stream, write_capture,
};
use crate::harness::receiver::{Outcome, Request};
use crate::harness::snippets::{file_source, http_sink, http_source, named_http_sink};
use crate::harness::*;

const KILLS: usize = 4;
const LINES: usize = 6_000;
const LINES_PER_WRITE: usize = 100;

/// Panics unless every accepted batch joins onto what the platform already had: its
/// `gapless-prev-seq` is 0 (the first batch) or the last seq of a batch accepted before it.
fn assert_batches_join(requests: &[Request]) {
    let mut delivered_ends = BTreeSet::from([0u64]);
    for r in requests.iter().filter(|r| r.accepted()) {
        let (first, last) = r
            .seq_range()
            .unwrap_or_else(|| panic!("an accepted request without gapless-seq-range: {r:?}"));
        let prev: u64 = r
            .header("gapless-prev-seq")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("range {first}-{last} without gapless-prev-seq"));
        assert!(
            delivered_ends.contains(&prev),
            "batch {first}-{last} says gapless-prev-seq {prev}, which ends no batch accepted \
             before it (ends so far: the last few {:?})",
            delivered_ends.iter().rev().take(5).collect::<Vec<_>>()
        );
        delivered_ends.insert(last);
    }
}

// Crash: an outage (503s) while a file grows, then SIGKILL 300–700 ms apart while the
// receiver answers 503, resets or 200: each kill cuts the WAL's tail, the cursor and the
// file checkpoint wherever they were. Under `block` nothing may be dropped, so the accepted
// batches must cover every seq from 1 without a single gap record.
#[tokio::test(flavor = "multi_thread")]
async fn accepted_batches_join_without_a_hole_through_an_outage_and_repeated_kill_9_under_block() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    let capture = builder.path("capture.ndjson");
    let damaged_capture = builder.path("capture-without-one-batch.ndjson");
    std::fs::create_dir(&logs).unwrap();
    let log_path = logs.join("app.log");
    let mut agent = builder
        .config(&format!(
            "[wal]\nwhen_full = \"block\"\n{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 100, "concurrency = 1")
        ))
        .start()
        .await;

    let lines = numbered_lines("continuity", 0, LINES);
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let lines = lines.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            let mut log = LogFile::create(&log_path);
            for chunk in lines.chunks(LINES_PER_WRITE) {
                log.append(chunk);
                written.fetch_add(chunk.len(), Ordering::Release);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };

    receiver
        .wait_for_request("was answered 503", SHORT, |r| {
            r.outcome == Outcome::Answered(503)
        })
        .await;
    wait_until(SHORT, "1,000 lines written during the outage", async || {
        written.load(Ordering::Acquire) >= 1_000
    })
    .await;
    receiver.set_mode(Mode::Cycle(vec![
        Mode::Ok,
        Mode::Ok,
        Mode::Status(503),
        Mode::Ok,
        Mode::Reset,
    ]));
    let mut pause = 300;
    for kill in 0..KILLS {
        // The pause is the fault schedule, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        pause = 300 + (pause * 7 + 130) % 400;
        agent.kill9();
        eprintln!(
            "kill {kill}: {} of {} written lines arrived so far",
            receiver.unique_events().len(),
            written.load(Ordering::Acquire)
        );
        agent.restart().await;
    }
    writer.join().unwrap();
    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_nothing_lost();

    let requests = receiver.requests();
    let batches = received_batches(&requests);
    let report = check(&batches, "seq", Some(1));
    assert!(
        report.missing.is_empty(),
        "seqs missing without a gap record under block: {:?}; {}",
        report.missing,
        receiver.summary()
    );
    assert!(
        report.gaps.is_empty(),
        "gap records under block, after outages and kills only: {:?}",
        report.gaps
    );
    assert!(
        report.delivered >= LINES as u64,
        "{} distinct seqs delivered for {LINES} lines",
        report.delivered
    );
    assert_batches_join(&requests);
    // One agent id across every restart: the one kept in data_dir.
    let kept = std::fs::read_to_string(agent.data_dir().join("agent_id")).unwrap();
    let kept = kept.trim();
    assert_eq!(kept.len(), 36, "data_dir/agent_id is not a UUID: {kept:?}");
    let ids: BTreeSet<&str> = requests
        .iter()
        .filter_map(|r| r.header("gapless-agent-id"))
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([kept]),
        "gapless-agent-id across {KILLS} restarts"
    );

    // The same capture through the command line.
    let captured = capture_lines(&requests);
    write_capture(&capture, &captured);
    let (status, stdout, stderr) = verify_stream(&capture, 1, &[]);
    assert!(
        status.success(),
        "verify-stream on the whole capture exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("0 missing ranges")
            && stdout.contains(&format!(
                "{} duplicate deliveries",
                report.duplicate_deliveries
            )),
        "verify-stream's summary, for {} duplicate deliveries: {stdout}",
        report.duplicate_deliveries
    );

    // Take out one batch that no other accepted batch overlaps: its range is a silent hole.
    let ranges: Vec<(u64, u64)> = batches.iter().filter_map(|b| b.seq_range).collect();
    let mut overlaps: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for &(a, z) in &ranges {
        let n = ranges.iter().filter(|&&(b, y)| b <= z && a <= y).count();
        overlaps.insert((a, z), n);
    }
    let middle = ranges[ranges.len() / 2..]
        .iter()
        .copied()
        .find(|r| overlaps[r] == 1)
        .expect("an accepted batch no other batch overlaps");
    let without: Vec<String> = captured
        .iter()
        .zip(&batches)
        .filter(|(_, b)| b.seq_range != Some(middle))
        .map(|(line, _)| line.clone())
        .collect();
    assert_eq!(without.len(), captured.len() - 1);
    write_capture(&damaged_capture, &without);
    let (status, stdout, stderr) = verify_stream(&damaged_capture, 1, &[]);
    assert_eq!(
        status.code(),
        Some(1),
        "verify-stream on a capture without batch {middle:?} exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let named = format!(
        "MISSING without a gap record: seqs {}..={}",
        middle.0, middle.1
    );
    assert!(
        stdout.contains(&named),
        "verify-stream does not name the missing range ({named:?}):\n{stdout}"
    );
    let (_, json, _) = verify_stream(&damaged_capture, 1, &["--json"]);
    let report: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("verify-stream --json is not JSON ({e}): {json}"));
    assert_eq!(
        report["missing"],
        serde_json::json!([[middle.0, middle.1]]),
        "verify-stream --json: {report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seq_field_renames_the_seq_or_leaves_it_out_and_ranges_still_join() {
    let renamed = Receiver::start(Mode::Ok).await;
    let bare = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}{}",
            http_source("in", port, ""),
            named_http_sink("renamed", &renamed.url(), &["in"], 20, "seq_field = \"n\""),
            named_http_sink("bare", &bare.url(), &["in"], 20, "seq_field = \"\"")
        ))
        .start()
        .await;
    let lines = numbered_lines("seq-field", 0, 100);
    let ingest = Ingest::new(port);
    for chunk in lines.chunks(25) {
        ingest.post_ok(chunk).await;
    }
    renamed.wait_for_lines(&lines, DELIVERY).await;
    bare.wait_for_lines(&lines, DELIVERY).await;

    let with_n = renamed.events();
    for e in &with_n {
        assert!(
            e["n"].is_u64(),
            "seq_field = \"n\": an event without n: {e}"
        );
        assert!(
            e.get("seq").is_none(),
            "seq_field = \"n\": seq is still there: {e}"
        );
    }
    assert_eq!(
        event_seqs(&with_n, "n"),
        (1..=lines.len() as u64).collect(),
        "the n of the events"
    );
    let report = check(&received_batches(&renamed.requests()), "n", Some(1));
    assert!(report.missing.is_empty(), "seq_field = \"n\": {report:?}");
    assert_eq!(report.delivered, lines.len() as u64);

    // Without a seq field the events are the same, minus the seq; the headers still carry
    // the ranges, so the stream can still be checked.
    let by_message: BTreeMap<&str, &Value> = with_n
        .iter()
        .map(|e| (e["message"].as_str().unwrap(), e))
        .collect();
    for e in bare.events() {
        assert!(
            e.get("seq").is_none(),
            "seq_field = \"\": seq is there: {e}"
        );
        let mut expected = by_message[e["message"].as_str().unwrap()].clone();
        expected.as_object_mut().unwrap().remove("n");
        assert_eq!(e, expected, "seq_field = \"\" changed more than the seq");
    }
    let report = check(&received_batches(&bare.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty(),
        "seq_field = \"\": the seq ranges leave holes: {report:?}"
    );
}
