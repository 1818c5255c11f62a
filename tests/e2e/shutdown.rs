//! SIGTERM: the request in flight is let finish, the cursor and checkpoints are persisted,
//! the agent exits 0 — within `shutdown_timeout` even if the receiver stalls — and the
//! next start resumes from the cursor: what was delivered is not sent again, what was not
//! is sent then.

use std::time::{Duration, Instant};

use crate::harness::receiver::Outcome;
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_request_in_flight_finish_exits_0_and_the_next_start_resumes_from_the_cursor(
) {
    let receiver = Receiver::start(Mode::Slow(Duration::from_millis(1500))).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .listening_on(port)
        .top("shutdown_timeout = \"5s\"")
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 50, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let lines = numbered_lines("sigterm-drain", 0, 200);
    ingest.post_ok(&lines[..50]).await;
    receiver
        .wait_for_request("is in flight", SHORT, |r| r.outcome == Outcome::Pending)
        .await;
    // These wait in the WAL behind the batch in flight.
    ingest.post_ok(&lines[50..]).await;

    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(10)).await;
    let exited = Instant::now();
    assert!(status.success(), "exit status {status} after SIGTERM");
    let first = &receiver.requests()[0];
    assert_eq!(
        first.outcome,
        Outcome::Answered(200),
        "the request in flight at SIGTERM was not let finish"
    );
    assert!(first.answered.is_some_and(|t| t <= exited));

    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    // The batch acknowledged before the exit is not sent again: the cursor was persisted.
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_in_order(&lines, &receiver.events());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_stalled_request_exits_0_within_shutdown_timeout_and_the_batch_is_sent_on_the_next_start(
) {
    let receiver = Receiver::start(Mode::Stall).await;
    let port = free_port();
    let shutdown_timeout = Duration::from_secs(1);
    let mut agent = Agent::builder()
        .listening_on(port)
        .top("shutdown_timeout = \"1s\"")
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            // A request_timeout far longer than shutdown_timeout: only the latter can end it.
            http_sink(&receiver.url(), &["in"], 50, "")
                .replace("request_timeout = \"2s\"", "request_timeout = \"60s\"")
        ))
        .start()
        .await;
    let lines = numbered_lines("sigterm-stall", 0, 120);
    Ingest::new(port).post_ok(&lines).await;
    receiver
        .wait_for_request("stalls", SHORT, |r| r.outcome == Outcome::Stalled)
        .await;

    let asked = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15)).await;
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status} after SIGTERM");
    // The pipeline allows itself 2 s on top of shutdown_timeout to close the WAL; the rest
    // is margin for a loaded machine. request_timeout is 60 s: only shutdown_timeout can
    // explain an exit this early.
    assert!(
        took <= shutdown_timeout + Duration::from_secs(2 + 8),
        "SIGTERM took {took:?} with shutdown_timeout = {shutdown_timeout:?}"
    );

    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_in_order(&lines, &receiver.events());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_persists_file_checkpoints_so_the_next_start_reads_on_without_duplicates() {
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut log = LogFile::create(&logs.join("app.log"));
    let mut agent = builder
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 100, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("sigterm-file", 0, 600);
    log.append(&lines[..300]);
    receiver.wait_for_lines(&lines[..300], DELIVERY).await;

    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status} after SIGTERM");
    log.append(&lines[300..]);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_in_order(&lines, &receiver.events());
}
