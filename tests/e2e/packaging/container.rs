//! The container image: the binary runs on the config the image copies, configured from
//! the environment alone (no Docker engine here: the image itself is not built), and the
//! Dockerfile's runtime stage says what the README promises.

use std::net::SocketAddr;

use super::read;
use crate::harness::agent::run_command_with_env;
use crate::harness::*;

/// The image's `data_dir`, the one line the test replaces.
const IMAGE_DATA_DIR: &str = "data_dir = \"/var/lib/gapless\"";

#[tokio::test(flavor = "multi_thread")]
async fn container_config_runs_the_binary_configured_from_the_environment_alone() {
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let image = read("container/gapless.toml");
    assert_eq!(
        image.matches(IMAGE_DATA_DIR).count(),
        1,
        "container/gapless.toml should set {IMAGE_DATA_DIR} once"
    );
    let config = image.replace(
        IMAGE_DATA_DIR,
        &format!("data_dir = {}", toml_path(&builder.path("data"))),
    );
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = receiver.url();
    let include = logs.join("*.log");
    let api_text = api.to_string();
    let env = [
        ("GAPLESS_ENDPOINT", url.as_str()),
        ("GAPLESS_TOKEN", "container-token"),
        ("GAPLESS_INCLUDE", include.to_str().unwrap()),
        ("GAPLESS_API", api_text.as_str()),
    ];

    let copy = builder.path("image.toml");
    std::fs::write(&copy, &config).unwrap();
    let validate = ["validate".as_ref(), "--config".as_ref(), copy.as_os_str()];
    let (status, stdout, stderr) = run_command_with_env(&validate, &env);
    assert!(
        status.success(),
        "validate on the image's config: {stdout}{stderr}"
    );
    let (status, _, stderr) = run_command_with_env(&validate, &env[1..]);
    assert!(
        !status.success() && stderr.contains("GAPLESS_ENDPOINT"),
        "without GAPLESS_ENDPOINT validate should fail naming it ({status}): {stderr}"
    );

    let mut builder = builder.verbatim_config(&config, api).config_from_env();
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let mut agent = builder.start().await;
    let mut log = LogFile::create(&logs.join("app.log"));
    let lines = numbered_lines("container", 0, 50);
    log.append(&lines);
    receiver.wait_for_lines(&lines, DELIVERY).await;
    wait_until(SHORT, "a heartbeat", async || {
        receiver
            .events()
            .iter()
            .any(|e| e["gapless"] == "heartbeat")
    })
    .await;
    for r in receiver.requests() {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer container-token"),
            "a request without GAPLESS_TOKEN"
        );
    }
    // The HEALTHCHECK's command as the image runs it: `status --config` with the image's
    // environment, so it follows GAPLESS_API wherever that puts the API.
    let health = ["status".as_ref(), "--config".as_ref(), copy.as_os_str()];
    let (status, stdout, stderr) =
        tokio::task::block_in_place(|| run_command_with_env(&health, &env));
    assert!(
        status.success(),
        "gapless status on a healthy agent ({status}): {stdout}{stderr}"
    );

    agent.sigterm();
    assert_eq!(agent.wait_exit(SHORT).await.code(), Some(0));
}

/// The Dockerfile's instructions from the last `FROM` on (the runtime stage), continuation
/// lines joined, comments dropped: `(INSTRUCTION, arguments)`.
fn runtime_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => current.push_str(&format!("{part} ")),
            None => {
                current.push_str(t);
                let (op, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((op.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    let from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    instructions.split_off(from)
}

#[test]
fn dockerfile_runs_non_root_with_a_wal_volume_sigterm_a_healthcheck_and_ca_certificates() {
    let stage = runtime_stage(&read("container/Dockerfile"));
    let all = |op: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let one = |op: &str| -> &str {
        let found = all(op);
        assert_eq!(found.len(), 1, "one {op} in the runtime stage: {found:?}");
        found[0]
    };

    let user = one("USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        !["", "root", "0"].contains(&name),
        "the image runs as root: USER {user}"
    );
    if name.chars().all(|c| c.is_ascii_digit()) {
        assert!(
            all("RUN")
                .iter()
                .any(|r| r.contains(&format!("--uid {name}"))),
            "USER {user}, but no RUN creates uid {name}"
        );
    }
    assert!(
        one("VOLUME").contains("/var/lib/gapless"),
        "VOLUME {}",
        one("VOLUME")
    );
    assert_eq!(one("STOPSIGNAL"), "SIGTERM", "the agent drains on SIGTERM");
    let health = one("HEALTHCHECK");
    assert!(
        health.contains("CMD") && !health.starts_with("NONE"),
        "HEALTHCHECK {health}"
    );
    assert!(
        health.contains("--config") && !health.contains("8686"),
        "the HEALTHCHECK must find the API where GAPLESS_API puts it: {health}"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("install") && r.contains("ca-certificates")),
        "the runtime stage does not install ca-certificates (rustls's verifier needs them)"
    );

    // The config the container test runs is the one the image holds, found the same way.
    assert!(
        all("COPY")
            .iter()
            .any(|c| c.ends_with("packaging/container/gapless.toml /etc/gapless/gapless.toml")),
        "the image does not copy packaging/container/gapless.toml to /etc/gapless/: {:?}",
        all("COPY")
    );
    assert!(
        all("ENV")
            .iter()
            .any(|e| e.replace(' ', "=") == "GAPLESS_CONFIG=/etc/gapless/gapless.toml"),
        "ENV GAPLESS_CONFIG=/etc/gapless/gapless.toml: {:?}",
        all("ENV")
    );
    assert_eq!(one("ENTRYPOINT"), "[\"/usr/bin/gapless\"]");
    assert_eq!(one("CMD"), "[\"run\"]");
}
