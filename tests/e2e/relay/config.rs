//! What the config refuses for the relay tier, naming the key: a gapless source without
//! any credential (`sources.<name>.auth`), a gapless sink whose `seq_field` is not `seq`,
//! or with `encoding` or `headers`. `gapless validate` fails and `gapless run` exits 78
//! (EX_CONFIG) with the same message; a good relay config validates.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitStatus;

use crate::harness::agent::run_command;
use crate::harness::relay::{gapless_sink, gapless_source, shared_token};
use crate::harness::{free_port, toml_path};

/// A config with a gapless source `agents` (`source_extra` in its table) and a gapless
/// sink `relay` (`sink_extra` in its table).
fn relay_config(dir: &Path, source_extra: &str, sink_extra: &str) -> String {
    format!(
        "data_dir = {}\n[api]\naddress = \"127.0.0.1:0\"\n{}{}",
        toml_path(&dir.join("data")),
        gapless_source("agents", free_port(), source_extra),
        gapless_sink(
            "relay",
            "https://relay.example.com:9443/",
            &["agents"],
            500,
            sink_extra
        )
    )
}

/// Runs `gapless <command> --config` on `text`.
fn run_on(dir: &Path, command: &str, text: &str) -> (ExitStatus, String, String) {
    let path = dir.join(format!("{command}.toml"));
    std::fs::write(&path, text).unwrap();
    run_command(&[
        OsStr::new(command),
        OsStr::new("--config"),
        path.as_os_str(),
    ])
}

/// Panics unless `validate` fails and `run` exits 78, both naming `key` on stderr.
fn assert_refused(dir: &Path, text: &str, key: &str) {
    let (status, _, stderr) = run_on(dir, "validate", text);
    assert!(
        !status.success(),
        "validate accepted a config without a good {key}:\n{text}"
    );
    assert!(
        stderr.contains(key),
        "validate's error should name {key}; stderr: {stderr}"
    );
    let (status, _, stderr) = run_on(dir, "run", text);
    assert_eq!(
        status.code(),
        Some(78),
        "gapless run: {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(key),
        "run's error should name {key}; stderr: {stderr}"
    );
}

#[test]
fn a_good_relay_config_validates() {
    let dir = tempfile::tempdir().unwrap();
    let text = relay_config(
        dir.path(),
        &shared_token("t"),
        &format!("seq_field = \"seq\"\n{}", shared_token("t")),
    );
    let (status, stdout, stderr) = run_on(dir.path(), "validate", &text);
    assert!(
        status.success(),
        "validate refused a good relay config: {stdout}{stderr}\n{text}"
    );
}

#[test]
fn a_gapless_source_without_any_credential_is_refused_naming_its_auth() {
    let dir = tempfile::tempdir().unwrap();
    let text = relay_config(dir.path(), "", &shared_token("t"));
    assert_refused(dir.path(), &text, "sources.agents.auth");
    // TLS without ca_file proves no client either.
    let pki = crate::harness::certs::Pki::new();
    let (cert, key) = pki.write_server(dir.path());
    let text = relay_config(
        dir.path(),
        &format!(
            "tls = {{ cert_file = {}, key_file = {} }}",
            toml_path(&cert),
            toml_path(&key)
        ),
        &shared_token("t"),
    );
    assert_refused(dir.path(), &text, "sources.agents.auth");
}

#[test]
fn a_gapless_sink_refuses_another_seq_field_encoding_or_headers() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("seq_field = \"s\"", "sinks.relay.seq_field"),
        ("seq_field = \"\"", "sinks.relay.seq_field"),
        ("encoding = \"json\"", "encoding"),
        ("headers = { \"X-Tenant\" = \"acme\" }", "headers"),
    ] {
        let text = relay_config(
            dir.path(),
            &shared_token("t"),
            &format!("{extra}\n{}", shared_token("t")),
        );
        assert_refused(dir.path(), &text, key);
    }
}

#[test]
fn a_gapless_source_refuses_keys_of_other_source_types() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        (
            "max_message_bytes = \"64KiB\"",
            "sources.agents.max_message_bytes",
        ),
        ("mode = \"tcp\"", "sources.agents.mode"),
        ("max_connections = 10", "sources.agents.max_connections"),
        ("interval = \"1s\"", "sources.agents.interval"),
    ] {
        let text = relay_config(
            dir.path(),
            &format!("{extra}\n{}", shared_token("t")),
            &shared_token("t"),
        );
        assert_refused(dir.path(), &text, key);
    }
}
