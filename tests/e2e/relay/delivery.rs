//! What arrives behind a relay: each origin event with `origin_agent_id`, `origin_seq`, the
//! origin's own fields in their order and the relay's own `seq`; range records where the
//! origin's sink filtered records out; and what the gapless sink itself posts (the http
//! sink's body, with the continuity headers).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{agent_id, relay_uri, start_relay, TOKEN};
use crate::harness::relay::{gapless_sink, origins, shared_token, top_level_keys, verify_relay};
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
        // The origin's WAL (its Gapless-Wal-Id): the same on every event of one WAL.
        let wal_id = e["origin_wal_id"]
            .as_str()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| panic!("no origin_wal_id: {raw}"));
        fields.insert("origin_wal_id".into(), json!(wal_id));
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
            "origin_wal_id".into(),
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
async fn the_gapless_sink_posts_what_the_http_sink_would_with_the_continuity_headers() {
    // The gapless sink pointed at a plain receiver, beside an http sink: same body.
    let as_relay = Receiver::start(Mode::Ok).await;
    let as_http = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _origin = Agent::builder()
        .top(&agent_id("sink-shape"))
        .listening_on(port)
        .config(&format!(
            "{}{}{}",
            http_source("in", port, ""),
            gapless_sink("relay", &as_relay.url(), &["in"], 50, &shared_token(TOKEN)),
            http_sink(&as_http.url(), &["in"], 50, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("sink shape", 0, 120);
    Ingest::new(port).post_ok(&lines).await;
    as_relay.wait_for_lines(&lines, DELIVERY).await;
    as_http.wait_for_lines(&lines, DELIVERY).await;

    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    for raw in as_http.raw_events() {
        let e: Value = serde_json::from_str(&raw).unwrap();
        by_seq.insert(e["seq"].as_u64().unwrap(), raw);
    }
    for r in as_relay.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.header("gapless-agent-id"),
            Some("sink-shape"),
            "{:?}",
            r.headers
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{:?}",
            r.headers
        );
        assert_eq!(
            r.header("content-encoding"),
            Some("gzip"),
            "{:?}",
            r.headers
        );
        let (first, last) = r
            .seq_range()
            .unwrap_or_else(|| panic!("no gapless-seq-range: {:?}", r.headers));
        assert_eq!(
            r.header("gapless-prev-seq"),
            Some((first - 1).to_string().as_str()),
            "{:?}",
            r.headers
        );
        let key = r
            .header("idempotency-key")
            .unwrap_or_else(|| panic!("no idempotency-key: {:?}", r.headers));
        assert!(
            key.starts_with("sink-shape-") && key.ends_with(&format!("-{first}-{last}")),
            "idempotency-key {key:?} for {first}-{last}"
        );
        for raw in &r.raw_events {
            assert!(raw.starts_with("{\"seq\":"), "seq is not first: {raw}");
            let seq = serde_json::from_str::<Value>(raw).unwrap()["seq"]
                .as_u64()
                .unwrap();
            assert!(
                (first..=last).contains(&seq),
                "seq {seq} outside {first}-{last}"
            );
            assert_eq!(
                raw, &by_seq[&seq],
                "the gapless sink's line differs from the http sink's"
            );
        }
    }
}
