//! Configs the reload refuses: the agent logs why, naming the key and line, keeps running
//! the old config (its sources take input, its sinks deliver) and still exits 0.

use std::ffi::OsStr;

use super::{token_file, APPLYING, INVALID, TOP};
use crate::harness::agent::{run_command, wait_for_status};
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn reload_with_an_invalid_config_logs_why_and_keeps_running_the_old_one() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let good = format!(
        "{}{}",
        http_source("app", port, ""),
        http_sink(&receiver.url(), &["app"], 50, "")
    );
    let mut agent = Agent::builder()
        .top(TOP)
        .listening_on(port)
        .config(&good)
        .start()
        .await;
    let ingest = Ingest::new(port);
    let mut expected = numbered_lines("first", 0, 20);
    ingest.post_ok(&expected).await;
    receiver.wait_for_lines(&expected, DELIVERY).await;

    // (what is wrong, the config body, a line of it the error must point at, a word the
    // error must name)
    let broken = [
        (
            "an unknown key",
            format!("{good}bacth_size = 10\n"),
            "bacth_size",
            "bacth_size",
        ),
        (
            "a bad duration",
            good.replace("timeout = \"100ms\"", "timeout = \"soon\""),
            "\"soon\"",
            "timeout",
        ),
        (
            "a TOML syntax error",
            format!("{good}[sinks.unclosed\n"),
            "[sinks.unclosed",
            "line",
        ),
    ];
    for (i, (what, body, marker, word)) in broken.iter().enumerate() {
        agent.write_config(body);
        let text = std::fs::read_to_string(agent.config_path()).unwrap();
        let line = text
            .lines()
            .position(|l| l.contains(marker))
            .expect("the marker is in the config")
            + 1;
        agent.sighup();
        agent.wait_for_stderr(INVALID, i + 1).await;
        let stderr = agent.stderr_text();
        let logged = &stderr[stderr.rfind(INVALID).unwrap()..];
        let logged = logged.lines().next().unwrap_or_default();
        assert!(
            logged.contains(word) && crate::config::names_line(logged, line),
            "after a reload with {what}, the log should say why, naming {word:?} and \
             \"line {line}\"; it says: {logged}"
        );

        // The old config still runs: its source takes input and its sink delivers.
        let lines = numbered_lines(&format!("after-bad-{i}"), 0, 20);
        ingest.post_ok(&lines).await;
        receiver.wait_for_lines(&lines, DELIVERY).await;
        expected.extend(lines);
        assert!(agent.is_running(), "the agent exited after a bad reload");
        assert_eq!(agent.api_get("/ready").await.0, 200, "after {what}");
    }
    assert_eq!(
        agent.stderr_count(APPLYING),
        0,
        "the agent applied an invalid config"
    );

    // A good config still applies after the bad ones.
    agent.reload(&good).await;
    let last = numbered_lines("fixed", 0, 20);
    ingest.post_ok(&last).await;
    receiver.wait_for_lines(&last, DELIVERY).await;
    expected.extend(last);
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    assert_exactly_once(&expected, &receiver.events(), "receiver");

    agent.sigterm();
    let status = agent.wait_exit(SHORT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "bad reloads must not change the exit status: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_refuses_a_config_that_validate_rejects_for_an_unreadable_token_file() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let builder = Agent::builder().top(TOP).listening_on(port);
    let missing = builder.path("no-such-token");
    let sink = http_sink(&receiver.url(), &["app"], 50, "");
    let good = format!("{}{sink}", http_source("app", port, ""));
    let agent = builder.config(&good).start().await;
    let ingest = Ingest::new(port);
    let first = numbered_lines("first", 0, 20);
    ingest.post_ok(&first).await;
    receiver.wait_for_lines(&first, DELIVERY).await;

    agent.write_config(&format!(
        "{}{sink}",
        http_source("app", port, &token_file(&missing))
    ));
    let (status, _, stderr) = run_command(&[
        OsStr::new("validate"),
        OsStr::new("--config"),
        agent.config_path().as_os_str(),
    ]);
    assert!(
        !status.success() && stderr.contains("bearer_token_file"),
        "validate should reject a token file it cannot read ({status}): {stderr}"
    );
    agent.sighup();
    wait_until(SHORT, "the agent's verdict on the reload", async || {
        agent.stderr_count(INVALID) + agent.stderr_count(APPLYING) > 0
    })
    .await;
    assert_eq!(
        (agent.stderr_count(INVALID), agent.stderr_count(APPLYING)),
        (1, 0),
        "a config that `gapless validate` rejects (sources.app.auth.bearer_token_file \
         unreadable) should be refused by the reload and the running one kept; stderr:\n{}",
        agent.stderr_tail()
    );
    let second = numbered_lines("second", 0, 20);
    let answer = ingest
        .post_lines(&second)
        .await
        .map(|a| format!("{} {}", a.status, a.body));
    assert!(
        matches!(answer.as_deref(), Ok(a) if a.starts_with("200")),
        "the running http source (no token) should still take input: {answer:?}"
    );
    receiver.wait_for_lines(&second, DELIVERY).await;
}
