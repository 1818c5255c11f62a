//! Credentials: an API key or basic authentication from a file, refused credentials
//! retried with an alarm, the key kept out of everything the agent prints or serves, and
//! `validate` refusing a sink without `endpoints`.

use super::*;
use crate::harness::certs::Pki;

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_from_a_password_file_is_sent_as_basic_credentials_into_the_configured_index() {
    let es = Elastic::start(Settings::default().user("gapless", "s3cret-pw")).await;
    let builder = Agent::builder();
    let password_file = builder.path("es.password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let auth = format!(
        "auth = {{ username = \"gapless\", password_file = {} }}\nindex = \"logs-app-prod\"",
        toml_path(&password_file)
    );
    let s = start_with(builder, &sink(&[es.url()], 10, &auth)).await;
    let lines = numbered_lines("es basic", 0, 20);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);
    let expected = format!("Basic {}", basic_credentials("gapless", "s3cret-pw"));
    assert!(es
        .requests()
        .iter()
        .all(|r| r.header("authorization") == Some(expected.as_str())));
    assert!(es.documents().iter().all(|d| d.stream == "logs-app-prod"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_never_appears_in_the_agents_output_even_while_it_is_refused() {
    // The cluster does not know the agent's key yet: every request is answered 401.
    let es = Elastic::start(Settings::default().api_key(&encoded_api_key("other", "key"))).await;
    let builder = Agent::builder().env("GAPLESS_LOG", "trace");
    let key_file = builder.path("es.key");
    std::fs::write(&key_file, format!("{}\n", key())).unwrap();
    let auth = format!(
        "auth = {{ api_key_file = {} }}\nalert_after = \"1s\"",
        toml_path(&key_file)
    );
    let s = start_with(builder, &sink(&[es.url()], 10, &auth)).await;
    let lines = numbered_lines("es secret", 0, 20);
    s.ingest.post_ok(&lines).await;
    wait_until(SHORT, "three requests refused with 401", async || {
        es.requests()
            .iter()
            .filter(|r| r.status == Some(401))
            .count()
            >= 3
    })
    .await;
    // Refused credentials are retried with an alarm, never dead-lettered.
    wait_until(SHORT, "/health/delivery to turn 503", async || {
        s.agent.api_get("/health/delivery").await.0 == 503
    })
    .await;
    let health = s.agent.api_get("/health/delivery").await;
    let status = s.agent.api_get("/status").await;
    let metrics = s.agent.metrics_text().await;

    es.accept_api_key(&key());
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
    assert!(
        s.agent.stderr_text().contains("TRACE"),
        "GAPLESS_LOG=trace took no effect, so the check below proves little"
    );
    let secret = key();
    for (what, text) in [
        ("stderr", s.agent.stderr_text()),
        ("stdout", s.agent.stdout_text()),
        ("/health/delivery", health.1),
        ("/status", status.1),
        ("/metrics", metrics),
        ("/status after", s.agent.api_get("/status").await.1),
    ] {
        assert!(
            !text.contains(&secret) && !text.contains("k3y-s3cr3t"),
            "the api key appears in the agent's {what}"
        );
    }
}

/// `gapless validate` on a config whose sink `search` has these `lines`: exit success and
/// stderr.
fn validate(lines: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gapless.toml");
    let text = format!(
        "data_dir = {}\n{}\n[sinks.search]\ntype = \"elasticsearch\"\ninputs = [\"in\"]\n{lines}\n",
        toml_path(&dir.path().join("data")),
        http_source("in", free_port(), ""),
    );
    std::fs::write(&path, &text).unwrap();
    let (status, _, stderr) = run_command(&[
        OsStr::new("validate"),
        OsStr::new("--config"),
        path.as_os_str(),
    ]);
    (status.success(), stderr)
}

#[test]
fn validate_refuses_an_elasticsearch_sink_without_endpoints_naming_the_key() {
    for endpoints in ["", "endpoints = []"] {
        let (ok, stderr) = validate(&format!("{endpoints}\n{}", api_key_auth()));
        assert!(
            !ok,
            "validate accepted an elasticsearch sink with {endpoints:?}"
        );
        assert!(
            stderr.contains("endpoints"),
            "validate's error should name the key endpoints; stderr: {stderr}"
        );
    }
}

// Elasticsearch refuses these names item by item (`invalid_index_name_exception`): taken by
// `validate`, every event and every notice would be refused for good at run time.
#[test]
fn validate_refuses_an_index_name_elasticsearch_refuses_naming_the_key() {
    let (ok, stderr) =
        validate("endpoints = [\"http://127.0.0.1:9200\"]\nindex = \"logs-app-prod\"");
    assert!(ok, "validate refused a good index name: {stderr}");
    for index in [
        "Logs-App-Prod",
        "_logs",
        "-logs",
        "+logs",
        "logs:app",
        ".",
        "..",
    ] {
        let (ok, stderr) = validate(&format!(
            "endpoints = [\"http://127.0.0.1:9200\"]\nindex = \"{index}\""
        ));
        assert!(!ok, "validate accepted index = {index:?}");
        assert!(
            stderr.contains("index"),
            "validate's error should name the key index; stderr: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_api_key_file_takes_effect_without_a_restart() {
    let rotated = encoded_api_key("gapless-e2e-2", "r0tated");
    // The old key was invalidated: only the new one is accepted.
    let es = Elastic::start(Settings::default().api_key(&rotated)).await;
    let builder = Agent::builder();
    let key_file = builder.path("es.key");
    std::fs::write(&key_file, key()).unwrap();
    let auth = format!("auth = {{ api_key_file = {} }}", toml_path(&key_file));
    let s = start_with(builder, &sink(&[es.url()], 10, &auth)).await;
    let lines = numbered_lines("es rotated", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_until(SHORT, "two requests refused with 401", async || {
        es.requests()
            .iter()
            .filter(|r| r.status == Some(401))
            .count()
            >= 2
    })
    .await;
    std::fs::write(&key_file, format!("{rotated}\n")).unwrap();
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 10).await, &lines);
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn https_nodes_are_trusted_through_tls_ca_file_and_refused_without_it() {
    let pki = Pki::new();
    let es = Elastic::start_tls(Settings::default().api_key(&key()), &pki.server).await;
    let second = es.join().await;
    assert!(es.url().starts_with("https://"));
    let builder = Agent::builder();
    let ca = pki.write_ca(&builder.path(""));
    let tls = format!(
        "{}\ntls = {{ ca_file = {} }}",
        api_key_auth(),
        toml_path(&ca)
    );
    let s = start_with(builder, &sink(&[es.url(), second.url()], 10, &tls)).await;
    let lines = numbered_lines("es https", 0, 20);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);

    let untrusting = start(&[second.url()], 10, &api_key_auth()).await;
    untrusting.ingest.post_ok(&lines).await;
    let status = wait_for_status(&untrusting.agent, "a last_error for the sink", |st| {
        st["sinks"]["search"]["last_error"].is_string()
    })
    .await;
    assert!(
        events_by_seq(&es, &untrusting.agent_id).is_empty(),
        "delivered to a node whose certificate is not trusted"
    );
    assert_eq!(status["sinks"]["search"]["dead_lettered_events"], 0);
}
