//! `gapless verify-stream` behind a relay, per origin agent: the origin's gap records and
//! heartbeats keep their marker and a gap record explains a hole (when it is the origin's:
//! never naming seqs after its own); a hole without one is named under its origin; a
//! client of the origin's http source can forge neither origin fields nor a gap record, and
//! a client of the relay's own http source cannot forge a range record.

use serde_json::json;

use super::{agent_id, relay_uri, start_relay, TOKEN};
use crate::harness::relay::{
    assert_answer, continuity_headers, gapless_sink, origin_lines, origin_messages, origins,
    shared_token, verify_relay, RelayClient,
};
use crate::harness::snippets::http_source;
use crate::harness::*;

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
    assert_eq!(
        verified.json["hop"]["gaps"],
        json!([]),
        "the origin's gap record is not a gap record of the relay's: {verified:?}"
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

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_gap_record_naming_seqs_after_its_own_explains_no_hole() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);
    // The rule the hop check applies, per origin: a gap record never names seqs after its
    // own. This one (origin seq 2) claims 3..=9, which then never come.
    let lines = vec![
        origin_lines("early", 1, 1).remove(0),
        r#"{"seq":2,"gapless":"gap","reason":"wal_corrupt","first_seq":3,"last_seq":9,"host":"origin-host"}"#.to_string(),
    ];
    let answer = client
        .post(&continuity_headers("early-gap", 1, 2), &lines)
        .await
        .unwrap();
    assert_answer("a batch with a gap record naming later seqs", &answer, 200);
    let answer = client.post_range("early-gap", "early", 10, 1).await;
    assert_answer("seq 10", &answer, 200);
    platform
        .wait_for_lines(&origin_messages("early", 10, 1), DELIVERY)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
    assert_eq!(
        verified.origin("early-gap")["missing"],
        json!([[3, 9]]),
        "{verified:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_the_relays_own_http_source_cannot_forge_a_range_record() {
    let platform = Receiver::start(Mode::Ok).await;
    let (port, http_port) = (free_port(), free_port());
    // A relay that also takes plain clients.
    let _relay = Agent::builder()
        .listening_on(port)
        .listening_on(http_port)
        .config(&format!(
            "{}{}{}",
            crate::harness::relay::gapless_source("agents", port, &shared_token(TOKEN)),
            http_source("apps", http_port, ""),
            crate::harness::snippets::http_sink(&platform.url(), &["agents", "apps"], 200, "")
        ))
        .start()
        .await;
    let client = RelayClient::new(port).with_token(TOKEN);
    for first in [1, 10] {
        let answer = client.post_range("victim", "victim", first, 3).await;
        assert_answer("a batch of agent victim", &answer, 200);
    }
    let forged = r#"{"gapless":"range","origin_agent_id":"victim","first_seq":1,"last_seq":1000,"message":"forged range"}"#;
    let answer = Ingest::new(http_port)
        .post(
            "application/x-ndjson",
            &[],
            format!("{forged}\n").into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut expected = origin_messages("victim", 10, 3);
    expected.push("forged range".into());
    platform.wait_for_lines(&expected, DELIVERY).await;
    let events = platform.events();
    let range = events
        .iter()
        .find(|e| e["message"] == "forged range")
        .unwrap();
    assert!(
        range.get("gapless").is_none() && range.get("origin_agent_id").is_none(),
        "a client's gapless/origin_agent_id at the top level: {range}"
    );

    let dir = tempfile::tempdir().unwrap();
    let verified = verify_relay(&platform, dir.path());
    assert_eq!(
        verified.origin("victim")["missing"],
        json!([[4, 9]]),
        "a client's range record hid a hole: {verified:?}"
    );
    assert_eq!(verified.status.code(), Some(1), "{verified:?}");
}
