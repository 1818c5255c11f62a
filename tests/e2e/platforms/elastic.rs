//! The `elasticsearch` sink against [`Elastic`], a `_bulk` server writing into a data
//! stream: every event is a `create` under `<agent_id>-<seq>`, so the cluster itself
//! de-duplicates what the agent sends again (after an item 429, a lost answer, a kill -9)
//! and every seq is stored exactly once; items the mapping refuses go to the dead-letter
//! queue with a notice naming `mapper_parsing_exception`; whole requests answered 429/5xx
//! are sent again, 413 is split, and a node that is down is failed over to the next.
//! `server` checks the server itself first.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::agent::{run_command, run_command_async, wait_for_status};
use crate::harness::platforms::elastic::{
    basic_credentials, encoded_api_key, Elastic, Fault, Settings,
};
use crate::harness::snippets::http_source;
use crate::harness::*;

/// The sink's data stream by default.
const INDEX: &str = "logs-gapless-default";

/// The API key the agent is given (its `encoded` form).
fn key() -> String {
    encoded_api_key("gapless-e2e", "k3y-s3cr3t-never-logged")
}

fn api_key_auth() -> String {
    format!("auth = {{ api_key = \"{}\" }}", key())
}

async fn cluster() -> Elastic {
    Elastic::start(Settings::default().api_key(&key())).await
}

/// A running agent with an http source `in` and an elasticsearch sink `search`.
struct Setup {
    agent: Agent,
    ingest: Ingest,
    agent_id: String,
}

/// The sink `search` taking `in`, sending to `endpoints` in batches of `max_events`, with
/// fast retries; `extra` lines (the `auth`, …) go into its table.
fn sink(endpoints: &[String], max_events: usize, extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
[sinks.search]
type = "elasticsearch"
inputs = ["in"]
endpoints = [{endpoints}]
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#,
        endpoints = endpoints.join(", ")
    )
}

async fn start_with(builder: agent::AgentBuilder, sink_text: &str) -> Setup {
    let port = free_port();
    let agent = builder
        .listening_on(port)
        .config(&format!("{}{sink_text}", http_source("in", port, "")))
        .start()
        .await;
    let agent_id = agent.status_json().await["agent_id"]
        .as_str()
        .expect("/status names the agent_id")
        .to_string();
    Setup {
        agent,
        ingest: Ingest::new(port),
        agent_id,
    }
}

async fn start(endpoints: &[String], max_events: usize, extra: &str) -> Setup {
    start_with(Agent::builder(), &sink(endpoints, max_events, extra)).await
}

/// The documents that are events (not gap records), by seq; panics if a seq is stored
/// twice or under an `_id` other than `<agent_id>-<seq>`.
fn events_by_seq(es: &Elastic, agent_id: &str) -> BTreeMap<u64, Value> {
    let mut by_seq = BTreeMap::new();
    for doc in es.documents() {
        if doc.source.get("gapless").is_some() {
            continue;
        }
        let seq = doc.source["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("a document without a numeric seq: {}", doc.source));
        assert_eq!(doc.id, format!("{agent_id}-{seq}"), "{}", doc.source);
        if let Some(earlier) = by_seq.insert(seq, doc.source.clone()) {
            panic!("seq {seq} is stored twice: {earlier} and {}", doc.source);
        }
    }
    by_seq
}

/// Waits until `n` events are stored; returns them by seq.
async fn wait_for_events(es: &Elastic, agent_id: &str, n: usize) -> BTreeMap<u64, Value> {
    wait_until(DELIVERY, format!("{n} events in the cluster"), async || {
        es.documents()
            .iter()
            .filter(|d| d.source.get("gapless").is_none())
            .count()
            >= n
    })
    .await;
    events_by_seq(es, agent_id)
}

/// Asserts that `lines` are stored exactly once, as seqs `1..=lines.len()`.
fn assert_stored_once(events: &BTreeMap<u64, Value>, lines: &[String]) {
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(seqs, (1..=lines.len() as u64).collect::<Vec<_>>());
    let sources: Vec<Value> = events.values().cloned().collect();
    check_delivery(lines, &sources).assert_exactly_once();
}

/// The statuses of every processed arrival of `<agent_id>-<seq>`, in order.
fn statuses(es: &Elastic, agent_id: &str, seq: u64) -> Vec<u16> {
    es.arrivals(&format!("{agent_id}-{seq}"))
        .iter()
        .filter_map(|i| i.status)
        .collect()
}

/// The stored dead-letter notices (`"gapless":"gap"`, `"reason":"dead_letter"`).
fn notices(es: &Elastic) -> Vec<(String, Value)> {
    es.documents()
        .into_iter()
        .filter(|d| d.source["gapless"] == "gap" && d.source["reason"] == "dead_letter")
        .map(|d| (d.id, d.source))
        .collect()
}

fn dead_letter_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("dead-letter").join("search")) else {
        return Vec::new();
    };
    entries.map(|e| e.unwrap().path()).collect()
}

