//! Entra ID tokens: one for many calls, renewed before it expires and after a 401; the
//! token endpoint down, refusing, hanging or fixed by rotating the secret file, each a delay
//! with a reason on `/health/delivery`; and the secret never in a log.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::harness::platforms::azure::Fault;
use crate::harness::*;

// Tokens that live 4 s: the agent must renew at half their life, before they expire, so
// that no call is refused for an expired token; a token the platform stops honouring (a
// 401) is replaced at once and the refused call sent again.
#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_renewed_before_it_expires_and_after_a_401() {
    let azure = Azure::start().await;
    azure.set_token_lifetime(4, true);
    let (_agent, ingest) = start_agent(&azure, "max_events = 100", "").await;
    let started = Instant::now();
    let mut posted = 0;
    wait_until(DELIVERY, "a third token", async || {
        ingest
            .post_ok(&numbered_lines("azure renew", posted, 5))
            .await;
        posted += 5;
        tokio::time::sleep(Duration::from_millis(100)).await;
        azure.tokens_issued() >= 3
    })
    .await;
    azure.wait_for_rows(posted, DELIVERY).await;
    let expired: Vec<_> = azure
        .requests()
        .into_iter()
        .filter(|r| r.error_code.as_deref() == Some("TokenExpired"))
        .collect();
    assert!(
        expired.is_empty(),
        "{} calls were made with an expired token (renewal is due at half its 4 s life); {}",
        expired.len(),
        azure.summary()
    );
    let per_second = azure.tokens_issued() as f64 / started.elapsed().as_secs_f64();
    assert!(
        per_second < 1.0,
        "{} tokens in {:?}: a token per call rather than one per half-life",
        azure.tokens_issued(),
        started.elapsed()
    );

    let short_lived = azure.tokens_issued();
    azure.set_token_lifetime(3599, false);
    wait_until(SHORT, "a token of an hour", async || {
        ingest
            .post_ok(&numbered_lines("azure hour", posted, 1))
            .await;
        posted += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        azure.tokens_issued() > short_lived
    })
    .await;
    azure.wait_for_rows(posted, DELIVERY).await;
    let issued = azure.tokens_issued();
    azure.revoke_tokens();
    let after = numbered_lines("azure revoked", 0, 20);
    ingest.post_ok(&after).await;
    azure.wait_for_rows(posted + after.len(), DELIVERY).await;
    let requests = azure.requests();
    assert!(
        requests.iter().any(|r| r.status() == Some(401)),
        "no call was refused after the revocation; {}",
        azure.summary()
    );
    assert!(
        azure.tokens_issued() > issued,
        "no new token after a 401; {}",
        azure.summary()
    );
    check_delivery(&after, &azure.rows()).assert_nothing_lost();
}

// Entra ID down (connections reset), then refusing the app (401 invalid_client), then
// back: nothing is lost, and /health/delivery says why the sink is stuck meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_or_refusing_token_endpoint_is_a_delay_with_a_reason_on_delivery_health() {
    let azure = Azure::start().await;
    azure.set_token_fault(Some(Fault::Reset));
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 50",
        "alert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    let lines = numbered_lines("azure entra down", 0, 200);
    ingest.post_ok(&lines).await;
    let reasons = wait_for_unhealthy(&agent).await;
    assert!(
        azure.requests().is_empty(),
        "a call without a token: {}",
        azure.summary()
    );

    azure.set_token_fault(Some(Fault::Status(401)));
    let refused_before = azure.token_requests().len();
    wait_until(
        SHORT,
        "token requests refused with invalid_client",
        async || azure.token_requests().len() > refused_before + 1,
    )
    .await;
    let refused = wait_for_reason(&agent, "invalid_client").await;

    azure.set_token_fault(None);
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    wait_until(DELIVERY, "/health/delivery healthy again", async || {
        agent.api_get("/health/delivery").await.0 == 200
    })
    .await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert_protocol_kept(&azure);
    assert_secret_not_logged(&agent);
    assert!(
        reasons.to_string().contains("token endpoint"),
        "the reason does not name the token endpoint: {reasons}; later: {refused}"
    );
}

/// Waits until `/health/delivery` answers 503 with a reason for the sink; returns the
/// reasons.
async fn wait_for_unhealthy(agent: &Agent) -> Value {
    let mut last = Value::Null;
    wait_until(SHORT, "/health/delivery 503 for the sink", async || {
        let (code, body) = agent.api_get("/health/delivery").await;
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
        code == 503 && last["sinks"][SINK]["healthy"] == false
    })
    .await;
    let reasons = last["sinks"][SINK]["reasons"].clone();
    assert!(
        reasons.as_array().is_some_and(|r| !r.is_empty()),
        "unhealthy without a reason: {last:#}"
    );
    reasons
}

