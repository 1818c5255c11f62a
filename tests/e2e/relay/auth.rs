//! Who may speak for which agent: no or a wrong token is 401; a token from
//! `agent_tokens_file` binds the request to its agent id (another id is 403), and the file
//! is re-read when it changes; the shared token may claim any id; a client certificate
//! binds the request to its subjectAltName DNS names, and without one there is no
//! connection; with both a certificate and per-agent tokens, both must name the agent. A
//! real agent delivers through a relay that requires client certificates. The shared token
//! may come from `bearer_token_file`.

use std::collections::BTreeSet;

use super::{agent_id, start_relay};
use crate::harness::certs::Pki;
use crate::harness::relay::{
    assert_answer, continuity_headers, gapless_sink, origin_lines, origin_messages, origins,
    RelayClient,
};
use crate::harness::snippets::http_source;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn tokens_bind_agent_ids_and_the_shared_token_may_claim_any() {
    let platform = Receiver::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("agent_tokens");
    std::fs::write(
        &tokens,
        "# one line per agent\nagent-a token-a\n\nagent-b token-b\n",
    )
    .unwrap();
    let port = free_port();
    let _relay = start_relay(
        &platform,
        port,
        &format!(
            "auth = {{ bearer_token = \"shared\", agent_tokens_file = {} }}",
            toml_path(&tokens)
        ),
    )
    .await;
    let as_ = |token: Option<&str>| match token {
        Some(t) => RelayClient::new(port).with_token(t),
        None => RelayClient::new(port),
    };

    for (what, token, claim, status) in [
        ("no token", None, "agent-a", 401),
        ("a wrong token", Some("nope"), "agent-a", 401),
        (
            "agent-a's token claiming agent-b",
            Some("token-a"),
            "agent-b",
            403,
        ),
        (
            "agent-a's token claiming agent-a",
            Some("token-a"),
            "agent-a",
            200,
        ),
        (
            "agent-b's token claiming agent-b",
            Some("token-b"),
            "agent-b",
            200,
        ),
        (
            "the shared token claiming anyone",
            Some("shared"),
            "anyone",
            200,
        ),
    ] {
        let tag = if status == 200 { claim } else { "refused" };
        let answer = as_(token).post_range(claim, tag, 1, 2).await;
        assert_answer(what, &answer, status);
    }

    // agent-c added, agent-b removed: the file is re-read when it changes.
    std::fs::write(&tokens, "agent-a token-a\nagent-c token-c\n").unwrap();
    wait_until(SHORT, "agent-c's new token to be taken", async || {
        as_(Some("token-c"))
            .post_range("agent-c", "agent-c", 1, 2)
            .await
            .status
            == 200
    })
    .await;
    let answer = as_(Some("token-b"))
        .post_range("agent-b", "refused", 3, 2)
        .await;
    assert_answer("agent-b's token after it was removed", &answer, 401);

    let mut expected = Vec::new();
    for id in ["agent-a", "agent-b", "anyone", "agent-c"] {
        expected.extend(origin_messages(id, 1, 2));
    }
    platform.wait_for_lines(&expected, DELIVERY).await;
    let events = platform.events();
    assert!(
        !events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused"))),
        "events of a refused request reached the platform"
    );
    let seen: BTreeSet<String> = origins(&events).into_keys().collect();
    assert_eq!(
        seen,
        ["agent-a", "agent-b", "agent-c", "anyone"]
            .map(String::from)
            .into(),
        "origin ids at the platform"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_binds_the_agent_id_to_its_dns_name() {
    let pki = Pki::new();
    let platform = Receiver::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.write_server(dir.path());
    let ca = pki.write_ca(dir.path());
    let port = free_port();
    // No token at all: the client certificate is the credential.
    let _relay = start_relay(
        &platform,
        port,
        &format!(
            "tls = {{ cert_file = {}, key_file = {}, ca_file = {} }}",
            toml_path(&cert),
            toml_path(&key),
            toml_path(&ca)
        ),
    )
    .await;
    let (a_cert, a_key) = pki.client_pem("agent-a");
    let as_a = RelayClient::tls(port, &pki.ca_pem, Some((&a_cert, &a_key)));
    let answer = as_a.post_range("agent-b", "refused", 1, 2).await;
    assert_answer("agent-a's certificate claiming agent-b", &answer, 403);
    let answer = as_a.post_range("agent-a", "raw agent-a", 1, 2).await;
    assert_answer("agent-a's certificate claiming agent-a", &answer, 200);
    let anonymous = RelayClient::tls(port, &pki.ca_pem, None)
        .with_token("any")
        .post(
            &continuity_headers("agent-a", 3, 4),
            &origin_lines("refused", 3, 2),
        )
        .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got an answer: {anonymous:?}"
    );

    // A real agent with its own certificate in the gapless sink's tls (not agent-a: its
    // seqs 1 and 2 would be duplicates of the raw client's).
    let (r_cert_file, r_key_file) = pki.write_client(dir.path(), "agent-r");
    let http_port = free_port();
    let _origin = Agent::builder()
        .top(&agent_id("agent-r"))
        .listening_on(http_port)
        .config(&format!(
            "{}{}",
            http_source("in", http_port, ""),
            gapless_sink(
                "relay",
                &format!("https://localhost:{port}/"),
                &["in"],
                100,
                &format!(
                    "tls = {{ ca_file = {}, cert_file = {}, key_file = {} }}",
                    toml_path(&ca),
                    toml_path(&r_cert_file),
                    toml_path(&r_key_file)
                )
            )
        ))
        .start()
        .await;
    let lines = numbered_lines("over mTLS", 0, 200);
    Ingest::new(http_port).post_ok(&lines).await;
    platform.wait_for_lines(&lines, DELIVERY).await;
    platform
        .wait_for_lines(&origin_messages("raw agent-a", 1, 2), SHORT)
        .await;
    let events = platform.events();
    assert!(
        !events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused"))),
        "events of a refused request reached the platform"
    );
    for e in events.iter().filter(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("over mTLS"))
    }) {
        assert_eq!(e["origin_agent_id"], "agent-r", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_certificate_and_per_agent_tokens_both_must_name_the_agent() {
    let pki = Pki::new();
    let platform = Receiver::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.write_server(dir.path());
    let ca = pki.write_ca(dir.path());
    let tokens = dir.path().join("agent_tokens");
    std::fs::write(&tokens, "agent-a token-a\nagent-b token-b\n").unwrap();
    let port = free_port();
    let _relay = start_relay(
        &platform,
        port,
        &format!(
            "tls = {{ cert_file = {}, key_file = {}, ca_file = {} }}\nauth = {{ agent_tokens_file = {} }}",
            toml_path(&cert),
            toml_path(&key),
            toml_path(&ca),
            toml_path(&tokens)
        ),
    )
    .await;
    let (a_cert, a_key) = pki.client_pem("agent-a");
    let with_a_cert = || RelayClient::tls(port, &pki.ca_pem, Some((&a_cert, &a_key)));
    for (what, token, claim, status) in [
        ("agent-a's certificate, no token", None, "agent-a", 401),
        (
            "agent-a's certificate, a wrong token",
            Some("nope"),
            "agent-a",
            401,
        ),
        (
            "agent-a's certificate, agent-b's token, claiming agent-a",
            Some("token-b"),
            "agent-a",
            403,
        ),
        (
            "agent-a's certificate, agent-b's token, claiming agent-b",
            Some("token-b"),
            "agent-b",
            403,
        ),
        (
            "agent-a's certificate and token, claiming agent-a",
            Some("token-a"),
            "agent-a",
            200,
        ),
    ] {
        let client = match token {
            Some(t) => with_a_cert().with_token(t),
            None => with_a_cert(),
        };
        let tag = if status == 200 { "both" } else { "refused" };
        let answer = client.post_range(claim, tag, 1, 2).await;
        assert_answer(what, &answer, status);
    }
    platform
        .wait_for_lines(&origin_messages("both", 1, 2), DELIVERY)
        .await;
    assert!(
        !platform.events().iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("refused"))),
        "events of a refused request reached the platform"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_token_is_read_from_bearer_token_file() {
    let platform = Receiver::start(Mode::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("relay.token");
    std::fs::write(&token_file, "from-a-file\n").unwrap();
    let port = free_port();
    let _relay = start_relay(
        &platform,
        port,
        &format!(
            "auth = {{ bearer_token_file = {} }}",
            toml_path(&token_file)
        ),
    )
    .await;
    let answer = RelayClient::new(port)
        .with_token("from-a-file")
        .post_range("filed", "filed", 1, 2)
        .await;
    assert_answer("the token of bearer_token_file", &answer, 200);
    let answer = RelayClient::new(port)
        .with_token("from-a-fil")
        .post_range("filed", "refused", 3, 2)
        .await;
    assert_answer("another token", &answer, 401);
}
