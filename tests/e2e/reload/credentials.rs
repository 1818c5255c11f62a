//! Tokens from files: a sink reads its `auth.bearer_token_file` for every request (no
//! reload needed); an http source reads its own when it starts, so a new token is taken
//! after a reload.

use super::{authorizations, replace_file, token_file, TOP};
use crate::harness::agent::wait_for_status;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn sink_reads_its_bearer_token_file_for_every_request() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let builder = Agent::builder().top(TOP).listening_on(port);
    let token_path = builder.path("token");
    std::fs::write(&token_path, "token-1\n").unwrap();
    let agent = builder
        .config(&format!(
            "{}{}",
            http_source("app", port, ""),
            http_sink(&receiver.url(), &["app"], 50, &token_file(&token_path))
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let one = numbered_lines("one", 0, 20);
    ingest.post_ok(&one).await;
    receiver.wait_for_lines(&one, DELIVERY).await;
    let sent = receiver.requests().len();
    assert_eq!(
        authorizations(&receiver.requests())
            .keys()
            .collect::<Vec<_>>(),
        ["Bearer token-1"]
    );

    replace_file(&token_path, "token-2\n");
    let two = numbered_lines("two", 0, 20);
    ingest.post_ok(&two).await;
    receiver.wait_for_lines(&two, DELIVERY).await;
    let later = authorizations(&receiver.requests()[sent..]);
    assert_eq!(
        later.keys().collect::<Vec<_>>(),
        ["Bearer token-2"],
        "requests after the token file changed (no reload) carried: {later:?}"
    );
    assert_eq!(agent.stderr_count("reload"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_source_takes_the_new_token_from_its_file_after_a_reload() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let builder = Agent::builder().top(TOP).listening_on(port);
    let token_path = builder.path("token");
    std::fs::write(&token_path, "source-1\n").unwrap();
    let body = format!(
        "{}{}",
        http_source("app", port, &token_file(&token_path)),
        http_sink(&receiver.url(), &["app"], 50, "")
    );
    let mut agent = builder.config(&body).start().await;
    let old = Ingest::new(port).with_token("source-1");
    let new = Ingest::new(port).with_token("source-2");
    let status = async |client: &Ingest, lines: &[String]| {
        client
            .post_lines(lines)
            .await
            .map(|a| a.status)
            .unwrap_or_else(|e| panic!("POST to the http source: {e}"))
    };

    let one = numbered_lines("one", 0, 20);
    assert_eq!(status(&old, &one).await, 200);
    let refused = numbered_lines("refused", 0, 5);
    assert_eq!(
        status(&new, &refused).await,
        401,
        "a token not yet in the file"
    );

    replace_file(&token_path, "source-2\n");
    agent.reload(&body).await;
    let two = numbered_lines("two", 0, 20);
    assert_eq!(
        status(&new, &two).await,
        200,
        "the new token after the reload"
    );
    assert_eq!(
        status(&old, &refused).await,
        401,
        "the old token after the reload"
    );

    let lines = [one, two].concat();
    receiver.wait_for_lines(&lines, DELIVERY).await;
    wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;
    assert_exactly_once(&lines, &receiver.events(), "receiver");
}
