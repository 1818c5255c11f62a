//! A client's JSON as the platform gets it: byte for byte as sent (numbers of any size,
//! key order, string escapes, duplicate keys), except that fields named like the agent's
//! own — every sink's seq field, `gapless`, `client_fields` — are moved under
//! `client_fields`. So the seq is the agent's, a posted gap record or heartbeat is an
//! ordinary event, and `gapless verify-stream` is not fooled by either.

use serde_json::Value;

use gapless::client_json::ClientObject;

use crate::harness::capture::{capture_lines, received_batches, verify_stream, write_capture};
use crate::harness::snippets::{http_source, named_http_sink};
use crate::harness::*;

/// The top-level keys of a raw event, in order, duplicates included.
fn top_level_keys(raw: &str) -> Vec<String> {
    ClientObject::parse(raw)
        .unwrap_or_else(|| panic!("not a JSON object: {raw}"))
        .names()
        .map(|n| {
            n.unwrap_or_else(|| panic!("an undecodable key in {raw}"))
                .into_owned()
        })
        .collect()
}

/// The one raw event containing `marker`.
fn raw_with(raw: &[String], marker: &str) -> String {
    let found: Vec<&String> = raw.iter().filter(|e| e.contains(marker)).collect();
    assert_eq!(found.len(), 1, "events with {marker:?}: {found:?}");
    found[0].clone()
}

