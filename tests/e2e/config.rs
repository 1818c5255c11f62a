//! Config errors name the key and the line: `gapless validate --config` exits non-zero with
//! them on stderr, `gapless run` refuses to start with the same message, and a good config
//! validates with exit 0.

use std::ffi::OsStr;
use std::path::Path;

use crate::harness::agent::run_command;
use crate::harness::toml_path;

/// A config that validates: every section of the public contract, with small values.
fn good_config(dir: &Path) -> String {
    format!(
        r#"data_dir = {data_dir}
shutdown_timeout = "3s"

[api]
address = "127.0.0.1:0"

[log]
level = "info"
format = "json"

[wal]
max_bytes = "64MiB"
segment_bytes = "1MiB"
durability = "interval"
sync_interval = "50ms"
when_full = "block"

[sources.app]
type = "file"
include = [{logs}]
exclude = [{debug}]
read_from = "end"
max_line_bytes = "64KiB"

[sources.ingest]
type = "http"
address = "127.0.0.1:0"
path = "/logs"
max_body_bytes = "1MiB"
auth = {{ bearer_token = "${{GAPLESS_E2E_TOKEN:-t0ken}}" }}

[sources.pipe]
type = "stdin"

[sinks.platform]
type = "http"
inputs = ["app", "ingest"]
uri = "https://logs.example.com/ingest"
encoding = "json"
compression = "none"
batch = {{ max_events = 500, max_bytes = "1MiB", timeout = "200ms" }}
headers = {{ "X-Tenant" = "acme" }}
retry = {{ initial_backoff = "100ms", max_backoff = "5s" }}
request_timeout = "10s"
concurrency = 2

[sinks.debug]
type = "console"
inputs = ["pipe"]
"#,
        data_dir = toml_path(&dir.join("data")),
        logs = toml_path(&dir.join("logs/*.log")),
        debug = toml_path(&dir.join("logs/debug*.log")),
    )
}

/// Whether `stderr` says `line {line}` as a whole number ("line 3" is not in "line 30").
pub fn names_line(stderr: &str, line: usize) -> bool {
    let needle = format!("line {line}");
    stderr.match_indices(&needle).any(|(i, _)| {
        !stderr[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn names_line_matches_whole_numbers_only() {
    assert!(names_line("error at line 3: bad", 3));
    assert!(names_line("error at line 3", 3));
    assert!(!names_line("error at line 30: bad", 3));
    assert!(names_line("line 30, then line 3.", 3));
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the config"))
        + 1
}

/// Writes `text` as a config and runs `gapless <command> --config` on it.
fn run_on(dir: &Path, command: &str, text: &str) -> (std::process::ExitStatus, String, String) {
    let path = dir.join("gapless.toml");
    std::fs::write(&path, text).unwrap();
    run_command(&[
        OsStr::new(command),
        OsStr::new("--config"),
        path.as_os_str(),
    ])
}

/// Replaces the one occurrence of `from` in the good config by `to`.
fn broken(dir: &Path, from: &str, to: &str) -> String {
    let good = good_config(dir);
    assert_eq!(good.matches(from).count(), 1, "{from:?} must occur once");
    good.replace(from, to)
}

/// `validate` exits non-zero and its stderr names `key` and the line holding `marker`.
fn assert_rejected(text: &str, dir: &Path, key: &str, marker: &str) {
    let line = line_of(text, marker);
    let (status, _, stderr) = run_on(dir, "validate", text);
    assert!(
        !status.success(),
        "validate accepted a config with a bad {key}"
    );
    assert!(
        stderr.contains(key),
        "validate's error should name the key {key:?}; stderr: {stderr}"
    );
    assert!(
        names_line(&stderr, line),
        "validate's error should say \"line {line}\" (where {marker:?} is); stderr: {stderr}"
    );
}

#[test]
fn validate_accepts_a_good_config_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = run_on(dir.path(), "validate", &good_config(dir.path()));
    assert!(
        status.success(),
        "validate rejected a good config: {stderr}"
    );
    assert!(stdout.contains("OK"), "stdout: {stdout}");
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "request_timeout = \"10s\"",
        "request_timeout = \"10s\"\nretries = 5",
    );
    assert_rejected(&text, dir.path(), "sinks.platform.retries", "retries = 5");
}

#[test]
fn an_unknown_top_level_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "shutdown_timeout = \"3s\"",
        "shutdown_timeout = \"3s\"\ndatadir = \"/tmp\"",
    );
    assert_rejected(&text, dir.path(), "datadir", "datadir =");
}

