//! De-duplication by origin seq: a request sent again (same body, same Idempotency-Key and
//! continuity headers), or one overlapping seqs the relay already holds, is answered 200
//! with those events counted in `duplicates`, and they reach the platform once — also when
//! the relay was killed and restarted between the two, and when copies arrive at once. A
//! repeat is by agent id and seq: another agent's seqs are not repeats, and neither are an
//! agent's new events numbered from 1 again after its data_dir was lost.

use serde_json::Value;

use super::{start_relay, TOKEN};
use crate::harness::client::Answer;
use crate::harness::relay::{
    answer_json, continuity_headers, origin_lines, origin_messages, origins, shared_token,
    RelayClient,
};
use crate::harness::*;

const AGENT: &str = "dup-agent";
const TAG: &str = "dedup";

/// Panics unless `answer` is a 200 saying `accepted` new events and `duplicates`.
fn assert_counts(what: &str, answer: &Answer, accepted: u64, duplicates: u64) {
    assert_eq!(answer.status, 200, "{what}: {answer:?}");
    let body: Value = answer_json(what, answer);
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(accepted), Some(duplicates)),
        "{what}: (accepted, duplicates) in {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_request_is_answered_200_with_duplicates_and_delivered_once() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let mut relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);

    let first = client.post_range(AGENT, TAG, 1, 3).await;
    assert_counts("the first request for seqs 1..=3", &first, 3, 0);
    let again = client.post_range(AGENT, TAG, 1, 3).await;
    assert_counts("the same request again", &again, 0, 3);
    // Same seqs under another Idempotency-Key (a batch split otherwise after a restart of
    // the origin): 3 is held, 4 and 5 are new.
    let mut headers = continuity_headers(AGENT, 3, 5);
    headers.retain(|(k, _)| k != "idempotency-key");
    headers.push(("idempotency-key".into(), format!("{AGENT}-other-3-5")));
    let overlap = client
        .post(&headers, &origin_lines(TAG, 3, 3))
        .await
        .unwrap();
    assert_counts("seqs 3..=5, 3 already held", &overlap, 2, 1);

    assert_eq!(
        relay
            .metric(
                "gapless_source_relay_duplicate_events_total",
                &[("source", "agents")]
            )
            .await,
        Some(4.0),
        "events skipped as already held, on /metrics"
    );
    // The gauge follows the de-duplication snapshot, about once a second.
    wait_until(
        SHORT,
        "gapless_source_relay_agents 1 on /metrics",
        async || {
            relay
                .metric("gapless_source_relay_agents", &[("source", "agents")])
                .await
                == Some(1.0)
        },
    )
    .await;

    // Crash: kill -9 of the relay between a request and its repeat: its de-duplication
    // state must come back from disk (snapshot + WAL tail).
    relay.kill9();
    relay.restart().await;
    let after_kill = client.post_range(AGENT, TAG, 1, 3).await;
    assert_counts(
        "seqs 1..=3 again after kill -9 of the relay",
        &after_kill,
        0,
        3,
    );
    let after_kill = client.post_range(AGENT, TAG, 3, 3).await;
    assert_counts(
        "seqs 3..=5 again after kill -9 of the relay",
        &after_kill,
        0,
        3,
    );
    let fresh = client.post_range(AGENT, TAG, 6, 2).await;
    assert_counts("new seqs 6..=7", &fresh, 2, 0);

    // The relay's WAL is in order: once 6 and 7 arrived, everything stored before did.
    platform
        .wait_for_lines(&origin_messages(TAG, 1, 7), DELIVERY)
        .await;
    let by_origin = origins(&platform.events());
    let stream = &by_origin[AGENT];
    assert_eq!(
        stream.events.keys().copied().collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
    assert!(
        stream.stored_twice().is_empty(),
        "origin seqs the relay stored twice (origin seq, relay seqs): {:?}",
        stream.stored_twice()
    );
    // No fault between the relay and the platform in this test but the kill: at most the
    // batch in flight at that kill came twice, under the same relay seqs.
    let relay_seqs: std::collections::BTreeSet<u64> = platform
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(relay_seqs.len(), 7, "distinct relay seqs: {relay_seqs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_from_another_agent_id_is_not_a_duplicate() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let client = RelayClient::new(port).with_token(TOKEN);
    assert_counts(
        "agent one, seqs 1..=4",
        &client.post_range("one", "one", 1, 4).await,
        4,
        0,
    );
    assert_counts(
        "agent two, the same seqs",
        &client.post_range("two", "two", 1, 4).await,
        4,
        0,
    );
    let mut expected = origin_messages("one", 1, 4);
    expected.extend(origin_messages("two", 1, 4));
    platform.wait_for_lines(&expected, DELIVERY).await;
}

// Not a crash of the relay: the origin's data_dir is lost (a node re-provisioned, an
// emptyDir volume) while its agent_id is set in the config, so the new WAL numbers its
// events from 1 again under the same agent id. Those are new events, not repeats: the
// relay must not skip them as duplicates — that would be a silent loss no checker sees.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_whose_data_dir_was_lost_is_not_taken_for_a_repeat() {
    let platform = Receiver::start(Mode::Ok).await;
    let relay_port = free_port();
    let _relay = start_relay(&platform, relay_port, &shared_token(TOKEN)).await;
    let port = free_port();
    let mut origin = Agent::builder()
        .top(&super::agent_id("reborn"))
        .listening_on(port)
        .config(&format!(
            "{}{}",
            crate::harness::snippets::http_source("in", port, ""),
            crate::harness::relay::gapless_sink(
                "relay",
                &super::relay_uri(relay_port),
                &["in"],
                100,
                &shared_token(TOKEN)
            )
        ))
        .start()
        .await;
    let before = numbered_lines("before the data_dir was lost", 0, 5);
    Ingest::new(port).post_ok(&before).await;
    platform.wait_for_lines(&before, DELIVERY).await;

    origin.kill9();
    std::fs::remove_dir_all(origin.data_dir()).unwrap();
    origin.restart().await;
    let after = numbered_lines("after the data_dir was lost", 0, 5);
    Ingest::new(port).post_ok(&after).await;
    platform.wait_for_lines(&after, DELIVERY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_of_one_request_in_flight_at_once_are_stored_once() {
    const COPIES: u64 = 5;
    const EVENTS: u64 = 200;
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _relay = start_relay(&platform, port, &shared_token(TOKEN)).await;
    let answers = futures_util::future::join_all((0..COPIES).map(|_| async move {
        RelayClient::new(port)
            .with_token(TOKEN)
            .post_range("racer", "race", 1, EVENTS)
            .await
    }))
    .await;
    let (mut accepted, mut duplicates) = (0, 0);
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        let body = answer_json("a copy", a);
        accepted += body["accepted"].as_u64().unwrap();
        duplicates += body["duplicates"].as_u64().unwrap();
    }
    assert_eq!(
        (accepted, duplicates),
        (EVENTS, (COPIES - 1) * EVENTS),
        "(accepted, duplicates) over {COPIES} copies at once"
    );
    platform
        .wait_for_lines(&origin_messages("race", 1, EVENTS), DELIVERY)
        .await;
    assert!(origins(&platform.events())["racer"]
        .stored_twice()
        .is_empty());
}
