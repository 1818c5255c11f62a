//! The journald source against real journal files (written by `systemd-journal-remote`,
//! read by the real `journalctl`): entries written before start, while running and while
//! stopped arrive exactly once and in order, across boots and `kill -9`; filters; binary
//! and multi-line messages; a cursor vacuumed away; a killed `journalctl`.

use std::time::Duration;

use serde_json::Value;

use crate::harness::agent::wait_for_status;
use crate::harness::capture::gap_events;
use crate::harness::journal::{journalctl_pids, Journal, JournalEntry};
use crate::harness::snippets::{http_sink, journald_source};
use crate::harness::*;

/// A receiver that takes everything, a journal in `journal/`, and an agent with the
/// journald source `journal` (`extra` in its table) sending to it.
async fn setup(extra: &str, before: impl FnOnce(&mut Journal)) -> (Receiver, Agent, Journal) {
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let mut journal = Journal::create(&builder.path("journal"));
    before(&mut journal);
    let agent = builder
        .config(&format!(
            "{}{}",
            journald_source("journal", journal.dir(), extra),
            http_sink(&receiver.url(), &["journal"], 500, "")
        ))
        .start()
        .await;
    (receiver, agent, journal)
}

async fn stop(agent: &mut Agent) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status} after SIGTERM");
}