#[test]
fn a_bad_value_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "durability = \"interval\"",
        "durability = \"sometimes\"",
    );
    assert_rejected(
        &text,
        dir.path(),
        "wal.durability",
        "durability = \"sometimes\"",
    );
}

#[test]
fn a_bad_size_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "max_bytes = \"64MiB\"",
        "max_bytes = \"64 parsecs\"",
    );
    assert_rejected(&text, dir.path(), "wal.max_bytes", "64 parsecs");
}

#[test]
fn a_bad_duration_inside_an_inline_table_names_the_full_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "initial_backoff = \"100ms\"",
        "initial_backoff = \"soon\"",
    );
    assert_rejected(
        &text,
        dir.path(),
        "sinks.platform.retry.initial_backoff",
        "\"soon\"",
    );
}

#[test]
fn a_wrong_type_inside_an_inline_table_names_the_full_key_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(dir.path(), "max_events = 500", "max_events = \"many\"");
    assert_rejected(
        &text,
        dir.path(),
        "sinks.platform.batch.max_events",
        "\"many\"",
    );
}

#[test]
fn a_wrong_type_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(dir.path(), "concurrency = 2", "concurrency = \"two\"");
    assert_rejected(&text, dir.path(), "sinks.platform.concurrency", "\"two\"");
}

#[test]
fn an_unknown_source_type_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(dir.path(), "type = \"stdin\"", "type = \"kafka\"");
    assert_rejected(&text, dir.path(), "sources.pipe.type", "\"kafka\"");
}

#[test]
fn a_key_of_another_source_type_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "path = \"/logs\"",
        "path = \"/logs\"\nread_from = \"end\"",
    );
    let marker_line = line_of(&text, "path = \"/logs\"") + 1;
    let (status, _, stderr) = run_on(dir.path(), "validate", &text);
    assert!(
        !status.success(),
        "read_from on an http source was accepted"
    );
    assert!(
        stderr.contains("sources.ingest.read_from"),
        "stderr: {stderr}"
    );
    assert!(names_line(&stderr, marker_line), "stderr: {stderr}");
}

#[test]
fn a_sink_input_naming_no_source_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "inputs = [\"pipe\"]",
        "inputs = [\"pipe\", \"nowhere\"]",
    );
    assert_rejected(&text, dir.path(), "sinks.debug.inputs", "\"nowhere\"");
}

#[test]
fn an_unset_environment_variable_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "uri = \"https://logs.example.com/ingest\"",
        "uri = \"${GAPLESS_E2E_SURELY_UNSET_VARIABLE}\"",
    );
    assert_rejected(
        &text,
        dir.path(),
        "GAPLESS_E2E_SURELY_UNSET_VARIABLE",
        "SURELY_UNSET",
    );
}

#[test]
fn an_unreadable_ca_file_fails_validate_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let text = broken(
        dir.path(),
        "concurrency = 2",
        &format!(
            "concurrency = 2\ntls = {{ ca_file = {} }}",
            toml_path(&missing)
        ),
    );
    let (status, _, stderr) = run_on(dir.path(), "validate", &text);
    assert!(!status.success(), "validate accepted a missing tls.ca_file");
    assert!(
        stderr.contains("sinks.platform.tls.ca_file"),
        "stderr: {stderr}"
    );
    assert!(stderr.contains("no-such-ca.pem"), "stderr: {stderr}");
}

#[test]
fn run_refuses_a_bad_config_with_the_same_message_and_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = broken(
        dir.path(),
        "durability = \"interval\"",
        "durability = \"sometimes\"",
    );
    let line = line_of(&text, "sometimes");
    let (status, _, stderr) = run_on(dir.path(), "run", &text);
    assert!(!status.success(), "run started on a bad config");
    assert!(
        stderr.contains("wal.durability") && names_line(&stderr, line),
        "stderr: {stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "run created data_dir although the config was refused"
    );
}

#[test]
fn a_seq_field_naming_a_field_the_agent_writes_itself_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for taken in [
        "message",
        "host",
        "gapless",
        "client_fields",
        "truncated",
        "reason",
    ] {
        let text = broken(
            dir.path(),
            "request_timeout = \"10s\"",
            &format!("request_timeout = \"10s\"\nseq_field = \"{taken}\""),
        );
        assert_rejected(&text, dir.path(), "sinks.platform.seq_field", "seq_field =");
        let (_, _, stderr) = run_on(dir.path(), "run", &text);
        assert!(
            stderr.contains(&format!("\"{taken}\"")) && stderr.contains("sinks.platform.seq_field"),
            "run should refuse seq_field = {taken:?} naming it; stderr: {stderr}"
        );
    }
}
