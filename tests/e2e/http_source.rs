//! The http source: a 200 means the events are durable, so every event answered 200 is
//! delivered even if the agent is SIGKILLed right after; malformed requests get a 400
//! naming the problem and none of their events is ingested; 413 over `max_body_bytes`;
//! 401 on a wrong or missing token; every refusal is a JSON `{"error": …}`; JSON objects
//! keep their own fields (byte for byte: see `client_json.rs`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::json;

use crate::harness::client::Answer;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Panics unless `answer` is a 413 whose JSON body's `error` names `max_body_bytes`.
fn assert_json_413(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 413, "{what}: {answer:?}");
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/json"),
        "{what}: {answer:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{what}: the 413 is not JSON ({e}): {:?}", answer.body));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_body_bytes")),
        "{what}: the 413 should name max_body_bytes: {body}"
    );
}

async fn start_agent(receiver: &Receiver, port: u16, source_extra: &str) -> Agent {
    Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, source_extra),
            http_sink(&receiver.url(), &["in"], 100, "")
        ))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_answered_only_once_the_http_source_accepts_connections() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    // Not start(): this test looks at the first moment /ready says 200. Small segments
    // keep the restarts after kill -9 quick (recovery scans the active segment).
    let mut agent = Agent::builder()
        .config(&format!(
            "[wal]\nsegment_bytes = \"1MiB\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 100, "")
        ))
        .spawn();
    let http = reqwest::Client::new();
    for start in 0..30 {
        let deadline = std::time::Instant::now() + SHORT;
        loop {
            let ready = http.get(agent.api_url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "start {start}: never ready"
            );
        }
        let connected = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(
            connected.is_ok(),
            "start {start}: /ready said 200 but the http source refused a connection: {:?}",
            connected.err()
        );
        agent.kill9();
        agent.respawn();
    }
}

// Crash: SIGKILL immediately after the 200, before the receiver got anything (it answers
// 503 all along): only the WAL can have kept those events.
#[tokio::test(flavor = "multi_thread")]
async fn events_answered_200_are_delivered_even_after_a_kill_9_right_after_the_answer() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let mut agent = start_agent(&receiver, port, "").await;
    let ingest = Ingest::new(port);
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let lines = numbered_lines(&format!("sigkill-after-200 round {round}"), 0, 500);
        for chunk in lines.chunks(50) {
            ingest.post_ok(chunk).await;
        }
        agent.kill9();
        acknowledged.extend(lines);
        agent.restart().await;
    }
    assert!(
        receiver.events().is_empty(),
        "the receiver accepted events while it answered 503"
    );
    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&acknowledged, DELIVERY).await;
    // The sink never got a 2xx before the kills, so nothing is sent twice either.
    check_delivery(&acknowledged, &receiver.events()).assert_exactly_once();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_200_comes_only_after_an_fdatasync_that_began_after_the_request() {
    // `kill -9` keeps the page cache, so the kill tests cannot tell a synced append from a
    // written one: the WAL's own count of fdatasyncs can. Only this source appends.
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start_agent(&receiver, port, "").await;
    let ingest = Ingest::new(port);
    for n in 0..20 {
        let before = agent.status_json().await["wal"]["fsyncs"]
            .as_u64()
            .expect("/status wal.fsyncs");
        ingest
            .post_ok(&numbered_lines(&format!("synced {n}"), 0, 10))
            .await;
        let after = agent.status_json().await["wal"]["fsyncs"].as_u64().unwrap();
        assert!(
            after > before,
            "request {n} was answered 200 with no fdatasync since it was sent"
        );
    }
}