fn assert_delivered_once_in_order(lines: &[String], receiver: &Receiver) {
    let events = receiver.events();
    check_delivery(lines, &events).assert_exactly_once();
    assert_in_order(lines, &events);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_written_before_start_while_running_and_while_stopped_arrive_exactly_once_in_order()
{
    let lines = numbered_lines("journal", 0, 1200);
    let (receiver, mut agent, mut journal) =
        setup("", |j| j.write_lines("app.service", &lines[..300])).await;
    receiver.wait_for_lines(&lines[..300], DELIVERY).await;
    journal.write_lines("app.service", &lines[300..600]);
    receiver.wait_for_lines(&lines[..600], DELIVERY).await;

    stop(&mut agent).await;
    journal.write_lines("app.service", &lines[600..900]);
    agent.restart().await;
    receiver.wait_for_lines(&lines[..900], DELIVERY).await;
    journal.write_lines("app.service", &lines[900..]);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);

    let first = receiver
        .events()
        .into_iter()
        .find(|e| e["message"] == lines[0].as_str())
        .unwrap();
    assert_eq!(first["timestamp"], "2023-11-14T22:13:20.001000Z");
    assert_eq!(first["host"], "journalhost");
    assert_eq!(first["source"], "journal");
    assert_eq!(first["journal"]["_SYSTEMD_UNIT"], "app.service");
    assert_eq!(first["journal"]["PRIORITY"], "6");
    assert_eq!(first["journal"]["_BOOT_ID"], format!("{:032x}", 0xa));
    assert_eq!(first["journal"]["__MONOTONIC_TIMESTAMP"], "1001000");
    assert!(first["journal"].get("__CURSOR").is_none(), "{first}");
    assert!(first["journal"].get("MESSAGE").is_none(), "{first}");
    let status = agent.status_json().await;
    let cursor = status["sources"]["journal"]["journal_cursor"]
        .as_str()
        .unwrap();
    assert!(cursor.starts_with("s="), "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_boots_written_while_stopped_arrive_exactly_once_in_order() {
    // journalctl without --merge follows only the newest boot, and --follow --after-cursor
    // in an older boot skips the rest of it and the first entry of the next.
    let lines = numbered_lines("boots", 0, 400);
    let (receiver, mut agent, mut journal) =
        setup("", |j| j.write_lines("app.service", &lines[..100])).await;
    receiver.wait_for_lines(&lines[..100], DELIVERY).await;

    stop(&mut agent).await;
    journal.write_lines("app.service", &lines[100..200]);
    journal.new_boot(0xb);
    journal.write_lines("app.service", &lines[200..300]);
    agent.restart().await;
    receiver.wait_for_lines(&lines[..300], DELIVERY).await;
    journal.new_boot(0xc);
    journal.write_lines("app.service", &lines[300..]);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
    let boots: std::collections::BTreeSet<String> = receiver
        .events()
        .iter()
        .filter_map(|e| e["journal"]["_BOOT_ID"].as_str().map(str::to_string))
        .collect();
    assert_eq!(boots.len(), 3, "{boots:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_loses_nothing_and_duplicates_stay_within_two_appends() {
    let lines = numbered_lines("kill", 0, 20_000);
    let (receiver, mut agent, mut journal) = setup("", |_| {}).await;
    journal.write_lines("app.service", &lines[..10_000]);
    receiver.wait_for_events(2000, DELIVERY).await;
    // Crash mid-stream: appends in flight and a cursor not yet saved.
    agent.kill9();
    // journalctl 252 with --follow exits once its stdout closes (it polls for POLLHUP):
    // a killed agent leaves no reader behind.
    wait_until(SHORT, "the killed agent's journalctl to exit", async || {
        journalctl_pids(journal.dir()).is_empty()
    })
    .await;
    journal.write_lines("app.service", &lines[10_000..]);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    let delivery = check_delivery(&lines, &receiver.events());
    delivery.assert_nothing_lost();
    // The source re-reads at most the entries whose cursor was not saved: the append in
    // flight and the batch being filled (4096 each); the sink may resend one batch.
    assert!(
        delivery.duplicates <= 2 * 4096 + 500,
        "{} duplicates",
        delivery.duplicates
    );
    assert!(delivery.unexpected.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn units_and_matches_take_only_matching_entries() {
    // units: any of them; matches: any value of a field, every field; both: units AND matches.
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let mut journal = Journal::create(&builder.path("journal"));
    let e = |m: &str, unit: &str, facility: Option<&str>| {
        let e = JournalEntry::message(m).unit(unit);
        match facility {
            Some(f) => e.field("SYSLOG_FACILITY", f),
            None => e,
        }
    };
    journal.write(&[
        e("ssh-4", "ssh.service", Some("4")),
        e("sudo-10", "sudo.service", Some("10")),
        e("ssh-3", "ssh.service", Some("3")),
        e("cron-4", "cron.service", Some("4")),
        e("cron-10", "cron.service", Some("10")),
        e("sudo-none", "sudo.service", None),
        e("cron-none", "cron.service", None),
    ]);
    let _agent = builder
        .config(&format!(
            "{}{}{}{}",
            journald_source("units", journal.dir(), r#"units = ["ssh.service", "sudo.service"]"#),
            journald_source("fields", journal.dir(), r#"matches = { SYSLOG_FACILITY = ["4", "10"] }"#),
            journald_source(
                "both",
                journal.dir(),
                "units = [\"ssh.service\", \"sudo.service\"]\nmatches = { SYSLOG_FACILITY = [\"4\", \"10\"] }"
            ),
            http_sink(&receiver.url(), &["units", "fields", "both"], 500, "")
        ))
        .start()
        .await;
    let events = receiver.wait_for_events(4 + 4 + 2, DELIVERY).await;
    // Whatever might still come: a later entry that everyone takes marks the end.
    journal.write(&[e("end", "ssh.service", Some("4"))]);
    receiver.wait_for_events(13, DELIVERY).await;
    let _ = events;
    let of = |source: &str| -> Vec<String> {
        receiver
            .events()
            .iter()
            .filter(|e| e["source"] == source)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        of("units"),
        ["ssh-4", "sudo-10", "ssh-3", "sudo-none", "end"]
    );
    assert_eq!(
        of("fields"),
        ["ssh-4", "sudo-10", "cron-4", "cron-10", "end"]
    );
    assert_eq!(of("both"), ["ssh-4", "sudo-10", "end"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_and_multi_line_messages_arrive_whole_and_invalid_utf8_is_flagged() {
    let (receiver, _agent, _journal) = setup("", |j| {
        j.write(&[
            JournalEntry::message("line one\nline two\n\tline three"),
            JournalEntry::message(b"bad \xff\xfe byte"),
            JournalEntry::message("plain"),
        ])
    })
    .await;
    let events = receiver.wait_for_events(3, DELIVERY).await;
    let messages: Vec<&Value> = events.iter().map(|e| &e["message"]).collect();
    assert_eq!(
        messages,
        [
            "line one\nline two\n\tline three",
            "bad \u{FFFD}\u{FFFD} byte",
            "plain"
        ]
    );
    assert_eq!(events[0].get("invalid_utf8"), None);
    assert_eq!(events[1]["invalid_utf8"], true);
    assert_eq!(events[2].get("invalid_utf8"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_vacuumed_away_while_stopped_gives_a_source_overflow_gap_then_the_oldest_entry_on()
{
    let lines = numbered_lines("vacuum", 0, 300);
    let (receiver, mut agent, mut journal) =
        setup("", |j| j.write_lines("app.service", &lines[..100])).await;
    receiver.wait_for_lines(&lines[..100], DELIVERY).await;
    stop(&mut agent).await;
    // Lost: written and vacuumed while the agent was stopped.
    journal.write_lines("app.service", &numbered_lines("lost", 0, 50));
    journal.vacuum();
    journal.write_lines("app.service", &lines[100..]);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
    let events = receiver.events();
    let gaps = gap_events(&events, "source_overflow");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    // The gap comes before the first entry read after it.
    let seq_of = |m: &str| {
        events
            .iter()
            .find(|e| e["message"] == m)
            .and_then(|e| e["seq"].as_u64())
            .unwrap()
    };
    let gap_seq = gaps[0]["seq"].as_u64().unwrap();
    assert!(seq_of(&lines[99]) < gap_seq && gap_seq < seq_of(&lines[100]));
    assert_eq!(
        agent
            .metric(
                "gapless_dropped_events_total",
                &[("reason", "source_overflow")]
            )
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_journalctl_is_restarted_counted_and_shown_in_status() {
    let lines = numbered_lines("restart", 0, 200);
    let (receiver, agent, mut journal) =
        setup("", |j| j.write_lines("app.service", &lines[..100])).await;
    receiver.wait_for_lines(&lines[..100], DELIVERY).await;
    let mut pids = Vec::new();
    wait_until(SHORT, "the following journalctl", async || {
        pids = journalctl_pids(journal.dir());
        pids.len() == 1
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_status(&agent, "one journalctl restart", |s| {
        s["sources"]["journal"]["journalctl_restarts"] == 1
    })
    .await;
    let status = agent.status_json().await;
    let error = status["sources"]["journal"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("SIGKILL") || error.contains("signal: 9"),
        "{error}"
    );
    assert_eq!(
        agent
            .metric(
                "gapless_source_journalctl_restarts_total",
                &[("source", "journal")]
            )
            .await,
        Some(1.0)
    );
    journal.write_lines("app.service", &lines[100..]);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_from_end_skips_what_the_journal_held_at_the_first_start_only() {
    let old = numbered_lines("old", 0, 50);
    let lines = numbered_lines("new", 0, 100);
    let (receiver, mut agent, mut journal) = setup("read_from = \"end\"", |j| {
        j.write_lines("app.service", &old)
    })
    .await;
    journal.write_lines("app.service", &lines[..50]);
    receiver.wait_for_lines(&lines[..50], DELIVERY).await;
    stop(&mut agent).await;
    journal.write_lines("app.service", &lines[50..]);
    agent.restart().await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_journal_directory_is_waited_for_without_a_warning_each_time() {
    let lines = numbered_lines("late", 0, 50);
    let (receiver, agent, mut journal) = setup("", |_| {}).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    journal.write_lines("app.service", &lines);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
    let warnings = agent.stderr_text().matches("journalctl stopped").count();
    assert!(
        warnings <= 1,
        "{warnings} warnings:\n{}",
        agent.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_journalctl_is_killed_restarted_and_nothing_is_lost() {
    let lines = numbered_lines("hung", 0, 200);
    let (receiver, agent, mut journal) =
        setup("", |j| j.write_lines("app.service", &lines[..100])).await;
    receiver.wait_for_lines(&lines[..100], DELIVERY).await;
    let mut pids = Vec::new();
    wait_until(SHORT, "the following journalctl", async || {
        pids = journalctl_pids(journal.dir());
        pids.len() == 1
    })
    .await;
    // Hung: alive, but prints nothing while the journal grows.
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    journal.write_lines("app.service", &lines[100..]);
    // Noticed after 10 s of silence and 2 s of grace (plus a loaded machine's margin).
    receiver.wait_for_lines(&lines, DELIVERY).await;
    assert_delivered_once_in_order(&lines, &receiver);
    let status = agent.status_json().await;
    assert_eq!(
        status["sources"]["journal"]["journalctl_restarts"], 1,
        "{status:#}"
    );
    let error = status["sources"]["journal"]["last_error"].as_str().unwrap();
    assert!(error.contains("hung"), "{error}");
    assert!(!journalctl_pids(journal.dir()).contains(&pids[0]));
}
