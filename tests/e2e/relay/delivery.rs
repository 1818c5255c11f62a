//! What arrives behind a relay: each origin event with `origin_agent_id`, `origin_seq`, the
//! origin's own fields in their order and the relay's own `seq`; range records where the
//! origin's sink filtered records out; the origin's gap records and heartbeats with their
//! marker; a client of the origin's http source cannot forge an origin field or a gap
//! record. `gapless verify-stream` checks each origin, and names a hole in one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{agent_id, relay_uri, start_relay, TOKEN};
use crate::harness::relay::{
    assert_answer, continuity_headers, gapless_sink, origin_lines, origin_messages, origins,
    shared_token, top_level_keys, verify_relay, RelayClient,
};
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

const LINES: usize = 2_000;

#[tokio::test(flavor = "multi_thread")]
async fn origin_events_arrive_with_origin_fields_in_order_and_the_relays_own_seq() {
    let platform = Receiver::start(Mode::Ok).await;
    let direct = Receiver::start(Mode::Ok).await;
    let relay_port = free_port();
    let relay = start_relay(&platform, relay_port, &shared_token(TOKEN)).await;
    let builder = Agent::builder().top(&agent_id("agent-one"));
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    // The same events go to the relay and straight to `direct`: what the relay forwards
    // is compared with what the origin sends.
    let _origin = builder
        .config(&format!(
            "{}{}{}",
            file_source("app", &logs.join("*.log"), ""),
            gapless_sink(
                "relay",
                &relay_uri(relay_port),
                &["app"],
                300,
                &shared_token(TOKEN)
            ),
            http_sink(&direct.url(), &["app"], 300, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("through the relay", 0, LINES);
    LogFile::create(&logs.join("app.log")).append(&lines);
    platform.wait_for_lines(&lines, DELIVERY).await;
    direct.wait_for_lines(&lines, DELIVERY).await;

    let sent: BTreeMap<u64, String> = direct
        .raw_events()
        .into_iter()
        .map(|raw| {
            let e: Value = serde_json::from_str(&raw).unwrap();
            (e["seq"].as_u64().unwrap(), raw)
        })
        .collect();
    assert_eq!(sent.len(), LINES, "the origin's seqs straight to `direct`");
    let mut relay_seqs = BTreeSet::new();
    for raw in platform.raw_events() {
        let e: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(e["origin_agent_id"], "agent-one", "{raw}");
        let origin_seq = e["origin_seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no numeric origin_seq: {raw}"));
        assert!(
            relay_seqs.insert(e["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {raw}"))),
            "a relay seq twice without a fault: {raw}"
        );
        let original = &sent[&origin_seq];
        let mut expected: Value = serde_json::from_str(original).unwrap();
        let fields = expected.as_object_mut().unwrap();
        fields.remove("seq");
        fields.insert("origin_agent_id".into(), json!("agent-one"));
        fields.insert("origin_seq".into(), json!(origin_seq));
        fields.insert("seq".into(), e["seq"].clone());
        assert_eq!(
            e, expected,
            "the relay changed the origin's event (origin sent {original})"
        );
        for field in ["message", "host", "source", "file", "timestamp"] {
            assert!(e[field].is_string(), "no {field}: {raw}");
        }
        let mut keys = vec![
            "seq".to_string(),
            "origin_agent_id".into(),
            "origin_seq".into(),
        ];
        keys.extend(top_level_keys(original).into_iter().skip(1));
        assert_eq!(
            top_level_keys(&raw),
            keys,
            "fields out of order: the relay sent {raw} for {original}"
        );
    }
    assert_eq!(
        relay_seqs,
        (1..=LINES as u64).collect(),
        "the relay's own seqs"
    );
    let relay_id = relay.status_json().await["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    for r in platform.requests() {
        assert_eq!(
            r.header("gapless-agent-id"),
            Some(relay_id.as_str()),
            "the relay's requests carry its own agent id"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    verified.assert_no_missing(&["agent-one"]);
    assert!(
        verified.text.contains(&format!(
            "origin agent-one: seqs 1..{LINES}: {LINES} delivered, 0 duplicate deliveries, 0 gap records, 0 missing ranges"
        )),
        "{verified:?}"
    );
    assert_eq!(
        verified.origin("agent-one")["delivered"],
        LINES,
        "{verified:?}"
    );
    assert_eq!(verified.json["hop"]["delivered"], LINES, "{verified:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_the_origins_http_source_cannot_forge_origin_fields_or_a_gap() {
    let platform = Receiver::start(Mode::Ok).await;
    let relay_port = free_port();
    let _relay = start_relay(&platform, relay_port, &shared_token(TOKEN)).await;
    let port = free_port();
    let _origin = Agent::builder()
        .top(&agent_id("agent-http"))
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            gapless_sink(
                "relay",
                &relay_uri(relay_port),
                &["in"],
                100,
                &shared_token(TOKEN)
            )
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let before = numbered_lines("before the forgery", 0, 3);
    ingest.post_ok(&before).await;
    let forged = r#"{"gapless":"gap","first_seq":1,"last_seq":99,"origin_agent_id":"x","origin_seq":5,"message":"forged"}"#;
    let answer = ingest
        .post(
            "application/x-ndjson",
            &[],
            format!("{forged}\n").into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let after = numbered_lines("after the forgery", 0, 3);
    ingest.post_ok(&after).await;
    let mut expected = before.clone();
    expected.push("forged".into());
    expected.extend(after);
    platform.wait_for_lines(&expected, DELIVERY).await;

    let events = platform.events();
    let forged_event = events
        .iter()
        .find(|e| e["message"] == "forged")
        .unwrap()
        .clone();
    assert_eq!(
        forged_event["origin_agent_id"], "agent-http",
        "{forged_event}"
    );
    assert_eq!(forged_event["origin_seq"], 4, "{forged_event}");
    assert!(
        forged_event.get("gapless").is_none(),
        "a client's gapless at the top level: {forged_event}"
    );
    for (field, value) in [
        ("gapless", json!("gap")),
        ("origin_agent_id", json!("x")),
        ("origin_seq", json!(5)),
    ] {
        assert_eq!(
            forged_event["client_fields"][field], value,
            "the client's {field} should be under client_fields: {forged_event}"
        );
    }
    let by_origin = origins(&events);
    assert_eq!(
        by_origin.keys().collect::<Vec<_>>(),
        ["agent-http"],
        "origins seen"
    );
    assert!(by_origin["agent-http"].gaps.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    verified.assert_no_missing(&["agent-http"]);
    let origin = verified.origin("agent-http");
    assert_eq!(origin["gaps"], json!([]), "{verified:?}");
    assert_eq!(origin["last_seq"], 7, "{verified:?}");
    assert_eq!(origin["delivered"], 7, "{verified:?}");
    assert!(verified.json["origins"].get("x").is_none(), "{verified:?}");
    assert!(
        verified
            .text
            .contains("origin agent-http: seqs 1..7: 7 delivered, 0 duplicate deliveries, 0 gap records, 0 missing ranges"),
        "{verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_sink_filtering_out_a_source_leaves_range_records_and_no_missing_range() {
    const ROUNDS: usize = 6;
    const PER_POST: usize = 10;
    let platform = Receiver::start(Mode::Ok).await;
    let relay_port = free_port();
    let _relay = start_relay(&platform, relay_port, &shared_token(TOKEN)).await;
    let (keep_port, skip_port) = (free_port(), free_port());
    let _origin = Agent::builder()
        .top(&agent_id("agent-filter"))
        .listening_on(keep_port)
        .listening_on(skip_port)
        .config(&format!(
            "{}{}{}",
            http_source("keep", keep_port, ""),
            http_source("skip", skip_port, ""),
            gapless_sink(
                "relay",
                &relay_uri(relay_port),
                &["keep"],
                100,
                &shared_token(TOKEN)
            )
        ))
        .start()
        .await;
    // Skipped records first and between kept ones: seqs 1..10 skipped, 11..20 kept, …
    let (keep, skip) = (Ingest::new(keep_port), Ingest::new(skip_port));
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        skip.post_ok(&numbered_lines(&format!("skipped {round}"), 0, PER_POST))
            .await;
        let lines = numbered_lines(&format!("kept {round}"), 0, PER_POST);
        keep.post_ok(&lines).await;
        kept.extend(lines);
    }
    platform.wait_for_lines(&kept, DELIVERY).await;
    let last = (2 * ROUNDS * PER_POST) as u64;
    let events = platform.events();
    assert!(
        !events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("skipped"))),
        "a filtered-out event came through the relay"
    );
    let by_origin = origins(&events);
    let stream = &by_origin["agent-filter"];
    assert!(
        !stream.ranges.is_empty(),
        "no range record for the filtered seqs; events: {events:?}"
    );
    assert_eq!(stream.holes(last), vec![], "origin seqs unaccounted for");
    for e in events.iter().filter(|e| e["gapless"] == "range") {
        assert_eq!(e["origin_agent_id"], "agent-filter", "{e}");
        assert!(
            e.get("origin_seq").is_none() || e["origin_seq"].is_u64(),
            "{e}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    verified.assert_no_missing(&["agent-filter"]);
    assert_eq!(
        verified.origin("agent-filter")["last_seq"],
        last,
        "{verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_gap_records_and_heartbeats_keep_their_marker_and_explain_origin_holes() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);
    // What an origin sends after damage in its WAL: seqs 2..=4 lost, said by its gap
    // record (seq 5), then a heartbeat (seq 6) and an event (seq 7).
    let lines = vec![
        origin_lines("gap", 1, 1).remove(0),
        r#"{"seq":5,"gapless":"gap","reason":"wal_corrupt","first_seq":2,"last_seq":4,"events":3,"host":"origin-host","timestamp":"2026-11-30T12:00:00.000Z"}"#.to_string(),
        r#"{"seq":6,"gapless":"heartbeat","message":"gapless heartbeat","agent_id":"gap-agent","host":"origin-host"}"#.to_string(),
        origin_lines("gap", 7, 1).remove(0),
    ];
    let answer = client
        .post(&continuity_headers("gap-agent", 1, 7), &lines)
        .await
        .unwrap();
    assert_answer(
        "an origin's batch with a gap record and a heartbeat",
        &answer,
        200,
    );
    platform
        .wait_for_lines(&origin_messages("gap", 7, 1), DELIVERY)
        .await;
    let events = platform.events();
    let gap = events
        .iter()
        .find(|e| e["gapless"] == "gap")
        .unwrap_or_else(|| panic!("the origin's gap record did not arrive: {events:?}"));
    assert_eq!(gap["origin_agent_id"], "gap-agent", "{gap}");
    assert_eq!(
        (gap["first_seq"].as_u64(), gap["last_seq"].as_u64()),
        (Some(2), Some(4)),
        "{gap}"
    );
    assert_eq!(gap["reason"], "wal_corrupt", "{gap}");
    let heartbeat = events
        .iter()
        .find(|e| e["gapless"] == "heartbeat")
        .unwrap_or_else(|| panic!("the origin's heartbeat did not arrive: {events:?}"));
    assert_eq!(heartbeat["origin_agent_id"], "gap-agent", "{heartbeat}");
    assert_eq!(origins(&events)["gap-agent"].holes(7), vec![]);

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    verified.assert_no_missing(&["gap-agent"]);
    assert!(
        verified
            .text
            .lines()
            .any(|l| l.starts_with("origin gap-agent: seqs 1..7:") && l.contains(" 1 gap records")),
        "{verified:?}"
    );
    assert_eq!(
        verified.json["hop"]["missing"],
        json!([]),
        "the origin's gap record must not make a hole in the relay's own seqs: {verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_stream_names_a_hole_in_an_origins_seqs() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);
    // seqs 4..=6 never sent, and no gap record for them.
    for (first, count) in [(1, 3), (7, 3)] {
        let answer = client.post_range("holey", "holey", first, count).await;
        assert_answer("a batch of agent holey", &answer, 200);
    }
    let answer = client.post_range("whole", "whole", 1, 5).await;
    assert_answer("a batch of agent whole", &answer, 200);
    let mut expected = origin_messages("holey", 7, 3);
    expected.extend(origin_messages("whole", 1, 5));
    platform.wait_for_lines(&expected, DELIVERY).await;

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
    assert_eq!(verified.json["hop"]["missing"], json!([]), "{verified:?}");
    assert_eq!(
        verified.origin("holey")["missing"],
        json!([[4, 6]]),
        "{verified:?}"
    );
    assert_eq!(
        verified.origin("whole")["missing"],
        json!([]),
        "{verified:?}"
    );
    let text: Vec<&str> = verified.text.lines().collect();
    let at = text
        .iter()
        .position(|l| l.starts_with("origin holey: seqs 1..9: 6 delivered, 0 duplicate deliveries, 0 gap records, 1 missing ranges"))
        .unwrap_or_else(|| panic!("no summary line for origin holey: {verified:?}"));
    assert!(
        text[at + 1..]
            .iter()
            .take_while(|l| l.starts_with(' '))
            .any(|l| l.trim() == "MISSING without a gap record: seqs 4..=6"),
        "the hole is not named under origin holey: {verified:?}"
    );
    assert!(
        verified
            .text
            .contains("origin whole: seqs 1..5: 5 delivered, 0 duplicate deliveries, 0 gap records, 0 missing ranges"),
        "{verified:?}"
    );
}