// Crash: SIGKILL in the middle of a stream of posts from four clients, three times, with
// the receiver up: requests cut by the kill may or may not have been stored, but every one
// answered 200 must arrive.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_posts_answered_200_survive_kill_9_in_mid_stream() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let mut agent = start_agent(&receiver, port, "").await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..3 {
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..4 {
            let acknowledged = acknowledged.clone();
            clients.spawn(async move {
                let ingest = Ingest::new(port);
                for n in 0.. {
                    let lines =
                        numbered_lines(&format!("mid-stream r{round} c{client} p{n}"), 0, 20);
                    match ingest.post_lines(&lines).await {
                        Ok(a) if a.status == 200 => acknowledged.lock().unwrap().extend(lines),
                        Ok(a) => panic!("client {client}: the running agent answered {a:?}"),
                        // The connection broke: the agent is gone, this client's round is over.
                        Err(_) => return,
                    }
                }
            });
        }
        // The kill lands once this round has had 200 lines acknowledged, while the clients
        // keep posting.
        let want = 200 * (round + 1);
        wait_until(SHORT, format!("{want} acknowledged lines"), async || {
            acknowledged.lock().unwrap().len() >= want
        })
        .await;
        agent.kill9();
        while let Some(done) = clients.join_next().await {
            done.expect("a client failed");
        }
        agent.restart().await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 600,
        "only {} lines acknowledged",
        acknowledged.len()
    );
    receiver.wait_for_lines(&acknowledged, DELIVERY).await;
    check_delivery(&acknowledged, &receiver.events()).assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_with_a_reason_and_none_of_their_events_is_delivered() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start_agent(&receiver, port, "").await;
    let ingest = Ingest::new(port);

    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "a JSON body that does not parse",
            "application/json",
            br#"[{"message": "bad-json-1"}, {"message": "bad-json-2""#.to_vec(),
            "JSON",
        ),
        (
            "NDJSON with one bad line among good ones",
            "application/x-ndjson",
            b"{\"message\":\"bad-ndjson-1\"}\n{\"message\":\"bad-ndjson-2\"}\n{\"message\": oops}\n{\"message\":\"bad-ndjson-4\"}\n".to_vec(),
            "line 3",
        ),
        (
            "a JSON array holding a number",
            "application/json",
            br#"[{"message": "bad-array-1"}, 42]"#.to_vec(),
            "element 1",
        ),
        (
            "an unsupported content type",
            "application/xml",
            b"<message>bad-xml-1</message>".to_vec(),
            "Content-Type",
        ),
        (
            "a body that claims gzip but is not",
            "text/plain",
            b"bad-gzip-1\n".to_vec(),
            "gzip",
        ),
    ];
    for (what, content_type, body, reason) in cases {
        let headers: &[(&str, &str)] = if what.contains("gzip") {
            &[("content-encoding", "gzip")]
        } else {
            &[]
        };
        let answer = ingest.post(content_type, headers, body).await.unwrap();
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert!(
            answer.body.contains(reason),
            "{what}: the 400 should say {reason:?}; it says {:?}",
            answer.body
        );
    }

    // The agent keeps serving: a good request after all that is taken and delivered.
    let good = numbered_lines("after-the-bad-ones", 0, 10);
    ingest.post_ok(&good).await;
    receiver.wait_for_lines(&good, DELIVERY).await;
    let delivered = lines_in(&receiver.events());
    let leaked: Vec<&String> = delivered.iter().filter(|l| l.starts_with("bad-")).collect();
    assert!(
        leaked.is_empty(),
        "events of rejected requests were delivered: {leaked:?}"
    );
    // Nothing else went into the WAL before the good lines: they are seqs 1 to 10.
    let seqs: Vec<u64> = receiver
        .unique_events()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "seqs of the delivered events"
    );
    let rejected = agent
        .metric(
            "gapless_source_rejected_requests_total",
            &[("source", "in")],
        )
        .await;
    assert_eq!(
        rejected,
        Some(5.0),
        "gapless_source_rejected_requests_total"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_body_bytes_gets_413_plain_or_gzipped() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start_agent(&receiver, port, "max_body_bytes = \"4KiB\"").await;
    let ingest = Ingest::new(port);

    let big = numbered_lines("too-big", 0, 100).join("\n").into_bytes();
    assert!(big.len() > 8 << 10);
    let answer = ingest.post("text/plain", &[], big.clone()).await.unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_json_413("a plain body", &answer);
    // Small on the wire, too large once decompressed.
    let compressed = gzip(&big);
    assert!(
        compressed.len() < 4 << 10,
        "the gzipped body should fit the limit"
    );
    let answer = ingest
        .post("text/plain", &[("content-encoding", "gzip")], compressed)
        .await
        .unwrap();
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_json_413("a gzipped body", &answer);

    let small = numbered_lines("fits", 0, 5);
    ingest
        .post(
            "text/plain",
            &[("content-encoding", "gzip")],
            gzip(small.join("\n").as_bytes()),
        )
        .await
        .map(|a| assert_eq!(a.status, 200, "{a:?}"))
        .unwrap();
    receiver.wait_for_lines(&small, DELIVERY).await;
    let delivered = lines_in(&receiver.events());
    assert!(
        !delivered.iter().any(|l| l.starts_with("too-big")),
        "events of a 413 request were delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_limit_body_gets_the_same_json_413_plain_chunked_or_gzipped_and_none_of_it_is_stored(
) {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start_agent(&receiver, port, "max_body_bytes = \"4KiB\"").await;
    let ingest = Ingest::new(port);

    let big = numbered_lines("chunked-too-big", 0, 100)
        .join("\n")
        .into_bytes();
    let chunks: Vec<Vec<u8>> = big.chunks(1000).map(<[u8]>::to_vec).collect();
    assert_json_413(
        "a chunked text body",
        &ingest
            .post_chunked("text/plain", &[], &chunks)
            .await
            .unwrap(),
    );
    let objects: Vec<String> = (0..300)
        .map(|i| format!("{{\"message\":\"chunked-json-too-big {i:04}\"}}"))
        .collect();
    let ndjson = objects.join("\n").into_bytes();
    assert!(ndjson.len() > 8 << 10);
    assert_json_413(
        "a chunked NDJSON body",
        &ingest
            .post_chunked(
                "application/x-ndjson",
                &[],
                &[ndjson[..3000].to_vec(), ndjson[3000..].to_vec()],
            )
            .await
            .unwrap(),
    );
    assert_json_413(
        "a plain JSON body",
        &ingest
            .post(
                "application/json",
                &[],
                format!("[{}]", objects.join(",")).into_bytes(),
            )
            .await
            .unwrap(),
    );
    assert_json_413(
        "a gzipped chunked body",
        &ingest
            .post_chunked("text/plain", &[("content-encoding", "gzip")], &[gzip(&big)])
            .await
            .unwrap(),
    );

    // A chunked body within the limit is taken.
    let small = numbered_lines("chunked-fits", 0, 5);
    let answer = ingest
        .post_chunked(
            "text/plain",
            &[],
            &small
                .iter()
                .map(|l| format!("{l}\n").into_bytes())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    receiver.wait_for_lines(&small, DELIVERY).await;
    assert!(
        !lines_in(&receiver.events())
            .iter()
            .any(|l| l.contains("too-big")),
        "events of a 413 request were delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_bearer_token_gets_401_and_the_right_one_200() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start_agent(
        &receiver,
        port,
        "auth = { bearer_token = \"s3cret-e2e-token\" }",
    )
    .await;

    let lines = numbered_lines("token", 0, 3);
    let missing = Ingest::new(port).post_lines(&lines).await.unwrap();
    assert_eq!(missing.status, 401, "no token: {missing:?}");
    let wrong = Ingest::new(port)
        .with_token("not-the-token")
        .post_lines(&lines)
        .await
        .unwrap();
    assert_eq!(wrong.status, 401, "wrong token: {wrong:?}");
    Ingest::new(port)
        .with_token("s3cret-e2e-token")
        .post_ok(&lines)
        .await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    check_delivery(&lines, &receiver.events()).assert_exactly_once();

    let status = agent.api_get("/status").await.1;
    let metrics = agent.metrics_text().await;
    assert!(
        !agent.stderr_text().contains("s3cret-e2e-token")
            && !status.contains("s3cret-e2e-token")
            && !metrics.contains("s3cret-e2e-token"),
        "the token leaked into logs, /status or /metrics"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_objects_keep_their_own_fields_and_get_the_missing_ones() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start_agent(&receiver, port, "").await;
    let ingest = Ingest::new(port);

    let ndjson = [
        json!({"message": "object-1", "level": "warn", "timestamp": "2020-01-02T03:04:05Z"}),
        json!({"message": "object-2", "nested": {"a": [1, 2]}}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let answer = ingest
        .post("application/x-ndjson", &[], ndjson.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let array = json!([{"message": "object-3"}, "a plain string becomes a message"]).to_string();
    let answer = ingest
        .post("application/json", &[], array.into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");

    let events = receiver.wait_for_events(4, DELIVERY).await;
    let by_message = |m: &str| {
        events
            .iter()
            .find(|e| e["message"] == m)
            .unwrap_or_else(|| panic!("no event {m:?} in {events:?}"))
            .clone()
    };
    let first = by_message("object-1");
    assert_eq!(first["level"], "warn", "{first}");
    assert_eq!(
        first["timestamp"], "2020-01-02T03:04:05Z",
        "the source's own timestamp stays: {first}"
    );
    assert_eq!(first["source"], "in");
    assert!(
        first["host"].is_string() && first["seq"].is_u64(),
        "{first}"
    );
    let second = by_message("object-2");
    assert_eq!(second["nested"], json!({"a": [1, 2]}), "{second}");
    assert!(
        second["timestamp"].is_string(),
        "a missing timestamp is added: {second}"
    );
    by_message("object-3");
    by_message("a plain string becomes a message");
}

/// Posts 20 requests of 10 lines to an agent with this `[wal]` durability, kills it, and
/// returns (fsyncs counted before the kill, the lines answered 200, the receiver).
async fn posts_under_durability(durability: &str) -> (u64, Vec<String>, Receiver) {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "[wal]\ndurability = \"{durability}\"\nsync_interval = \"200ms\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 100, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let before = agent.status_json().await["wal"]["fsyncs"].as_u64().unwrap();
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let lines = numbered_lines(&format!("{durability} {n}"), 0, 10);
        ingest.post_ok(&lines).await;
        acknowledged.extend(lines);
    }
    let fsyncs = agent.status_json().await["wal"]["fsyncs"].as_u64().unwrap() - before;
    if durability == "interval" {
        // With no further writes, the timer alone syncs what was written.
        wait_until(SHORT, "a sync by the interval timer", async || {
            agent.status_json().await["wal"]["fsyncs"].as_u64() > Some(before)
        })
        .await;
    }
    // kill -9 keeps the page cache: whatever the mode, the written events survive it.
    agent.kill9();
    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    receiver.wait_for_lines(&acknowledged, DELIVERY).await;
    (fsyncs, acknowledged, receiver)
}

#[tokio::test(flavor = "multi_thread")]
async fn durability_never_answers_200_without_an_fsync_and_kill_9_loses_nothing_written() {
    let (fsyncs, acknowledged, receiver) = posts_under_durability("never").await;
    assert_eq!(fsyncs, 0, "durability = never synced appends");
    check_delivery(&acknowledged, &receiver.events()).assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread")]
async fn durability_interval_syncs_on_its_timer_not_per_request_and_kill_9_loses_nothing_written() {
    let (fsyncs, acknowledged, receiver) = posts_under_durability("interval").await;
    assert!(
        fsyncs < 20,
        "durability = interval synced {fsyncs} times for 20 requests"
    );
    check_delivery(&acknowledged, &receiver.events()).assert_nothing_lost();
}
