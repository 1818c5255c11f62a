//! A receiver that rejects batches for good (400): they go to
//! `data_dir/dead-letter/<sink>/`, a `dead_letter` gap event tells the platform which seqs
//! and where, `gapless dead-letter list` shows them and `gapless dead-letter replay`
//! delivers them once the receiver accepts again, removing the files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use gapless::continuity::check;

use crate::harness::agent::{run_command_async, wait_for_status};
use crate::harness::capture::{gap_events, gap_range, received_batches};
use crate::harness::receiver::Outcome;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

/// The files in `data_dir/dead-letter/out/`, sorted.
fn dead_letter_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("dead-letter").join("out")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// The seq ranges of the `.ndjson` files (named `{first:020}-{last:020}.ndjson`).
fn dead_letter_ranges(data_dir: &Path) -> Vec<(u64, u64)> {
    dead_letter_files(data_dir)
        .iter()
        .filter_map(|p| {
            let stem = p.file_name()?.to_str()?.strip_suffix(".ndjson")?;
            let (a, z) = stem.split_once('-')?;
            Some((a.parse().ok()?, z.parse().ok()?))
        })
        .collect()
}

async fn start(receiver: &Receiver, port: u16, max_events: usize) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], max_events, "")
        ))
        .start()
        .await
}

/// Starts an agent whose sink batches 10 events, posts `lines` to a receiver answering
/// [`Mode::RejectEvents`], and waits until dead_letter gap events cover every seq.
async fn dead_letter_all(receiver: &Receiver, lines: &[String]) -> Agent {
    let port = free_port();
    let agent = start(receiver, port, 10).await;
    Ingest::new(port).post_ok(lines).await;
    wait_until(
        SHORT,
        "dead_letter gap events covering every seq",
        async || {
            let covered: u64 = gap_events(&receiver.events(), "dead_letter")
                .iter()
                .map(|g| {
                    let (a, z) = gap_range(g);
                    z - a + 1
                })
                .sum();
            covered >= lines.len() as u64
        },
    )
    .await;
    agent
}

/// `gapless dead-letter <command> --sink out --config <the agent's config>`.
async fn dead_letter_command(agent: &Agent, command: &str) -> (ExitStatus, String, String) {
    run_command_async(&[
        "dead-letter".as_ref(),
        command.as_ref(),
        "--sink".as_ref(),
        "out".as_ref(),
        "--config".as_ref(),
        agent.config_path().as_os_str(),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_batches_are_dead_lettered_announced_by_a_gap_event_and_replayed_on_demand() {
    let receiver = Receiver::start(Mode::RejectEvents { status: 400 }).await;
    let rejected = numbered_lines("dead-letter replay", 0, 30);
    let agent = dead_letter_all(&receiver, &rejected).await;
    let last_seq = rejected.len() as u64;

    let notices = gap_events(&receiver.events(), "dead_letter");
    let ranges = dead_letter_ranges(agent.data_dir());
    let noticed: Vec<(u64, u64)> = notices.iter().map(gap_range).collect();
    assert_eq!(
        noticed, ranges,
        "the dead_letter gap events and the dead-letter files name different ranges"
    );
    for n in &notices {
        let file = n["dead_letter_file"]
            .as_str()
            .unwrap_or_else(|| panic!("a dead_letter gap event without dead_letter_file: {n}"));
        assert!(
            Path::new(file).exists(),
            "{file} named by {n} does not exist"
        );
        let (a, z) = gap_range(n);
        assert_eq!(n["events"].as_u64(), Some(z - a + 1), "{n}");
    }
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty(),
        "dead-lettered seqs missing without a gap record: {report:?}"
    );
    wait_for_status(&agent, "the dead-lettered events counted", |s| {
        s["sinks"]["out"]["dead_lettered_events"] == last_seq
    })
    .await;

    let (status, stdout, stderr) = dead_letter_command(&agent, "list").await;
    assert!(
        status.success(),
        "dead-letter list exited {status}; stderr:\n{stderr}"
    );
    for (a, z) in &ranges {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("seqs {a}..={z}")))
            .unwrap_or_else(|| panic!("dead-letter list does not show seqs {a}..={z}:\n{stdout}"));
        assert!(line.contains("HTTP 400"), "no status in {line:?}");
    }

    receiver.set_mode(Mode::Ok);
    let (status, stdout, stderr) = dead_letter_command(&agent, "replay").await;
    assert!(
        status.success(),
        "dead-letter replay exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let progress = stdout
        .lines()
        .filter(|l| l.contains("replayed seqs"))
        .count();
    assert_eq!(
        progress,
        ranges.len(),
        "one progress line per dead-lettered batch:\n{stdout}"
    );
    let replayed: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.header("gapless-replay") == Some("dead-letter"))
        .collect();
    assert!(
        replayed.iter().all(|r| r.accepted()),
        "{}",
        receiver.summary()
    );
    let replayed_events: Vec<_> = replayed.iter().flat_map(|r| r.events.clone()).collect();
    check_delivery(&rejected, &replayed_events).assert_exactly_once();
    let seqs: BTreeSet<u64> = replayed_events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=last_seq).collect(), "the replayed events' seqs");
    assert!(
        dead_letter_files(agent.data_dir()).is_empty(),
        "replay left files behind: {:?}",
        dead_letter_files(agent.data_dir())
    );
    let gap_metric = agent
        .metric("gapless_gap_records_total", &[("reason", "dead_letter")])
        .await;
    assert!(
        gap_metric >= Some(1.0),
        "gapless_gap_records_total{{reason=\"dead_letter\"}} = {gap_metric:?}"
    );
}

