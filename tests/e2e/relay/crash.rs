//! `kill -9` of the origin agents and of the relay, in turn, while the agents' files grow
//! and the platform behind the relay answers 503: once it recovers, every origin seq of
//! every agent is there, none stored twice by the relay, and `gapless verify-stream` finds
//! no missing range for the hop or any origin. The platform may get a relay seq twice
//! (the relay's own sink resends after a kill); an origin seq under two relay seqs would
//! mean the relay stored a repeated request again. And what the relay answered 200 for
//! survives a `kill -9` right after the answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{agent_id, relay_uri, start_relay, TOKEN};
use crate::harness::receiver::Outcome;
use crate::harness::relay::{
    assert_answer, gapless_sink, origin_messages, origins, shared_token, verify_relay, RelayClient,
};
use crate::harness::snippets::file_source;
use crate::harness::*;

const AGENTS: usize = 3;
const LINES_PER_AGENT: usize = 3_000;
const LINES_PER_WRITE: usize = 50;

/// Whom each kill hits: the relay (`None`) or origin agent `i`.
const KILLS: [Option<usize>; 10] = [
    None,
    Some(0),
    Some(1),
    None,
    Some(2),
    Some(0),
    None,
    Some(1),
    Some(2),
    None,
];

// Crash: SIGKILL of an origin agent cuts its WAL tail, its sink's cursor and its file
// checkpoint wherever they were; SIGKILL of the relay cuts its WAL tail, its
// de-duplication state and its own sink's cursor — possibly after it made a request
// durable and before it answered, so that the agent sends the same seqs again.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_agents_and_relay_during_an_outage_leaves_no_origin_seq_missing() {
    kill_9_of_agents_and_relay(100, 1).await;
}

// Crash: as above, with four requests of 30 events in flight per agent, so that an
// agent's batches reach the relay out of order and a kill lands between them.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_with_requests_out_of_order_leaves_no_origin_seq_missing() {
    kill_9_of_agents_and_relay(30, 4).await;
}

