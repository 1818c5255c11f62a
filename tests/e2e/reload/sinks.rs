//! What a valid reload changes, on the same WAL: a source and a sink added, a sink removed
//! (its cursor stays until `gapless wal forget-cursor`), a sink moved to another endpoint
//! with another token — and for every sink that stays, no record lost or sent twice.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::{authorizations, last_seq, token, APPLYING, SLOW, TOP};
use crate::harness::agent::{run_command, wait_for_status};
use crate::harness::snippets::{file_source, http_source, named_http_sink};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn reload_adding_a_source_and_a_sink_delivers_through_both_and_the_existing_sink_loses_and_repeats_nothing(
) {
    let platform = Receiver::start(Mode::Slow(SLOW)).await;
    let archive = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder().top(TOP);
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = file_source("app", &logs.join("*.log"), "");
    let platform_sink = named_http_sink("platform", &platform.url(), &["app"], 100, "");
    let mut agent = builder
        .config(&format!("{app}{platform_sink}"))
        .start()
        .await;

    let mut log = LogFile::create(&logs.join("app.log"));
    let before = numbered_lines("before", 0, 400);
    log.append(&before);
    // The reload meets a backlog, and (with slow answers) most likely a request in flight.
    platform.wait_for_events(100, DELIVERY).await;
    let writer = LogWriter::start(log, "during");
    writer.wait_for_more(50).await;
    let port = free_port();
    agent
        .reload(&format!(
            "{app}{}{platform_sink}{}",
            http_source("extra", port, ""),
            named_http_sink("archive", &archive.url(), &["extra"], 100, "")
        ))
        .await;
    writer.wait_for_more(50).await;
    let (mut log, during) = writer.stop();
    let after = numbered_lines("after", 0, 100);
    log.append(&after);
    let extra = numbered_lines("extra", 0, 50);
    Ingest::new(port).post_ok(&extra).await;

    let app_lines = [before, during, after].concat();
    platform.wait_for_lines(&app_lines, DELIVERY).await;
    archive.wait_for_lines(&extra, DELIVERY).await;
    wait_for_status(&agent, "both sinks without backlog", |s| {
        s["sinks"]["platform"]["backlog_events"] == 0
            && s["sinks"]["archive"]["backlog_events"] == 0
    })
    .await;
    let events = platform.events();
    assert_exactly_once(&app_lines, &events, "platform (the existing sink)");
    assert_ranges_cover_once(
        &platform.accepted_seq_ranges(),
        last_seq(&events),
        "platform",
    );
    assert_exactly_once(&extra, &archive.events(), "archive (the new sink)");
    assert_eq!(agent.stderr_count(APPLYING), 1);

    agent.sigterm();
    assert_eq!(agent.wait_exit(SHORT).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_removing_a_sink_keeps_its_cursor_until_forget_cursor_deletes_it() {
    let platform = Receiver::start(Mode::Ok).await;
    let old = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder().top(TOP);
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = file_source("app", &logs.join("*.log"), "");
    let platform_sink = named_http_sink("platform", &platform.url(), &["app"], 100, "");
    let old_sink = named_http_sink("old", &old.url(), &["app"], 100, "");
    let mut agent = builder
        .config(&format!("{app}{platform_sink}{old_sink}"))
        .start()
        .await;
    let mut log = LogFile::create(&logs.join("app.log"));
    let first = numbered_lines("first", 0, 50);
    log.append(&first);
    platform.wait_for_lines(&first, DELIVERY).await;
    old.wait_for_lines(&first, DELIVERY).await;

    agent.reload(&format!("{app}{platform_sink}")).await;
    let warned = agent
        .stderr_text()
        .lines()
        .any(|l| l.contains("sink removed") && l.contains("old"));
    assert!(
        warned,
        "no warning that sink old was removed and keeps its cursor; stderr:\n{}",
        agent.stderr_tail()
    );
    let second = numbered_lines("second", 0, 50);
    log.append(&second);
    platform.wait_for_lines(&second, DELIVERY).await;
    let late = check_delivery(&second, &old.events());
    assert_eq!(
        late.missing.len(),
        second.len(),
        "the removed sink still delivered after the reload"
    );

    let data_dir = agent.data_dir().to_path_buf();
    let cursor = data_dir.join("wal").join("old.cursor");
    assert!(
        cursor.exists(),
        "{} is gone after the reload",
        cursor.display()
    );
    let forget = || {
        run_command(&[
            OsStr::new("wal"),
            OsStr::new("forget-cursor"),
            OsStr::new("old"),
            OsStr::new("--data-dir"),
            data_dir.as_os_str(),
        ])
    };
    let (status, _, _) = forget();
    assert!(
        !status.success() && cursor.exists(),
        "forget-cursor must refuse while the agent runs on the WAL ({status})"
    );

    agent.sigterm();
    assert_eq!(agent.wait_exit(SHORT).await.code(), Some(0));
    assert!(
        cursor.exists(),
        "{} is gone after the stop",
        cursor.display()
    );
    let cursors = inspect_cursors(&data_dir);
    assert!(
        cursors["old"]["backlog_records"].as_u64() >= Some(second.len() as u64),
        "the removed sink's cursor should keep the backlog written after its removal: \
         {cursors:#}"
    );

    let (status, stdout, stderr) = forget();
    assert!(
        status.success(),
        "forget-cursor old ({status}): {stdout}{stderr}"
    );
    assert!(
        !cursor.exists(),
        "{} is still there after forget-cursor",
        cursor.display()
    );
    let cursors = inspect_cursors(&data_dir);
    assert!(
        cursors.get("old").is_none() && cursors.get("platform").is_some(),
        "after forget-cursor old: {cursors:#}"
    );
}

/// `gapless wal inspect`'s cursors, by name.
fn inspect_cursors(data_dir: &Path) -> Value {
    let (status, stdout, stderr) = run_command(&[
        OsStr::new("wal"),
        OsStr::new("inspect"),
        OsStr::new("--data-dir"),
        data_dir.as_os_str(),
    ]);
    assert!(status.success(), "wal inspect ({status}): {stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let mut by_name = serde_json::Map::new();
    for c in v["cursors"].as_array().expect("cursors") {
        by_name.insert(c["name"].as_str().unwrap().to_string(), c.clone());
    }
    json!(by_name)
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_moving_a_sink_to_another_endpoint_and_token_sends_every_line_once_across_both() {
    let first = Receiver::start(Mode::Slow(SLOW)).await;
    let second = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder().top(TOP);
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = file_source("app", &logs.join("*.log"), "");
    let sink = |uri: &str, t: &str| named_http_sink("platform", uri, &["app"], 100, &token(t));
    let mut agent = builder
        .config(&format!("{app}{}", sink(&first.url(), "old-token")))
        .start()
        .await;

    let mut log = LogFile::create(&logs.join("app.log"));
    let before = numbered_lines("before", 0, 400);
    log.append(&before);
    first.wait_for_events(100, DELIVERY).await;
    let writer = LogWriter::start(log, "during");
    writer.wait_for_more(50).await;
    agent
        .reload(&format!("{app}{}", sink(&second.url(), "new-token")))
        .await;
    let reloaded = Instant::now();
    writer.wait_for_more(50).await;
    let (mut log, during) = writer.stop();
    let after = numbered_lines("after", 0, 100);
    log.append(&after);

    let lines = [before, during, after.clone()].concat();
    second.wait_for_lines(&after, DELIVERY).await;
    wait_until(
        DELIVERY,
        "every line at one receiver or the other",
        async || {
            let both = [first.events(), second.events()].concat();
            check_delivery(&lines, &both).missing.is_empty()
        },
    )
    .await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["platform"]["backlog_events"] == 0
    })
    .await;

    let both = [first.events(), second.events()].concat();
    assert_exactly_once(&lines, &both, "the two receivers together");
    let ranges = [first.accepted_seq_ranges(), second.accepted_seq_ranges()].concat();
    assert_ranges_cover_once(&ranges, last_seq(&both), "the two receivers together");
    let old_tokens = authorizations(&first.requests());
    let new_tokens = authorizations(&second.requests());
    assert_eq!(
        old_tokens.keys().collect::<Vec<_>>(),
        ["Bearer old-token"],
        "the first endpoint got: {old_tokens:?}"
    );
    assert_eq!(
        new_tokens.keys().collect::<Vec<_>>(),
        ["Bearer new-token"],
        "the second endpoint got: {new_tokens:?}"
    );
    let stray: Vec<_> = first
        .requests()
        .into_iter()
        .filter(|r| r.arrived > reloaded)
        .map(|r| r.seq_range())
        .collect();
    assert!(
        stray.is_empty(),
        "the old endpoint got requests after the reload was applied: {stray:?}"
    );
}