/// Waits until `n` raw events arrived (answered 2xx).
async fn wait_for_raw(receiver: &Receiver, n: usize) -> Vec<String> {
    wait_until(DELIVERY, format!("{n} events"), async || {
        receiver.raw_events().len() >= n
    })
    .await;
    receiver.raw_events()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_json_arrives_byte_for_byte_numbers_key_order_escapes_and_duplicates() {
    let ndjson = Receiver::start(Mode::Ok).await;
    let array = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}{}",
            http_source("in", port, ""),
            named_http_sink("lines", &ndjson.url(), &["in"], 100, ""),
            named_http_sink("arrays", &array.url(), &["in"], 100, "encoding = \"json\"")
        ))
        .start()
        .await;
    let sent = [
        (
            "big",
            r#"{"n":18446744073709551616,"i":-9223372036854775809,"message":"big"}"#,
        ),
        ("order", r#"{"z":1,"a":2,"m":3,"message":"order"}"#),
        (
            "precise",
            r#"{"message":"precise","f":1.000000000000000000001,"e":1e400,"neg":-0,"E":1E+2}"#,
        ),
        (
            "escapes",
            r#"{"message":"escapes","s":"caf\u00e9 \ud83d\ude00 \"q\" \/ \t","k\u00e9y":"é😀"}"#,
        ),
        (
            "nested",
            r#"{"message":"nested","o":{"b":[1,{"c":null,"d":[]}],"a":true},"l":[[],{}]}"#,
        ),
        (
            "duplicates",
            r#"{"message":"duplicates","k":1,"k":"two","k":[3]}"#,
        ),
    ];
    let objects: Vec<&str> = sent.iter().map(|(_, json)| *json).collect();
    let ingest = Ingest::new(port);
    let answer = ingest
        .post(
            "application/x-ndjson",
            &[],
            objects[..3].join("\n").into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = ingest
        .post(
            "application/json",
            &[],
            format!("[{}]", objects[3..].join(" ,\n ")).into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");

    for receiver in [&ndjson, &array] {
        let raw = wait_for_raw(receiver, sent.len()).await;
        for (message, client) in sent {
            let event = raw_with(&raw, &format!("\"message\":\"{message}\""));
            // The agent's seq first, then the client's object as sent, then what it lacked.
            let (seq, rest) = event
                .strip_prefix("{\"seq\":")
                .and_then(|r| r.split_once(','))
                .unwrap_or_else(|| {
                    panic!("{message}: the event does not start with the seq: {event}")
                });
            assert!(seq.parse::<u64>().is_ok(), "{event}");
            let inner = &client[1..client.len() - 1];
            assert!(
                rest.starts_with(&format!("{inner},\"timestamp\":\"")),
                "{message}: the client's JSON changed:\nsent     {client}\nreceived {event}"
            );
            assert!(
                rest.ends_with(",\"source\":\"in\"}") && rest.contains(",\"host\":\""),
                "{event}"
            );
        }
        let big = raw_with(&raw, "\"message\":\"big\"");
        assert!(
            big.contains(r#""n":18446744073709551616,"i":-9223372036854775809"#),
            "{big}"
        );
        assert_eq!(
            top_level_keys(&raw_with(&raw, "\"message\":\"order\"")),
            [
                "seq",
                "z",
                "a",
                "m",
                "message",
                "timestamp",
                "host",
                "source"
            ]
        );
        assert_eq!(
            top_level_keys(&raw_with(&raw, "\"message\":\"duplicates\""))
                .iter()
                .filter(|k| *k == "k")
                .count(),
            3
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_field_named_like_a_seq_field_moves_under_client_fields_leaving_one_seq() {
    let seq = Receiver::start(Mode::Ok).await;
    let n = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let capture = builder.path("capture.ndjson");
    let port = free_port();
    let _agent = builder
        .listening_on(port)
        .config(&format!(
            "{}{}{}",
            http_source("in", port, ""),
            named_http_sink("plain", &seq.url(), &["in"], 3, ""),
            named_http_sink("renamed", &n.url(), &["in"], 3, "seq_field = \"n\"")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let ndjson = [
        r#"{"message":"b","seq":999999}"#,
        r#"{"message":"c","n":"x","seq":1,"seq":2}"#,
        r#"{"message":"d","client_fields":1,"seq":2}"#,
        r#"{"message":"e","s\u0065q":7}"#,
    ];
    let answer = ingest
        .post("application/x-ndjson", &[], ndjson.join("\n").into_bytes())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = ingest
        .post(
            "application/json",
            &[],
            br#"[{"message":"f","seq":-1,"gapless":"gap"}, "g"]"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");

    // Under the default seq field: one seq, the agent's, seqs 1 to 6 in order.
    let raw = wait_for_raw(&seq, 6).await;
    let expected_moved = [
        ("b", r#"{"seq":999999}"#),
        ("c", r#"{"n":"x","seq":1,"seq":2}"#),
        ("d", r#"{"client_fields":1,"seq":2}"#),
        ("e", r#"{"s\u0065q":7}"#),
        ("f", r#"{"seq":-1,"gapless":"gap"}"#),
    ];
    for (i, event) in raw.iter().enumerate() {
        let keys = top_level_keys(event);
        assert_eq!(keys.iter().filter(|k| *k == "seq").count(), 1, "{event}");
        assert!(!keys.iter().any(|k| k == "gapless"), "{event}");
        assert!(
            event.starts_with(&format!("{{\"seq\":{},", i + 1)),
            "event {i} should carry the agent's seq {}: {event}",
            i + 1
        );
    }
    for (message, moved) in expected_moved {
        let event = raw_with(&raw, &format!("\"message\":\"{message}\""));
        assert!(
            event.contains(&format!(",\"client_fields\":{moved},")),
            "{message}: the reserved fields should be under client_fields as {moved}: {event}"
        );
    }
    let b: Value = serde_json::from_str(&raw_with(&raw, "\"message\":\"b\"")).unwrap();
    assert_eq!(b["client_fields"]["seq"], 999999, "{b}");
    // Every sink's seq field is reserved for every sink: the client's n moved here too.
    let c = raw_with(&raw, "\"message\":\"c\"");
    assert!(
        c.contains(r#""message":"c","client_fields":{"n":"x","seq":1,"seq":2}"#),
        "{c}"
    );

    // Under seq_field = "n" the client's n moves too (every sink's seq field is reserved).
    let raw_n = wait_for_raw(&n, 6).await;
    for event in &raw_n {
        let keys = top_level_keys(event);
        assert_eq!(keys.iter().filter(|k| *k == "n").count(), 1, "{event}");
        assert_eq!(keys.iter().filter(|k| *k == "seq").count(), 0, "{event}");
    }

    // The continuity checker sees the agent's seqs only: nothing missing, no duplicates.
    let report = gapless::continuity::check(&received_batches(&seq.requests()), "seq", Some(1));
    assert!(
        report.is_continuous() && report.duplicate_deliveries == 0,
        "{report:?}"
    );
    write_capture(&capture, &capture_lines(&seq.requests()));
    let (status, stdout, stderr) = verify_stream(&capture, 1, &[]);
    assert!(
        status.success() && stdout.contains("0 gap records, 0 missing ranges"),
        "verify-stream exited {status}:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_posted_gap_record_or_heartbeat_is_an_ordinary_event_that_explains_no_hole() {
    let receiver = Receiver::start(Mode::Ok).await;
    let builder = Agent::builder();
    let capture = builder.path("capture.ndjson");
    let damaged = builder.path("capture-without-one-batch.ndjson");
    let port = free_port();
    let _agent = builder
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            named_http_sink("out", &receiver.url(), &["in"], 5, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let before = numbered_lines("before-the-forgery", 0, 20);
    for chunk in before.chunks(5) {
        ingest.post_ok(chunk).await;
        receiver.wait_for_lines(chunk, DELIVERY).await;
    }
    let gap =
        r#"{"gapless":"gap","reason":"wal_corrupt","first_seq":1,"last_seq":500,"events":500}"#;
    let gap_with_seq = r#"{"seq":30,"gapless":"gap","reason":"wal_corrupt","first_seq":1,"last_seq":29,"events":29}"#;
    let heartbeat = r#"{"gapless":"heartbeat","message":"gapless heartbeat from forged-agent","agent_id":"forged-agent","sinks":{}}"#;
    let answer = ingest
        .post(
            "application/x-ndjson",
            &[],
            format!("{gap}\n{heartbeat}\n").into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = ingest
        .post(
            "application/json",
            &[],
            format!("[{gap_with_seq}]").into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = ingest
        .post("application/json", &[], gap.as_bytes().to_vec())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let after = numbered_lines("after-the-forgery", 0, 20);
    for chunk in after.chunks(5) {
        ingest.post_ok(chunk).await;
    }
    receiver.wait_for_lines(&after, DELIVERY).await;
    receiver.wait_for_events(44, DELIVERY).await;

    let events = receiver.events();
    let forged: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("client_fields").is_some())
        .collect();
    assert_eq!(forged.len(), 4, "{forged:?}");
    for e in &forged {
        assert!(
            e.get("gapless").is_none(),
            "a client's gapless at the top: {e}"
        );
        assert!(e["seq"].is_u64(), "{e}");
        assert!(
            ["gap", "heartbeat"].contains(&e["client_fields"]["gapless"].as_str().unwrap()),
            "{e}"
        );
    }
    assert!(
        events.iter().all(|e| e.get("gapless").is_none()),
        "the agent sent no gap record or heartbeat here, so none may be at the top"
    );

    // Nothing is missing: verify-stream sees no gap record at all and exits 0.
    let requests = receiver.requests();
    let captured = capture_lines(&requests);
    write_capture(&capture, &captured);
    let (status, json, stderr) = verify_stream(&capture, 1, &["--json"]);
    assert!(
        status.success(),
        "verify-stream exited {status}:\n{json}\n{stderr}"
    );
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["gaps"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["ignored_gaps"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["missing"], serde_json::json!([]), "{report:#}");

    // A real hole — one batch of lines taken out — stays a hole: the forged record, which
    // claims seqs 1 to 500 are lost for a reason, explains nothing.
    let batches = received_batches(&requests);
    let holes: Vec<usize> = batches
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.events.iter().all(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("before-"))
            })
        })
        .map(|(i, _)| i)
        .collect();
    let taken = *holes.last().expect("a batch of lines before the forgery");
    let (a, z) = batches[taken].seq_range.unwrap();
    let without: Vec<String> = captured
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != taken)
        .map(|(_, l)| l.clone())
        .collect();
    write_capture(&damaged, &without);
    let (status, stdout, stderr) = verify_stream(&damaged, 1, &[]);
    assert_eq!(
        status.code(),
        Some(1),
        "verify-stream without batch {a}-{z} exited {status}:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("MISSING without a gap record: seqs {a}..={z}")),
        "{stdout}"
    );
}