/// The scenario: `AGENTS` agents, each with a gapless sink of `max_events` events per
/// request and `concurrency` requests in flight, `KILLS` kills, then the checks.
async fn kill_9_of_agents_and_relay(max_events: usize, concurrency: usize) {
    let platform = Receiver::start(Mode::Status(503)).await;
    let relay_port = free_port();
    let mut relay = start_relay(&platform, relay_port, &shared_token(TOKEN)).await;

    let mut agents = Vec::new();
    let mut writers = Vec::new();
    let mut all_lines = Vec::new();
    let written = Arc::new(AtomicUsize::new(0));
    for i in 0..AGENTS {
        let id = format!("agent-{i}");
        let builder = Agent::builder().top(&agent_id(&id));
        let logs = builder.path("logs");
        std::fs::create_dir(&logs).unwrap();
        agents.push(
            builder
                .config(&format!(
                    "{}{}",
                    file_source("app", &logs.join("*.log"), ""),
                    gapless_sink(
                        "relay",
                        &relay_uri(relay_port),
                        &["app"],
                        max_events,
                        &format!("{}\nconcurrency = {concurrency}", shared_token(TOKEN))
                    )
                ))
                .start()
                .await,
        );
        let lines = numbered_lines(&id, 0, LINES_PER_AGENT);
        all_lines.extend(lines.iter().cloned());
        let log_path = logs.join("app.log");
        let written = written.clone();
        writers.push(std::thread::spawn(move || {
            let mut log = LogFile::create(&log_path);
            for chunk in lines.chunks(LINES_PER_WRITE) {
                log.append(chunk);
                written.fetch_add(chunk.len(), Ordering::Release);
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }

    platform
        .wait_for_request("was answered 503 (the relay forwards)", SHORT, |r| {
            r.outcome == Outcome::Answered(503)
        })
        .await;
    let mut pause = 250;
    for (k, target) in KILLS.iter().enumerate() {
        // The pause is the fault schedule, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        pause = 200 + (pause * 7 + 130) % 300;
        match *target {
            None => {
                relay.kill9();
                relay.restart().await;
            }
            Some(i) => {
                agents[i].kill9();
                agents[i].restart().await;
            }
        }
        eprintln!(
            "kill {k} ({}): {} lines written",
            target.map_or("relay".to_string(), |i| format!("agent-{i}")),
            written.load(Ordering::Acquire)
        );
    }
    for w in writers {
        w.join().unwrap();
    }
    platform.set_mode(Mode::Ok);
    // One more kill of the relay while it forwards: the platform may get events twice
    // from it, under the same relay seqs.
    platform.wait_for_events(500, DELIVERY).await;
    relay.kill9();
    relay.restart().await;
    platform.wait_for_lines(&all_lines, DELIVERY).await;
    check_delivery(&all_lines, &platform.events()).assert_nothing_lost();

    let by_origin = origins(&platform.events());
    let ids: Vec<String> = (0..AGENTS).map(|i| format!("agent-{i}")).collect();
    assert_eq!(
        by_origin.keys().cloned().collect::<Vec<_>>(),
        ids,
        "origin agents seen behind the relay"
    );
    for (id, stream) in &by_origin {
        let last = stream.last();
        assert!(
            last >= LINES_PER_AGENT as u64,
            "{id}: origin seqs end at {last}"
        );
        assert_eq!(stream.holes(last), vec![], "{id}: origin seqs missing");
        assert!(
            stream.gaps.is_empty() && stream.ranges.is_empty(),
            "{id}: gap or range records without a filter or a drop: {:?} {:?}",
            stream.gaps,
            stream.ranges
        );
        let twice = stream.stored_twice();
        assert!(
            twice.is_empty(),
            "{id}: {} origin seqs stored by the relay more than once (origin seq, relay seqs): {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    verify_relay(&platform, dir.path()).assert_no_missing(&id_refs);
    eprintln!("{}", platform.summary());
}

// Crash: SIGKILL of the relay right after it answered 200, while the platform answers 503
// (nothing could have left the relay): only its WAL can have kept those events.
#[tokio::test(flavor = "multi_thread")]
async fn events_the_relay_answered_200_survive_a_kill_9_right_after_the_answer() {
    let platform = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let mut relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);
    let mut next = 1;
    for _round in 0..3 {
        for _request in 0..5 {
            let answer = client.post_range("durable", "durable", next, 50).await;
            assert_answer(&format!("seqs {next}..+50"), &answer, 200);
            next += 50;
        }
        relay.kill9();
        relay.restart().await;
    }
    assert!(
        platform.events().is_empty(),
        "the platform accepted events while it answered 503"
    );
    platform.set_mode(Mode::Ok);
    platform
        .wait_for_lines(&origin_messages("durable", 1, next - 1), DELIVERY)
        .await;
    let by_origin = origins(&platform.events());
    assert_eq!(by_origin["durable"].holes(next - 1), vec![]);
    assert!(by_origin["durable"].stored_twice().is_empty());
}

// Not a crash: the relay's WAL fills while the platform is down. The relay must push back
// (503 with Retry-After) rather than drop, and a real agent behind it must lose nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_relay_wal_answers_503_with_retry_after_and_agents_lose_nothing() {
    let platform = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let _relay = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "[wal]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\nwhen_full = \"block\"\n{}{}",
            crate::harness::relay::gapless_source("agents", port, &shared_token(TOKEN)),
            crate::harness::snippets::http_sink(&platform.url(), &["agents"], 200, "")
        ))
        .start()
        .await;
    let client = RelayClient::new(port).with_token(TOKEN);
    let mut next = 1;
    let refused = loop {
        let answer = client.post_range("raw", "full", next, 200).await;
        if answer.status != 200 {
            break answer;
        }
        next += 200;
        assert!(next < 20_000, "the relay's 1 MiB WAL took {next} events");
    };
    assert_answer("a request to a relay whose WAL is full", &refused, 503);
    assert!(
        refused.retry_after.is_some(),
        "503 without Retry-After: {refused:?}"
    );

    // A real agent meets the full relay too.
    let builder = Agent::builder().top(&agent_id("behind-full"));
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let _origin = builder
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            gapless_sink(
                "relay",
                &relay_uri(port),
                &["app"],
                100,
                &shared_token(TOKEN)
            )
        ))
        .start()
        .await;
    let lines = numbered_lines("behind a full relay", 0, 1_000);
    LogFile::create(&logs.join("app.log")).append(&lines);
    platform
        .wait_for_request("was answered 503", SHORT, |r| {
            r.outcome == Outcome::Answered(503)
        })
        .await;
    platform.set_mode(Mode::Ok);
    let answer = loop {
        let answer = client.post_range("raw", "full", next, 200).await;
        if answer.status == 200 {
            break answer;
        }
        assert_answer("the refused request again", &answer, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_answer("the refused request once the relay drained", &answer, 200);
    let mut expected = origin_messages("full", 1, next + 199);
    expected.extend(lines);
    platform.wait_for_lines(&expected, DELIVERY).await;
    let by_origin = origins(&platform.events());
    assert_eq!(by_origin["raw"].holes(next + 199), vec![]);
    let behind = &by_origin["behind-full"];
    assert_eq!(behind.holes(behind.last()), vec![]);
    assert!(behind.gaps.is_empty(), "gap records: {:?}", behind.gaps);
}