/// Waits until a reason of the sink on `/health/delivery` mentions `words`.
async fn wait_for_reason(agent: &Agent, words: &str) -> Value {
    let mut last = Value::Null;
    let found = async || {
        let (_, body) = agent.api_get("/health/delivery").await;
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
        last["sinks"][SINK]["reasons"].to_string().contains(words)
    };
    let deadline = Instant::now() + SHORT;
    let mut found = found;
    while !found().await {
        assert!(
            Instant::now() < deadline,
            "/health/delivery never said {words:?}; last: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last["sinks"][SINK]["reasons"].clone()
}

/// `count` lines of `len` bytes that gzip cannot shrink much (hex of a xorshift stream).

// Debug logging of a sink that is refused tokens and calls: the secret must stay out of
// every line.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_secret_never_appears_in_the_agents_log_even_at_trace_level() {
    let azure = Azure::start().await;
    azure.script_token(2, Fault::Status(401));
    azure.script(2, Fault::Status(400));
    let (agent, ingest) =
        start_agent_with(&azure, "max_events = 10", "", &[("GAPLESS_LOG", "trace")]).await;
    let lines = numbered_lines("azure secret", 0, 50);
    ingest.post_ok(&lines).await;
    // Two calls of 10 refused for good: the other 30 lines are stored.
    wait_until(DELIVERY, "30 lines stored", async || {
        check_delivery(&lines, &azure.rows()).missing.len() <= 20
    })
    .await;
    assert!(
        azure
            .token_requests()
            .iter()
            .any(|t| t.form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)),
        "the agent never sent the secret from client_secret_file"
    );
    assert!(
        agent.stderr_text().lines().count() > 10,
        "GAPLESS_LOG=trace wrote almost nothing: the check would prove little"
    );
    assert_secret_not_logged(&agent);
    let (_, status) = agent.api_get("/status").await;
    assert!(!status.contains(CLIENT_SECRET), "/status shows the secret");
}

// A token request that is never answered must be cut (request_timeout) like any other
// request, or the sink waits for it forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_request_that_is_never_answered_is_cut_and_retried() {
    let azure = Azure::start().await;
    azure.script_token(1, Fault::Stall);
    let (agent, ingest) = start_agent(&azure, "max_events = 50", "").await;
    let lines = numbered_lines("azure entra stall", 0, 50);
    ingest.post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert!(
        azure.token_requests().len() >= 2,
        "the stalled token request was not retried; {}",
        azure.summary()
    );
    assert_secret_not_logged(&agent);
}

// The wrong secret in client_secret_file: Entra ID refuses the app (invalid_client), the
// sink says so and holds every line; writing the right secret into the file is enough,
// without a restart or a reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_a_delay_with_a_reason_until_the_secret_file_is_fixed() {
    let azure = Azure::start().await;
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 50",
        "alert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    let secret_file = agent.config_path().with_file_name("client_secret");
    std::fs::write(&secret_file, "not-the-secret\n").unwrap();
    // The first token was fetched with the right secret, if any line went already: make
    // the agent fetch again.
    azure.revoke_tokens();
    let lines = numbered_lines("azure wrong secret", 0, 100);
    ingest.post_ok(&lines).await;
    let reasons = wait_for_reason(&agent, "invalid_client").await;
    assert!(
        azure.rows().is_empty(),
        "rows stored without a token: {}",
        azure.summary()
    );
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
    assert!(!reasons.to_string().contains("not-the-secret"), "{reasons}");
    assert_secret_not_logged(&agent);
    assert!(
        !agent.stderr_text().contains("not-the-secret"),
        "the wrong secret appears in the agent's log"
    );
}

