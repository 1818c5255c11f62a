//! TLS to the receiver: a certificate signed by a private CA is trusted through
//! `tls.ca_file` and events are delivered; without that CA the certificate is refused —
//! nothing is delivered, the agent stays up and `/status` says why; and
//! `insecure_skip_verify` turns the check off.

use crate::harness::agent::wait_for_status;
use crate::harness::certs::Pki;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

async fn start(receiver: &Receiver, port: u16, sink_extra: &str) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 100, sink_extra)
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn delivers_over_https_when_ca_file_trusts_the_receivers_private_ca() {
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Mode::Ok, &pki.server).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let port = free_port();
    let _agent = start(
        &receiver,
        port,
        &format!("tls = {{ ca_file = {} }}", toml_path(&ca)),
    )
    .await;
    assert!(receiver.url().starts_with("https://127.0.0.1:"));

    let lines = numbered_lines("tls-private-ca", 0, 300);
    Ingest::new(port).post_ok(&lines).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();
    assert_eq!(receiver.handshake_failures(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_certificate_from_an_unknown_ca_and_keeps_running() {
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Mode::Ok, &pki.server).await;
    let port = free_port();
    let mut agent = start(&receiver, port, "").await;

    let lines = numbered_lines("tls-untrusted", 0, 50);
    Ingest::new(port).post_ok(&lines).await;
    let status = wait_for_status(&agent, "a last_error for the sink", |s| {
        s["sinks"]["out"]["last_error"].is_string()
    })
    .await;
    let error = status["sinks"]["out"]["last_error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("issuer"),
        "last_error should say the certificate was refused: {error:?}"
    );
    wait_until(
        SHORT,
        "a refused TLS handshake at the receiver",
        async || receiver.handshake_failures() > 0,
    )
    .await;
    assert!(
        receiver.requests().is_empty(),
        "requests went through to an untrusted receiver: {}",
        receiver.summary()
    );
    assert!(
        agent.is_running(),
        "the agent exited over an untrusted certificate"
    );
    assert_eq!(agent.api_get("/health").await.0, 200);
    assert_eq!(
        status["sinks"]["out"]["backlog_events"], 50,
        "the events wait in the WAL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn insecure_skip_verify_delivers_to_an_unknown_certificate() {
    let pki = Pki::new();
    let receiver = Receiver::start_tls(Mode::Ok, &pki.server).await;
    let port = free_port();
    let _agent = start(&receiver, port, "tls = { insecure_skip_verify = true }").await;

    let lines = numbered_lines("tls-insecure", 0, 20);
    Ingest::new(port).post_ok(&lines).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
}