/// Posts NDJSON objects to the http source.
async fn post_objects(ingest: &Ingest, objects: &[Value]) {
    let body: String = objects.iter().map(|o| format!("{o}\n")).collect();
    let answer = ingest
        .post("application/x-ndjson", &[], body.into_bytes())
        .await
        .expect("POST to the http source");
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_is_created_once_in_the_data_stream_under_the_agent_id_and_its_seq() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es once", 0, 50);
    s.ingest.post_ok(&lines).await;
    let events = wait_for_events(&es, &s.agent_id, lines.len()).await;
    assert_stored_once(&events, &lines);
    for e in events.values() {
        assert_eq!(e["agent_id"], s.agent_id.as_str(), "{e}");
        assert!(e["@timestamp"].is_string(), "{e}");
    }
    assert!(es.documents().iter().all(|d| d.stream == INDEX));
    let auth = format!("ApiKey {}", key());
    for r in es.requests() {
        assert_eq!(r.method, "POST");
        assert!(r.path.starts_with("/_bulk"), "{}", r.path);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/x-ndjson")),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some(auth.as_str()));
        assert_eq!(r.status, Some(200));
        for item in &r.items {
            assert_eq!(
                (item.action.as_str(), item.index.as_str()),
                ("create", INDEX)
            );
        }
    }
}

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
async fn items_answered_429_or_503_are_sent_again_alone_until_stored() {
    let es = cluster().await;
    let busy = |seq: u64| seq.is_multiple_of(7);
    let unavailable = |seq: u64| seq.is_multiple_of(11);
    es.reject_items(429, 2, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(busy)
    });
    es.reject_items(503, 1, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(unavailable)
    });
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es item retry", 0, 40);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 40).await, &lines);
    for seq in 1..=40 {
        let expected: &[u16] = if busy(seq) {
            &[429, 429, 201]
        } else if unavailable(seq) {
            &[503, 201]
        } else {
            &[201]
        };
        assert_eq!(
            statuses(&es, &s.agent_id, seq),
            expected,
            "seq {seq}: the cluster saw it with these item statuses"
        );
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn items_the_mapping_refuses_are_dead_lettered_with_a_notice_naming_mapper_parsing_exception()
{
    let es = cluster().await;
    es.map_long("code");
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let bad: BTreeSet<usize> = [5, 17].into();
    let objects: Vec<Value> = (1..=30)
        .map(|i| {
            let code = if bad.contains(&i) {
                json!("not-a-number")
            } else {
                json!(i)
            };
            json!({"message": format!("es mapping {i:03}"), "code": code})
        })
        .collect();
    post_objects(&s.ingest, &objects).await;
    let good = objects.len() - bad.len();
    wait_until(DELIVERY, "the good events and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= good && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    let stored: BTreeSet<&str> = events
        .values()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for (i, o) in objects.iter().enumerate() {
        let message = o["message"].as_str().unwrap();
        assert_eq!(
            stored.contains(message),
            !bad.contains(&(i + 1)),
            "{message}"
        );
    }
    let refused: BTreeSet<u64> = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.error.as_deref() == Some("mapper_parsing_exception"))
        .map(|i| i.source.unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(refused.len(), bad.len(), "{refused:?}");
    for seq in &refused {
        assert_eq!(
            statuses(&es, &s.agent_id, *seq),
            [400],
            "seq {seq} was sent again after a permanent refusal"
        );
    }
    wait_until(SHORT, "notices covering the refused seqs", async || {
        let notices = notices(&es);
        refused.iter().all(|seq| {
            notices.iter().any(|(_, n)| {
                (n["first_seq"].as_u64()..=n["last_seq"].as_u64()).contains(&Some(*seq))
            })
        })
    })
    .await;
    let notices = notices(&es);
    for (id, n) in &notices {
        assert_eq!(n["error"], "mapper_parsing_exception", "{n}");
        assert_eq!(n["status"], 400, "{n}");
        let (a, z) = (
            n["first_seq"].as_u64().unwrap(),
            n["last_seq"].as_u64().unwrap(),
        );
        assert_eq!(id, &format!("{}-dead-letter-{a}-{z}", s.agent_id));
        let file = n["dead_letter_file"].as_str().unwrap();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains("not-a-number"), "{file}: {text}");
    }
    let noticed: u64 = notices
        .iter()
        .map(|(_, n)| n["events"].as_u64().unwrap())
        .sum();
    assert_eq!(noticed, bad.len() as u64, "{notices:?}");
    wait_for_status(&s.agent, "the refused events counted", |st| {
        st["sinks"]["search"]["dead_lettered_events"] == bad.len()
            && st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_answered_409_counts_as_delivered_and_the_stored_document_is_kept() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    // An earlier life of this agent stored seqs 1..=5 already.
    let earlier: String = (1..=5)
        .map(|seq| {
            format!(
                "{}\n{}\n",
                json!({"create": {"_index": INDEX, "_id": format!("{}-{seq}", s.agent_id)}}),
                json!({"@timestamp": "2026-11-30T00:00:00Z", "message": "stored earlier", "seq": seq})
            )
        })
        .collect();
    let answer = reqwest::Client::new()
        .post(format!("{}/_bulk", es.url()))
        .header("content-type", "application/x-ndjson")
        .header("authorization", format!("ApiKey {}", key()))
        .body(earlier)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let lines = numbered_lines("es 409", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    for seq in 1..=10 {
        // The first 201 of seqs 1..=5 is the earlier life's.
        let expected: &[u16] = if seq <= 5 { &[201, 409] } else { &[201] };
        assert_eq!(statuses(&es, &s.agent_id, seq), expected, "seq {seq}");
    }
    let events = events_by_seq(&es, &s.agent_id);
    assert_eq!(events.len(), 10);
    assert!((1..=5).all(|seq| events[&seq]["message"] == "stored earlier"));
    let status = s.agent.status_json().await;
    assert_eq!(status["sinks"]["search"]["dead_lettered_events"], 0);
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_requests_answered_429_or_5xx_are_sent_again_until_stored() {
    let es = cluster().await;
    es.script([
        Fault::Status(429),
        Fault::Status(503),
        Fault::Status(500),
        Fault::Status(502),
    ]);
    let s = start(&[es.url()], 20, &api_key_auth()).await;
    let lines = numbered_lines("es whole", 0, 20);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 20).await, &lines);
    let answered: Vec<Option<u16>> = es.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        answered[..5],
        [Some(429), Some(503), Some(500), Some(502), Some(200)]
    );
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_http_max_content_length_gets_413_and_is_split_until_it_fits() {
    const LIMIT: usize = 4000;
    let es = Elastic::start(
        Settings::default()
            .api_key(&key())
            .max_content_length(LIMIT),
    )
    .await;
    let s = start(&[es.url()], 50, &api_key_auth()).await;
    let lines = numbered_lines("es split", 0, 50);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 50).await, &lines);
    let requests = es.requests();
    assert!(
        requests.iter().any(|r| r.status == Some(413)),
        "no request was over the limit; {}",
        es.summary()
    );
    for r in requests.iter().filter(|r| r.status == Some(200)) {
        assert!(r.body_bytes <= LIMIT, "{} bytes", r.body_bytes);
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_reset_and_lost_answers_are_sent_again_and_stored_once() {
    let es = cluster().await;
    es.script([Fault::Stall, Fault::Reset, Fault::AnswerLost]);
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es lost", 0, 30);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 30).await, &lines);
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    let lost = &es.requests()[2];
    for item in &lost.items {
        let seq = item.source.as_ref().unwrap()["seq"].as_u64().unwrap();
        assert_eq!(
            statuses(&es, &s.agent_id, seq),
            [201, 409],
            "seq {seq}: stored, its answer lost, sent again"
        );
    }
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_first_endpoint_down_every_event_arrives_through_the_second() {
    let es = cluster().await;
    let second = es.join().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let s = start(&[down, second.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es failover", 0, 30);
    s.ingest.post_ok(&lines).await;
    assert_stored_once(&wait_for_events(&es, &s.agent_id, 30).await, &lines);
    assert!(es.documents().iter().all(|d| d.node == second.port()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_going_down_mid_stream_is_failed_over_to_the_other() {
    let first = cluster().await;
    let second = first.join().await;
    let s = start(&[first.url(), second.url()], 10, &api_key_auth()).await;
    let before = numbered_lines("es before", 0, 20);
    s.ingest.post_ok(&before).await;
    wait_for_events(&second, &s.agent_id, 20).await;
    drop(first);
    let after = numbered_lines("es after", 0, 20);
    s.ingest.post_ok(&after).await;
    let all: Vec<String> = before.into_iter().chain(after).collect();
    assert_stored_once(&wait_for_events(&second, &s.agent_id, 40).await, &all);
}

// Crash: SIGKILL at moments that vary and while the cluster holds a batch it has already
// stored (slow answers, and answers lost after indexing), so that the restarted agent sends
// stored batches again.
#[tokio::test(flavor = "multi_thread")]
async fn repeated_kill_9_mid_delivery_leaves_every_seq_stored_exactly_once() {
    const KILLS: usize = 12;
    let es = cluster().await;
    es.set_fault(Fault::Slow(Duration::from_millis(200)));
    let mut s = start(&[es.url()], 50, &api_key_auth()).await;
    let lines = numbered_lines("es kill9", 0, 1500);
    s.ingest.post_ok(&lines).await;
    for kill in 0..KILLS {
        let seen = es.requests().len();
        match kill % 3 {
            // At a moment that differs from kill to kill (the pause is the fault schedule,
            // not a synchronisation).
            0 => tokio::time::sleep(Duration::from_millis(50 + (seen as u64 * 37) % 250)).await,
            // While the cluster holds a batch it has stored, or has lost the answer to one.
            k => {
                if k == 2 {
                    es.script([Fault::AnswerLost]);
                }
                wait_until(DELIVERY, "a stored batch awaiting its answer", async || {
                    es.requests().iter().skip(seen).any(|r| {
                        r.status.is_none() && r.items.iter().any(|i| i.status == Some(201))
                    })
                })
                .await;
            }
        }
        s.agent.kill9();
        eprintln!("kill {kill}: {}", es.summary());
        s.agent.restart().await;
    }
    es.set_fault(Fault::None);
    let events = wait_for_events(&es, &s.agent_id, lines.len()).await;
    assert_stored_once(&events, &lines);
    let conflicts = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.status == Some(409))
        .count();
    assert!(
        conflicts > 0,
        "no stored batch was sent again, so de-duplication went untested"
    );
    assert!(dead_letter_files(s.agent.data_dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_never_appears_in_the_agents_output_even_while_it_is_refused() {
    // The cluster does not know the agent's key yet: every request is answered 401.
    let es = Elastic::start(Settings::default().api_key(&encoded_api_key("other", "key"))).await;
    let builder = Agent::builder().env("GAPLESS_LOG", "debug");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_request_refused_with_400_is_dead_lettered_and_the_rest_delivered() {
    let es = cluster().await;
    es.script([Fault::Status(400)]);
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es 400", 0, 30);
    s.ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "the first request answered", async || {
        es.requests().first().is_some_and(|r| r.status.is_some())
    })
    .await;
    let first = es.requests()[0].clone();
    assert_eq!(first.status, Some(400));
    let refused: BTreeSet<u64> = first
        .items
        .iter()
        .map(|i| i.source.as_ref().unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert!(!refused.is_empty());
    let delivered = lines.len() - refused.len();
    wait_until(DELIVERY, "the rest delivered and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= delivered && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    assert!(refused.iter().all(|seq| !events.contains_key(seq)));
    assert_eq!(events.len(), delivered);
    let notices = notices(&es);
    assert_eq!(notices[0].1["status"], 400, "{:?}", notices);
    assert_eq!(notices[0].1["error"], "parse_exception", "{:?}", notices);
    assert!(!dead_letter_files(s.agent.data_dir()).is_empty());
}

#[test]
fn validate_refuses_an_elasticsearch_sink_without_endpoints_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gapless.toml");
    for endpoints in ["", "endpoints = []"] {
        let text = format!(
            "data_dir = {}\n{}\n[sinks.search]\ntype = \"elasticsearch\"\ninputs = [\"in\"]\n{endpoints}\n{}\n",
            toml_path(&dir.path().join("data")),
            http_source("in", free_port(), ""),
            api_key_auth()
        );
        std::fs::write(&path, &text).unwrap();
        let (status, _, stderr) = run_command(&[
            OsStr::new("validate"),
            OsStr::new("--config"),
            path.as_os_str(),
        ]);
        assert!(
            !status.success(),
            "validate accepted an elasticsearch sink with {endpoints:?}"
        );
        assert!(
            stderr.contains("endpoints"),
            "validate's error should name the key endpoints; stderr: {stderr}"
        );
    }
}

// ECS-formatted logs carry their own `@timestamp` (and may carry `agent_id`): written next to
// the agent's, the key would appear twice, which Elasticsearch refuses for the whole document.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_own_timestamp_and_agent_id_do_not_clash_with_the_agents() {
    let es = cluster().await;
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let objects: Vec<Value> = (1..=5)
        .map(|i| {
            json!({"@timestamp": "2020-01-02T03:04:05.678Z", "agent_id": "forged",
                   "message": format!("es ecs {i}"), "log": {"level": "info"}})
        })
        .collect();
    post_objects(&s.ingest, &objects).await;
    wait_for_status(&s.agent, "every event sent", |st| {
        st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    let refused: Vec<_> = es
        .requests()
        .iter()
        .flat_map(|r| r.items.clone())
        .filter(|i| i.error.is_some())
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    let events = events_by_seq(&es, &s.agent_id);
    assert_eq!(events.len(), 5);
    for e in events.values() {
        assert_eq!(e["agent_id"], s.agent_id.as_str(), "{e}");
        let kept = e.to_string();
        assert!(
            kept.contains("2020-01-02T03:04:05.678Z") && kept.contains("forged"),
            "the client's own values were lost: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_lettered_items_are_replayed_on_demand_under_their_own_ids() {
    let es = cluster().await;
    let refused = [3, 8];
    es.reject_items(400, 1, move |d| {
        d.get("gapless").is_none() && d["seq"].as_u64().is_some_and(|s| refused.contains(&s))
    });
    let s = start(&[es.url()], 10, &api_key_auth()).await;
    let lines = numbered_lines("es replay", 0, 10);
    s.ingest.post_ok(&lines).await;
    wait_for_status(&s.agent, "two events dead-lettered", |st| {
        st["sinks"]["search"]["dead_lettered_events"] == 2
            && st["sinks"]["search"]["backlog_events"] == 0
    })
    .await;
    assert_eq!(events_by_seq(&es, &s.agent_id).len(), 8);

    let (status, stdout, stderr) = run_command_async(&[
        "dead-letter".as_ref(),
        "replay".as_ref(),
        "--sink".as_ref(),
        "search".as_ref(),
        "--config".as_ref(),
        s.agent.config_path().as_os_str(),
    ])
    .await;
    assert!(
        status.success(),
        "dead-letter replay exited {status}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_stored_once(&events_by_seq(&es, &s.agent_id), &lines);
    for seq in refused {
        assert_eq!(statuses(&es, &s.agent_id, seq), [400, 201], "seq {seq}");
    }
    assert!(
        dead_letter_files(s.agent.data_dir()).is_empty(),
        "{:?}",
        dead_letter_files(s.agent.data_dir())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_event_larger_than_http_max_content_length_is_dead_lettered_and_the_rest_delivered() {
    let es = Elastic::start(Settings::default().api_key(&key()).max_content_length(3000)).await;
    let s = start(&[es.url()], 20, &api_key_auth()).await;
    let mut lines = numbered_lines("es huge", 0, 20);
    lines[9] = format!("es huge {}", "x".repeat(4000));
    s.ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "19 events and a notice", async || {
        events_by_seq(&es, &s.agent_id).len() >= 19 && !notices(&es).is_empty()
    })
    .await;
    let events = events_by_seq(&es, &s.agent_id);
    assert!(!events.contains_key(&10), "the huge event was stored");
    assert_eq!(events.len(), 19);
    let notices = notices(&es);
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0].1;
    assert_eq!(
        (
            n["first_seq"].as_u64(),
            n["last_seq"].as_u64(),
            n["status"].as_u64()
        ),
        (Some(10), Some(10), Some(413)),
        "{n}"
    );
}