// Every call refused with 401 although tokens are issued (the app asked for the wrong
// audience, say): the sink must back off between rounds of new token and call, and say
// why it is stuck, not spin on the token endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn calls_refused_401_with_every_new_token_back_off_and_turn_delivery_health_unhealthy() {
    let azure = Azure::start().await;
    azure.set_fault(Some(Fault::Status(401)));
    let (agent, ingest) = start_agent(
        &azure,
        "max_events = 50",
        "alert_after = \"1s\"\nalert_after_failed_requests = 3",
    )
    .await;
    let lines = numbered_lines("azure 401 loop", 0, 50);
    ingest.post_ok(&lines).await;
    let started = Instant::now();
    wait_for_unhealthy(&agent).await;
    wait_until(SHORT, "3 s of refusals", async || {
        started.elapsed() > Duration::from_secs(3)
    })
    .await;
    let rate = azure.token_requests().len() as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate < 10.0,
        "{} token requests in {:?}: no backoff between 401s; {}",
        azure.token_requests().len(),
        started.elapsed(),
        azure.summary()
    );
    azure.set_fault(None);
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    check_delivery(&lines, &azure.rows()).assert_nothing_lost();
}

// A secret written inline (`client_secret = "…"`) is as secret as one in a file: not in the
// log at trace level, and not quoted back by `validate` when its own line is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn an_inline_client_secret_is_not_logged_nor_quoted_by_validate() {
    let azure = Azure::start().await;
    let port = free_port();
    let builder = Agent::builder()
        .listening_on(port)
        .env("GAPLESS_LOG", "trace");
    let secret_file = builder.path("client_secret");
    let inline = |sink: String| {
        let file_key = format!("client_secret_file = {}", toml_path(&secret_file));
        assert!(sink.contains(&file_key), "{sink}");
        sink.replace(&file_key, &format!("client_secret = \"{CLIENT_SECRET}\""))
    };
    let sink = inline(azure.sink(SINK, &["in"], &secret_file, "max_events = 10", ""));
    std::fs::remove_file(&secret_file).unwrap();
    let agent = builder
        .config(&format!("{}{sink}", http_source("in", port, "")))
        .start()
        .await;
    let lines = numbered_lines("azure inline", 0, 20);
    Ingest::new(port).post_ok(&lines).await;
    azure.wait_for_rows(lines.len(), DELIVERY).await;
    assert_eq!(
        azure.token_requests()[0].form["client_secret"],
        CLIENT_SECRET,
        "the inline secret was not the one sent"
    );
    assert_secret_not_logged(&agent);

    // The same table with a mistake on the secret's own line.
    let broken = sink.replace(
        &format!("client_secret = \"{CLIENT_SECRET}\""),
        &format!("client_secret = \"{CLIENT_SECRET}\", client_sekret = 1"),
    );
    let config = agent.config_path().with_file_name("broken.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n{}{broken}",
            toml_path(&agent.config_path().with_file_name("data2")),
            http_source("in", port, "")
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = crate::harness::agent::run_command(&[
        "validate".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(!status.success(), "validate took an unknown key in auth");
    assert!(
        !stderr.contains(CLIENT_SECRET) && !stdout.contains(CLIENT_SECRET),
        "validate quoted the secret back: {stderr}"
    );
}

// The token endpoint fails just when the token is due for renewal: the current token is
// used while it is valid, never after it expired, and the sink resumes once Entra ID is
// back.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_renewal_keeps_the_valid_token_and_never_sends_an_expired_one() {
    let azure = Azure::start().await;
    azure.set_token_lifetime(3, false);
    let (_agent, ingest) = start_agent(&azure, "max_events = 10", "").await;
    ingest
        .post_ok(&numbered_lines("azure renewal first", 0, 5))
        .await;
    azure.wait_for_rows(5, DELIVERY).await;
    azure.set_token_fault(Some(Fault::Status(503)));
    let failing = Instant::now();
    let mut posted = 5;
    wait_until(
        SHORT,
        "4 s of failed renewals with lines coming",
        async || {
            ingest
                .post_ok(&numbered_lines("azure renewal during", posted, 1))
                .await;
            posted += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            failing.elapsed() > Duration::from_secs(4)
        },
    )
    .await;
    assert!(
        azure.token_requests().iter().any(|t| t.status == Some(503)),
        "no renewal was attempted; {}",
        azure.summary()
    );
    assert!(
        azure
            .requests()
            .iter()
            .any(|r| r.accepted() && r.arrived > failing),
        "nothing was delivered with the still valid token once renewal failed; {}",
        azure.summary()
    );
    let expired: Vec<_> = azure
        .requests()
        .into_iter()
        .filter(|r| r.status() == Some(401))
        .collect();
    assert!(
        expired.is_empty(),
        "{} calls went out with an expired token; {}",
        expired.len(),
        azure.summary()
    );
    azure.set_token_fault(None);
    azure.wait_for_rows(posted, DELIVERY).await;
}
