//! `gapless status --api ADDR`: a summary of a running agent naming each sink with its
//! backlog and each source with its events, or the same as JSON with `--json`; exit 0
//! while delivery is healthy and 1 while it is not.

use serde_json::Value;

use crate::harness::agent::{run_command_async, wait_for_status};
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

/// `gapless status --api <the agent's API>` plus `extra`: exit status, stdout, stderr.
async fn status_command(
    agent: &Agent,
    extra: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let api = agent.api_addr().to_string();
    let mut args = vec!["status".as_ref(), "--api".as_ref(), api.as_ref()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    run_command_async(&args).await
}

async fn start(receiver: &Receiver, port: u16, sink_extra: &str) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 50, sink_extra)
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn status_names_each_sink_with_its_backlog_as_text_and_json_and_exits_0_when_healthy() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start(&receiver, port, "").await;
    let lines = numbered_lines("status", 0, 20);
    Ingest::new(port).post_ok(&lines).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;

    let (text_status, text, stderr) = status_command(&agent, &[]).await;
    assert!(
        text.contains("out: backlog 0 events"),
        "the summary does not show sink out's backlog:\n{text}\nstderr:\n{stderr}"
    );
    assert!(
        text.contains("in: 20 events in"),
        "the summary does not show source in's events:\n{text}"
    );
    let (json_status, json, stderr) = status_command(&agent, &["--json"]).await;
    let v: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {json}\nstderr:\n{stderr}"));
    let out = &v["sinks"]["out"];
    assert_eq!(out["backlog_events"], 0, "{v:#}");
    assert_eq!(out["delivered_events"], lines.len(), "{v:#}");
    assert!(out["delivery_rate_per_second"].is_number(), "{v:#}");
    assert!(out["backlog_bytes"].is_u64(), "{v:#}");

    let api_status = agent.status_json().await;
    assert!(
        text_status.success() && json_status.success(),
        "gapless status exited {text_status} (text) and {json_status} (--json) for a healthy \
         agent (/health/delivery: {:?}); /status has \"status\": {}; summary:\n{text}",
        agent.api_get("/health/delivery").await,
        api_status["status"]
    );
    assert_eq!(
        api_status["status"], "healthy",
        "/status of a healthy agent: {api_status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_exits_1_and_shows_the_last_error_while_delivery_is_unhealthy() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = start(
        &receiver,
        port,
        "alert_after = \"1s\"\nalert_after_failed_requests = 1000",
    )
    .await;
    Ingest::new(port)
        .post_ok(&numbered_lines("status down", 0, 20))
        .await;
    wait_until(SHORT, "/health/delivery answering 503", async || {
        agent.api_get("/health/delivery").await.0 == 503
    })
    .await;

    let (status, text, stderr) = status_command(&agent, &[]).await;
    assert_eq!(
        status.code(),
        Some(1),
        "gapless status exited {status} for an unhealthy agent; stdout:\n{text}\nstderr:\n{stderr}"
    );
    assert!(text.contains("UNHEALTHY"), "{text}");
    assert!(
        text.contains("last error: HTTP 503"),
        "the summary does not show the last error:\n{text}"
    );
    let api_status = agent.status_json().await;
    assert_eq!(
        api_status["status"], "unhealthy",
        "/status of an agent whose /health/delivery is 503: {api_status:#}"
    );
}
