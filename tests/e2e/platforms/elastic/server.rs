//! The `_bulk` server itself, driven by a plain HTTP client, so that a test failing against
//! the agent is the agent's doing and not the server's.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::platforms::elastic::{
    basic_credentials, encoded_api_key, Elastic, Fault, Settings,
};
use crate::harness::SHORT;

/// The `encoded` form of an API key, as the create-API-key API returns it.
fn key() -> String {
    encoded_api_key("VuaCfGcBCdbkQm-e5aOx", "ui2lp2axTNmsyakw9tvNnw")
}

/// What a client sends: the body (gzipped or not) and its `Authorization`.
struct Bulk {
    path: &'static str,
    auth: Option<String>,
    content_type: &'static str,
    gzip: bool,
}

impl Bulk {
    fn new() -> Bulk {
        Bulk {
            path: "/_bulk",
            auth: Some(format!("ApiKey {}", key())),
            content_type: "application/x-ndjson",
            gzip: false,
        }
    }

    /// Posts `body` to `node`: status and parsed answer (`Null` for an empty one).
    async fn send(&self, node: &Elastic, body: &str) -> (u16, Value) {
        let mut bytes = body.as_bytes().to_vec();
        let mut req = reqwest::Client::new()
            .post(format!("{}{}", node.url(), self.path))
            .header("content-type", self.content_type)
            .timeout(SHORT);
        if self.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            bytes = gz.finish().unwrap();
            req = req.header("content-encoding", "gzip");
        }
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        let resp = req.body(bytes).send().await.expect("POST _bulk");
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("x-elastic-product")
                .and_then(|v| v.to_str().ok()),
            Some("Elasticsearch"),
            "every answer names the product"
        );
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, value)
    }
}

/// One `create` of `doc` under `id` into the default stream, as two NDJSON lines.
fn create(id: &str, doc: Value) -> String {
    format!(
        "{}\n{doc}\n",
        json!({"create": {"_index": "logs-gapless-default", "_id": id}})
    )
}

fn event(seq: u64) -> Value {
    json!({"@timestamp": "2026-11-26T14:54:09.650Z", "message": format!("event {seq}"), "seq": seq})
}

/// `(action, status, error.type)` of each item of a bulk answer.
fn items(answer: &Value) -> Vec<(String, u64, Option<String>)> {
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {answer}"))
        .iter()
        .map(|i| {
            let (action, r) = i.as_object().unwrap().iter().next().unwrap();
            (
                action.clone(),
                r["status"].as_u64().unwrap(),
                r["error"]["type"].as_str().map(str::to_string),
            )
        })
        .collect()
}

