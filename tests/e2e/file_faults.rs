//! Faults of the file source found by replaying other agents' bug reports: a file
//! rewritten in place with the same first bytes, a directory that cannot be listed for a
//! while, more matched files than descriptors, and a line cut by `partial_line_timeout`.
//! Each example is the one the report gave, with the expected result written out.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::harness::agent::AgentBuilder;
use crate::harness::snippets::{file_source, http_sink};
use crate::harness::*;

/// `nobody`: the unprivileged user the listing-error test runs the agent as.
const NOBODY: u32 = 65534;

async fn stop(agent: &mut Agent) {
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status} after SIGTERM");
}

fn messages(receiver: &Receiver) -> Vec<String> {
    lines_in(&receiver.events())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_truncated_and_rewritten_while_stopped_with_the_same_first_kilobyte_loses_no_line() {
    // H=$(printf 'H%.0s' $(seq 1100)); printf '%s\nold-1\n' "$H" > app.log; stop;
    // truncate -s 0 app.log; printf '%s\nnew-1\nnew-2\nnew-3\n' "$H" >> app.log; start.
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    let header = "H".repeat(1100);
    std::fs::write(&app, format!("{header}\nold-1\n")).unwrap();
    assert_eq!(std::fs::metadata(&app).unwrap().len(), 1107);
    let mut agent = builder
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 100, "")
        ))
        .start()
        .await;
    receiver
        .wait_for_lines(&[header.clone(), "old-1".to_string()], DELIVERY)
        .await;
    stop(&mut agent).await;

    let ino = std::fs::metadata(&app).unwrap().ino();
    let f = std::fs::OpenOptions::new().write(true).open(&app).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    let mut log = LogFile::create(&app);
    log.append(&[
        header.clone(),
        "new-1".into(),
        "new-2".into(),
        "new-3".into(),
    ]);
    assert_eq!(std::fs::metadata(&app).unwrap().ino(), ino, "same inode");
    assert_eq!(std::fs::metadata(&app).unwrap().len(), 1119);

    agent.restart().await;
    let new: Vec<String> = ["new-1", "new-2", "new-3"].map(String::from).to_vec();
    receiver.wait_for_lines(&new, DELIVERY).await;
    let got = messages(&receiver);
    for line in &new {
        assert_eq!(
            got.iter().filter(|m| *m == line).count(),
            1,
            "{line} exactly once in {got:?}"
        );
    }
    assert!(
        agent
            .stderr_text()
            .contains("bytes before the checkpoint offset changed"),
        "the re-read is said in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_cut_by_the_partial_line_timeout_arrives_as_two_flagged_events() {
    // printf '{"user":"alice","action":"lo' >> app.log; sleep 2.5; printf 'gin"}\n' >> app.log
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut log = LogFile::create(&logs.join("app.log"));
    let _agent = builder
        .config(&format!(
            r#"
[sources.app]
type = "file"
include = [{}]
poll_interval = "50ms"
partial_line_timeout = "1s"
{}"#,
            toml_path(&logs.join("*.log")),
            http_sink(&receiver.url(), &["app"], 100, "")
        ))
        .start()
        .await;
    log.append_raw(br#"{"user":"alice","action":"lo"#);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    log.append_raw(b"gin\"}\n");
    let events = receiver.wait_for_events(2, DELIVERY).await;
    let got: Vec<(String, Option<bool>, Option<bool>)> = events
        .iter()
        .map(|e| {
            (
                e["message"].as_str().unwrap_or_default().to_string(),
                e["partial"].as_bool(),
                e["continued"].as_bool(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                r#"{"user":"alice","action":"lo"#.to_string(),
                Some(true),
                None
            ),
            (r#"gin"}"#.to_string(), None, Some(true)),
        ]
    );
}

/// Whether this process can run another one as `nobody` (root, and `setpriv` works).
fn can_drop_privileges() -> bool {
    std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_that_cannot_be_listed_for_a_while_makes_no_file_look_deleted() {
    // As an unprivileged user: chmod 0311 the log directory for 7 s, then 0755 again.
    // Every line arrives once; nothing is "rotated away or deleted".
    if !can_drop_privileges() {
        eprintln!(
            "SKIPPED: cannot run the agent as an unprivileged user here (needs root and setpriv)"
        );
        return;
    }
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    chmod(&builder.path(""), 0o755);
    let logs = builder.path("logs");
    let data = builder.path("data");
    std::fs::create_dir(&logs).unwrap();
    std::fs::create_dir(&data).unwrap();
    chown_nobody(&data);
    let mut files: Vec<LogFile> = (0..3)
        .map(|i| LogFile::create(&logs.join(format!("app{i}.log"))))
        .collect();
    let lines = numbered_lines("unlisted", 0, 600);
    for (i, f) in files.iter_mut().enumerate() {
        f.append(&lines[i * 100..i * 100 + 50]);
    }
    let agent = builder
        .wrapped_in(&[
            "setpriv",
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 100, "")
        ))
        .start()
        .await;
    let first: Vec<String> = (0..3)
        .flat_map(|i| lines[i * 100..i * 100 + 50].to_vec())
        .collect();
    receiver.wait_for_lines(&first, DELIVERY).await;

    chmod(&logs, 0o311);
    for (i, f) in files.iter_mut().enumerate() {
        f.append(&lines[i * 100 + 50..i * 100 + 100]);
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    chmod(&logs, 0o755);
    for (i, f) in files.iter_mut().enumerate() {
        f.append(&lines[300 + i * 100..400 + i * 100]);
    }
    receiver.wait_for_lines(&lines, DELIVERY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    let log = agent.stderr_text();
    assert!(
        !log.contains("rotated away or deleted"),
        "a listing error made a file look deleted:\n{log}"
    );
    let warnings = log
        .lines()
        .filter(|l| l.contains("cannot look into this directory"))
        .count();
    assert_eq!(warnings, 1, "one warning for the directory:\n{log}");
    assert!(log.contains("directory can be looked into again"));
}

/// An agent following `logs/*.log`, started with `ulimit -n nofile`.
async fn agent_with_nofile(builder: AgentBuilder, receiver: &Receiver, nofile: u32) -> Agent {
    let logs = builder.path("logs");
    let limit = format!("--nofile={nofile}:{nofile}");
    builder
        .wrapped_in(&["prlimit", &limit, "--"])
        .config(&format!(
            "{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_sink(&receiver.url(), &["app"], 1000, "")
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_files_under_ulimit_1024_are_each_read_exactly_once_without_a_flood_of_warnings(
) {
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let lines = numbered_lines("many", 0, 5000);
    for (i, line) in lines.iter().enumerate() {
        std::fs::write(logs.join(format!("f{i:05}.log")), format!("{line}\n")).unwrap();
    }
    let agent = agent_with_nofile(builder, &receiver, 1024).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    let status = agent.status_json().await;
    let open = status["sources"]["app"]["open_files"].as_u64().unwrap();
    // 1024 less the reserve (a quarter): at most 768 followed files hold a descriptor.
    assert!(open <= 768, "{open} files open under ulimit -n 1024");
    assert_eq!(
        agent
            .metric("gapless_source_open_files", &[("source", "app")])
            .await,
        Some(open as f64),
        "the open-file gauge says what /status says"
    );
    wait_until(SHORT, "no file waiting for a descriptor", async || {
        agent
            .metric("gapless_source_waiting_files", &[("source", "app")])
            .await
            == Some(0.0)
    })
    .await;
    let warnings = agent
        .stderr_text()
        .lines()
        .filter(|l| l.contains("WARN"))
        .count();
    assert!(
        warnings <= 5,
        "{warnings} warnings:\n{}",
        agent.stderr_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_files_under_ulimit_64_are_all_delivered() {
    // Before the budget the sink could not open its cursor or a socket: nothing arrived.
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let lines = numbered_lines("few-fds", 0, 1000);
    for (i, chunk) in lines.chunks(10).enumerate() {
        LogFile::create(&logs.join(format!("f{i:03}.log"))).append(chunk);
    }
    let agent = agent_with_nofile(builder, &receiver, 64).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    let status = agent.status_json().await;
    assert!(status["sources"]["app"]["open_files"].as_u64().unwrap() <= 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_warns_about_an_included_file_the_running_user_cannot_read() {
    if !can_drop_privileges() {
        eprintln!(
            "SKIPPED: cannot run validate as an unprivileged user here (needs root and setpriv)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("secret.log"), "x\n").unwrap();
    chmod(&logs.join("secret.log"), 0o600);
    std::fs::write(logs.join("open.log"), "x\n").unwrap();
    chmod(&logs.join("open.log"), 0o644);
    std::fs::create_dir(dir.path().join("data")).unwrap();
    chown_nobody(&dir.path().join("data"));
    let config = dir.path().join("gapless.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n{}{}",
            toml_path(&dir.path().join("data")),
            file_source("app", &logs.join("*.log"), ""),
            http_sink("http://127.0.0.1:9/", &["app"], 100, "")
        ),
    )
    .unwrap();
    chmod(&config, 0o644);
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let output = std::process::Command::new("setpriv")
        .args([&uid, &gid, "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_gapless"))
        .arg("validate")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let status = output.status;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let out = format!("{stdout}{stderr}");
    assert!(status.success(), "a warning, not a failure: {out}");
    assert!(
        out.contains("secret.log") && out.contains("cannot be read"),
        "names the unreadable file: {out}"
    );
    assert!(!out.contains("open.log"), "only the unreadable one: {out}");
}