// The receiver refuses everything, the agent's notice included; once it accepts again the
// platform must still learn, in the stream, what went to the dead-letter queue — otherwise
// the rejected range is a silent hole.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_notice_the_receiver_refused_still_arrives_once_it_accepts_again() {
    let receiver = Receiver::start(Mode::Status(400)).await;
    let port = free_port();
    let agent = start(&receiver, port, 100).await;
    let ingest = Ingest::new(port);
    let rejected = numbered_lines("dead-letter refused", 0, 20);
    ingest.post_ok(&rejected).await;
    receiver
        .wait_for_request("carries a dead_letter gap event", SHORT, |r| {
            r.outcome == Outcome::Answered(400) && !gap_events(&r.events, "dead_letter").is_empty()
        })
        .await;
    let ranges = dead_letter_ranges(agent.data_dir());
    assert!(!ranges.is_empty(), "nothing was dead-lettered");

    receiver.set_mode(Mode::Ok);
    let later = numbered_lines("dead-letter accepted", 0, 20);
    ingest.post_ok(&later).await;
    receiver.wait_for_lines(&later, DELIVERY).await;
    // Polled with a deadline rather than `wait_until`, so that a failure shows what the
    // checker makes of the stream.
    let deadline = Instant::now() + SHORT;
    let noticed = loop {
        let noticed: Vec<(u64, u64)> = gap_events(&receiver.events(), "dead_letter")
            .iter()
            .map(gap_range)
            .collect();
        if ranges.iter().all(|r| noticed.contains(r)) || Instant::now() > deadline {
            break noticed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        ranges.iter().all(|r| noticed.contains(r)),
        "{SHORT:?} after the receiver accepts again, no dead_letter gap event names the \
         dead-lettered seqs {ranges:?} (accepted ones name {noticed:?}); the checker finds \
         them missing without a gap record: {:?}",
        report.missing
    );
    assert!(report.missing.is_empty(), "{report:?}");
}

// The continuity headers identify the stream a request belongs to; a replayed batch that
// does not say which agent it comes from cannot be put back in its place.
#[tokio::test(flavor = "multi_thread")]
async fn replayed_dead_letters_carry_the_agent_id_and_seq_range_of_their_batch() {
    let receiver = Receiver::start(Mode::RejectEvents { status: 400 }).await;
    let rejected = numbered_lines("dead-letter headers", 0, 20);
    let agent = dead_letter_all(&receiver, &rejected).await;
    let ranges = dead_letter_ranges(agent.data_dir());
    let agent_id = agent.status_json().await["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    receiver.set_mode(Mode::Ok);
    let (status, stdout, stderr) = dead_letter_command(&agent, "replay").await;
    assert!(
        status.success(),
        "dead-letter replay exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let replayed: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|r| r.header("gapless-replay") == Some("dead-letter"))
        .collect();
    assert_eq!(
        replayed
            .iter()
            .filter_map(|r| r.seq_range())
            .collect::<Vec<_>>(),
        ranges,
        "the replayed requests' gapless-seq-range"
    );
    for r in &replayed {
        assert_eq!(
            r.header("gapless-agent-id"),
            Some(agent_id.as_str()),
            "a replayed request without its agent's id; headers: {:?}",
            r.headers
        );
    }
}

// The notice is a request of its own with another body: under the rejected batch's
// Idempotency-Key, a platform that remembers keys would answer it with the cached 400 (or
// a 422 for a reused key), and the notice would never be taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_notice_does_not_reuse_the_idempotency_key_of_the_rejected_batch() {
    let receiver = Receiver::start(Mode::RejectEvents { status: 400 }).await;
    let rejected = numbered_lines("dead-letter key", 0, 10);
    let _agent = dead_letter_all(&receiver, &rejected).await;
    let requests = receiver.requests();
    let key = |r: &crate::harness::receiver::Request| {
        r.header("idempotency-key")
            .unwrap_or_else(|| panic!("a request without idempotency-key: {:?}", r.headers))
            .to_string()
    };
    let batch_keys: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.outcome == Outcome::Answered(400))
        .map(key)
        .collect();
    for notice in requests
        .iter()
        .filter(|r| !gap_events(&r.events, "dead_letter").is_empty())
    {
        assert!(
            !batch_keys.contains(&key(notice)),
            "the dead_letter notice for {:?} reuses the rejected batch's Idempotency-Key {:?}",
            notice.seq_range(),
            key(notice)
        );
    }
}