async fn cluster() -> Elastic {
    Elastic::start(Settings::default().api_key(&key())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_creates_are_stored_and_answered_in_request_order_by_backing_index() {
    let es = cluster().await;
    let body: String = (1..=3)
        .map(|s| create(&format!("a-{s}"), event(s)))
        .collect();
    let (status, answer) = Bulk::new().send(&es, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], false);
    let ids: Vec<&str> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["create"]["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a-1", "a-2", "a-3"]);
    let backing = answer["items"][0]["create"]["_index"].as_str().unwrap();
    assert!(
        backing.starts_with(".ds-logs-gapless-default-") && backing.ends_with("-000001"),
        "{backing}"
    );
    assert_eq!(answer["items"][0]["create"]["result"], "created");
    let seqs: Vec<u64> = es
        .sources()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let doc = &es.documents()[0];
    assert_eq!(
        (doc.stream.as_str(), doc.id.as_str(), doc.node),
        ("logs-gapless-default", "a-1", es.port())
    );
    let request = &es.requests()[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/_bulk")
    );
    assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_of_an_id_already_stored_is_a_409_and_the_document_is_kept_once() {
    let es = cluster().await;
    Bulk::new().send(&es, &create("a-1", event(1))).await;
    let body = format!("{}{}", create("a-1", event(1)), create("a-2", event(2)));
    let (status, answer) = Bulk::new().send(&es, &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["errors"], true);
    assert_eq!(
        items(&answer),
        [
            (
                "create".into(),
                409,
                Some("version_conflict_engine_exception".into())
            ),
            ("create".into(), 201, None),
        ]
    );
    assert_eq!(es.documents().len(), 2);
    assert_eq!(es.arrivals("a-1").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_stream_takes_only_creates_of_documents_with_one_timestamp_under_a_valid_name() {
    let es = cluster().await;
    let body = format!(
        "{}\n{}\n{}{}",
        json!({"index": {"_index": "logs-gapless-default", "_id": "i"}}),
        event(1),
        create("no-ts", json!({"message": "no timestamp"})),
        create("ok", event(3)),
    );
    let (status, answer) = Bulk::new().send(&es, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        items(&answer),
        [
            (
                "index".into(),
                400,
                Some("illegal_argument_exception".into())
            ),
            (
                "create".into(),
                400,
                Some("mapper_parsing_exception".into())
            ),
            ("create".into(), 201, None),
        ]
    );
    let (_, dup) = Bulk::new()
        .send(
            &es,
            &format!(
                "{}\n{}\n",
                json!({"create": {"_index": "logs-gapless-default", "_id": "dup"}}),
                r#"{"@timestamp":"2026-11-26T14:54:09Z","@timestamp":"2026-11-26T14:54:10Z"}"#
            ),
        )
        .await;
    assert_eq!(
        items(&dup),
        [(
            "create".into(),
            400,
            Some("mapper_parsing_exception".into())
        )]
    );
    let (_, upper) = Bulk::new()
        .send(
            &es,
            &format!(
                "{}\n{}\n",
                json!({"create": {"_index": "Logs-App"}}),
                event(9)
            ),
        )
        .await;
    assert_eq!(
        items(&upper),
        [(
            "create".into(),
            400,
            Some("invalid_index_name_exception".into())
        )]
    );
    assert!(answer["items"][0]["index"]["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("op_type of create"));
    assert_eq!(es.documents().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_valid_credentials_the_answer_is_401_security_exception() {
    let es = Elastic::start(
        Settings::default()
            .api_key(&key())
            .user("gapless", "secret"),
    )
    .await;
    let body = create("a-1", event(1));
    for auth in [
        None,
        Some("ApiKey d3Jvbmc6a2V5".to_string()),
        Some("Bearer abc".to_string()),
        Some("Basic Z2FwbGVzczp3cm9uZw==".to_string()),
    ] {
        let (status, answer) = Bulk {
            auth: auth.clone(),
            ..Bulk::new()
        }
        .send(&es, &body)
        .await;
        assert_eq!(status, 401, "{auth:?}: {answer}");
        assert_eq!(answer["status"], 401);
        assert_eq!(answer["error"]["type"], "security_exception");
        assert_eq!(
            answer["error"]["root_cause"][0]["type"],
            "security_exception"
        );
    }
    assert!(es.documents().is_empty());
    let basic = format!("Basic {}", basic_credentials("gapless", "secret"));
    let (status, _) = Bulk {
        auth: Some(basic),
        ..Bulk::new()
    }
    .send(&es, &body)
    .await;
    assert_eq!(status, 200);
    assert_eq!(es.documents().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_must_end_in_a_newline_may_be_gzipped_and_must_fit_max_content_length() {
    let es = Elastic::start(Settings::default().api_key(&key()).max_content_length(1000)).await;
    let line = create("a-1", event(1));
    let (status, answer) = Bulk::new().send(&es, line.trim_end()).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["type"], "illegal_argument_exception");

    let gzip = Bulk {
        gzip: true,
        ..Bulk::new()
    };
    let (status, answer) = gzip.send(&es, &line).await;
    assert_eq!((status, answer["errors"].clone()), (200, json!(false)));

    // Highly compressible: small on the wire, over the limit once decompressed.
    let big: String = (2..=20)
        .map(|s| create(&format!("a-{s}"), event(s)))
        .collect();
    assert!(big.len() > 1000);
    let (status, answer) = gzip.send(&es, &big).await;
    assert_eq!((status, answer), (413, Value::Null));
    assert_eq!(es.documents().len(), 1);

    let (status, _) = Bulk {
        content_type: "text/plain",
        ..Bulk::new()
    }
    .send(&es, &line)
    .await;
    assert_eq!(status, 406);
}

#[tokio::test(flavor = "multi_thread")]
async fn cued_items_get_429_for_their_first_attempts_and_a_long_field_refuses_text() {
    let es = cluster().await;
    es.reject_items(429, 2, |doc| matches!(doc["seq"].as_u64(), Some(2 | 4)));
    es.map_long("code");
    let mut body: String = (1..=4)
        .map(|s| create(&format!("a-{s}"), event(s)))
        .collect();
    let mut typed = event(5);
    typed["code"] = json!("not a number");
    body.push_str(&create("a-5", typed));
    let mut coerced = event(6);
    coerced["code"] = json!("404");
    body.push_str(&create("a-6", coerced));
    let statuses = |answer: &Value| -> Vec<u64> { items(answer).iter().map(|i| i.1).collect() };
    let (_, first) = Bulk::new().send(&es, &body).await;
    assert_eq!(statuses(&first), [201, 429, 201, 429, 400, 201]);
    assert_eq!(
        items(&first)[1].2.as_deref(),
        Some("es_rejected_execution_exception")
    );
    assert_eq!(
        items(&first)[4].2.as_deref(),
        Some("mapper_parsing_exception")
    );
    let (_, second) = Bulk::new().send(&es, &body).await;
    assert_eq!(statuses(&second), [409, 429, 409, 429, 400, 409]);
    let (_, third) = Bulk::new().send(&es, &body).await;
    assert_eq!(statuses(&third), [409, 201, 409, 201, 400, 409]);
    assert_eq!(es.documents().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_store_and_one_can_go_down_alone() {
    let first = cluster().await;
    let second = first.join().await;
    Bulk::new().send(&first, &create("a-1", event(1))).await;
    let (_, answer) = Bulk::new().send(&second, &create("a-1", event(1))).await;
    assert_eq!(items(&answer)[0].1, 409);
    let url = first.url();
    drop(first);
    let refused = reqwest::Client::new()
        .post(format!("{url}/_bulk"))
        .timeout(SHORT)
        .send()
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_connect()),
        "{refused:?}"
    );
    let (status, _) = Bulk::new().send(&second, &create("a-2", event(2))).await;
    assert_eq!(status, 200);
    assert_eq!(second.documents().len(), 2);
    let nodes: Vec<u16> = second.documents().iter().map(|d| d.node).collect();
    assert_eq!(nodes[1], second.port());
    assert_ne!(nodes[0], nodes[1]);
    assert_eq!(
        second
            .requests()
            .iter()
            .filter(|r| r.node == second.port())
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn whole_request_faults_store_nothing_except_an_answer_lost_after_indexing() {
    let es = cluster().await;
    es.script([Fault::Status(429), Fault::Status(503), Fault::AnswerLost]);
    let body = create("a-1", event(1));
    let (status, answer) = Bulk::new().send(&es, &body).await;
    assert_eq!(status, 429);
    assert_eq!(answer["error"]["type"], "es_rejected_execution_exception");
    let (status, _) = Bulk::new().send(&es, &body).await;
    assert_eq!(status, 503);
    assert!(es.documents().is_empty());
    let lost = reqwest::Client::new()
        .post(format!("{}/_bulk", es.url()))
        .header("content-type", "application/x-ndjson")
        .header("authorization", format!("ApiKey {}", key()))
        .body(body.clone())
        .timeout(SHORT)
        .send()
        .await;
    assert!(lost.is_err(), "{lost:?}");
    assert_eq!(es.documents().len(), 1);
    let (_, answer) = Bulk::new().send(&es, &body).await;
    assert_eq!(items(&answer)[0].1, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_or_stalled_request_stores_nothing_and_a_slow_one_is_stored_before_its_answer() {
    let es = cluster().await;
    let body = create("a-1", event(1));
    es.set_fault(Fault::Reset);
    let client = reqwest::Client::new();
    let post = |timeout| {
        client
            .post(format!("{}/_bulk", es.url()))
            .header("content-type", "application/x-ndjson")
            .header("authorization", format!("ApiKey {}", key()))
            .body(body.clone())
            .timeout(timeout)
            .send()
    };
    assert!(post(SHORT).await.is_err());
    es.set_fault(Fault::Stall);
    let stalled = post(Duration::from_millis(300)).await;
    assert!(stalled.is_err_and(|e| e.is_timeout()));
    assert!(es.documents().is_empty(), "{}", es.summary());

    es.set_fault(Fault::Slow(Duration::from_secs(2)));
    let slow = tokio::spawn(post(SHORT));
    es.wait_for_documents(1, SHORT).await;
    assert!(!slow.is_finished(), "answered before the delay");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}
