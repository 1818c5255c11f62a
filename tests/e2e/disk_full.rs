//! The file system under data_dir fills up (a real 16 MiB tmpfs) while the receiver is
//! down: the agent stays up, the http source answers 503 with `Retry-After`, the file source
//! pauses, and once the receiver is back — delivery frees segments — every line arrives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::agent::wait_for_status;
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

/// A WAL allowed more than the file system holds, so that the disk fills first, in
/// segments small enough to be freed one by one.
const WAL: &str = r#"
[wal]
max_bytes = "64MiB"
segment_bytes = "1MiB"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_makes_the_http_source_answer_503_and_every_line_it_took_arrives_later() {
    let tmpfs = Tmpfs::mount("16m");
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .data_dir(&tmpfs.path().join("data"))
        .config(&format!(
            "{WAL}{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 1000, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);

    // 16 MiB of events is roughly 60k lines of these: post until the source says no.
    let mut accepted: Vec<String> = Vec::new();
    let mut refusal = None;
    let mut refused: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for request in 0.. {
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {} lines accepted",
            accepted.len()
        );
        let lines = numbered_lines(&format!("disk-full r{request}"), 0, 500);
        let answer = ingest
            .post_lines(&lines)
            .await
            .expect("the http source answers");
        match answer.status {
            200 => accepted.extend(lines),
            503 => {
                refusal = Some(answer);
                refused.extend(lines);
                break;
            }
            other => panic!(
                "the http source answered {other} on a full disk: {}",
                answer.body
            ),
        }
    }
    let refusal = refusal.unwrap();
    assert!(
        refusal.retry_after.is_some(),
        "a 503 for a full disk comes with Retry-After: {refusal:?}"
    );
    assert!(accepted.len() > 10_000, "only {} lines fit", accepted.len());
    let status = agent.status_json().await;
    assert!(
        status["wal"]["disk_full_errors"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "/status should count the disk-full errors: {:#}",
        status["wal"]
    );
    // Still full, still up, still answering.
    let refused_again = numbered_lines("disk-full refused", 0, 500);
    let again = ingest
        .post_lines(&refused_again)
        .await
        .expect("the http source answers on a full disk");
    assert_eq!(again.status, 503, "{again:?}");
    refused.extend(refused_again);
    assert_eq!(agent.api_get("/health").await.0, 200);

    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&accepted, DELIVERY).await;
    check_delivery(&accepted, &receiver.events()).assert_nothing_lost();
    // A request answered 503 was not taken: none of its lines may arrive (the client will
    // send them again; arriving too would make them duplicates the client cannot foresee).
    let arrived: std::collections::BTreeSet<String> =
        lines_in(&receiver.events()).into_iter().collect();
    let stray: Vec<&String> = refused.iter().filter(|l| arrived.contains(*l)).collect();
    assert!(
        stray.is_empty(),
        "{} lines answered 503 arrived, e.g. {:?}",
        stray.len(),
        stray.first()
    );

    // Delivery freed segments: the source takes events again, and they arrive.
    let after = numbered_lines("disk-freed", 0, 100);
    wait_until(
        SHORT,
        "the http source to accept events again",
        async || {
            ingest
                .post_lines(&after)
                .await
                .is_ok_and(|a| a.status == 200)
        },
    )
    .await;
    receiver.wait_for_lines(&after, DELIVERY).await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_pauses_the_file_source_and_every_line_arrives_once_delivery_frees_space() {
    let tmpfs = Tmpfs::mount("16m");
    let receiver = Receiver::start(Mode::Status(503)).await;
    let builder = Agent::builder().data_dir(&tmpfs.path().join("data"));
    // The log itself lives on the ordinary disk.
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let log_path = logs.join("app.log");
    let mut agent = builder
        .config(&format!(
            "{WAL}{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 1000, "")
        ))
        .start()
        .await;

    // More than the tmpfs can hold as WAL records.
    let lines = numbered_lines("disk-full-file", 0, 100_000);
    let written = Arc::new(AtomicBool::new(false));
    let writer = {
        let lines = lines.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            let mut log = LogFile::create(&log_path);
            for chunk in lines.chunks(5000) {
                log.append(chunk);
            }
            written.store(true, Ordering::Release);
        })
    };
    writer.join().unwrap();
    assert!(written.load(Ordering::Acquire));

    wait_for_status(&agent, "the WAL running into the full disk", |s| {
        s["wal"]["disk_full_errors"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    assert!(agent.is_running(), "the agent exited on a full disk");
    assert_eq!(agent.api_get("/health").await.0, 200);

    receiver.set_mode(Mode::Ok);
    receiver
        .wait_for_lines(&lines, Duration::from_secs(60))
        .await;
    check_delivery(&lines, &receiver.events()).assert_nothing_lost();
}
