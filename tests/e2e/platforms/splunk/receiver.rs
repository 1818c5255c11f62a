//! The collector itself, driven by hand with `reqwest`: it must answer as HEC documents,
//! or the agent tests prove nothing.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::platforms::splunk::{AckAfter, Cue, Hec, Partial};
use crate::harness::{wait_until, SHORT};

const TOKEN: &str = "0f3c2a9e-8c1b-4f7e-9d4a-6b5e2c1d0a9f";
const CHANNEL: &str = "7c4b9f0e-2d3a-4e5f-8a6b-1c2d3e4f5a6b";

/// POSTs `body` to `path` with these headers; returns the status, `Retry-After` and the
/// answer's JSON.
async fn post(
    hec: &Hec,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", hec.endpoint()))
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("the HEC answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.expect("an answer");
    let answer = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, retry_after, answer)
}

const AUTH: (&str, &str) = (
    "authorization",
    "Splunk 0f3c2a9e-8c1b-4f7e-9d4a-6b5e2c1d0a9f",
);

async fn send(hec: &Hec, body: &str) -> (u16, Value) {
    let (status, _, answer) =
        post(hec, "/services/collector/event", &[AUTH], body.to_string()).await;
    (status, answer)
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn hec_indexes_concatenated_gzipped_events_with_their_indexed_fields() {
    let hec = Hec::builder(TOKEN).start().await;
    let body = concat!(
        r#"{"time":1795704849.650123,"host":"vm1","source":"app","sourcetype":"_json","index":"main","event":{"message":"one"},"fields":{"seq":"1","agent_id":"a"}}"#,
        r#"{"time":"1795704849.7","event":"two"}"#,
        "\n \t",
        r#"{"event":{"message":"three"},"fields":{"tags":["x","y"]}}"#,
        "\n"
    );
    let (status, _, answer) = post(
        &hec,
        "/services/collector/event",
        &[AUTH, ("content-encoding", "gzip")],
        gzip(body),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"text":"Success","code":0})));
    let indexed = hec.indexed();
    assert_eq!(indexed.len(), 3, "{indexed:?}");
    assert_eq!(indexed[0].time, Some(1795704849.650123));
    assert_eq!(indexed[0].host.as_deref(), Some("vm1"));
    assert_eq!(indexed[0].source.as_deref(), Some("app"));
    assert_eq!(indexed[0].sourcetype.as_deref(), Some("_json"));
    assert_eq!(indexed[0].index.as_deref(), Some("main"));
    assert_eq!(indexed[0].fields["seq"], "1");
    assert_eq!(indexed[1].time, Some(1795704849.7));
    assert_eq!(indexed[1].event, "two");
    assert_eq!(indexed[2].fields["tags"], json!(["x", "y"]));
}

#[tokio::test]
async fn hec_refuses_a_missing_a_malformed_and_an_unknown_token() {
    let hec = Hec::builder(TOKEN).start().await;
    let event = r#"{"event":"x"}"#;
    let path = "/services/collector/event";
    for (headers, want) in [
        (vec![], (401, json!({"text":"Token is required","code":2}))),
        (
            vec![("authorization", "Splunk ")],
            (401, json!({"text":"Token is required","code":2})),
        ),
        (
            vec![(
                "authorization",
                "Bearer 0f3c2a9e-8c1b-4f7e-9d4a-6b5e2c1d0a9f",
            )],
            (401, json!({"text":"Invalid authorization","code":3})),
        ),
        (
            vec![("authorization", "Splunk not-the-token")],
            (403, json!({"text":"Invalid token","code":4})),
        ),
    ] {
        let (status, _, answer) = post(&hec, path, &headers, event).await;
        assert_eq!((status, answer), want, "with headers {headers:?}");
    }
    assert!(hec.indexed().is_empty());
}

#[tokio::test]
async fn hec_rejects_a_request_naming_the_first_bad_event() {
    let hec = Hec::builder(TOKEN).allowed_indexes(&["main"]).start().await;
    let bad = |code: u64, text: &str, n: usize| {
        (
            400,
            json!({"text": text, "code": code, "invalid-event-number": n}),
        )
    };
    let cases = [
        (
            r#"{"event":"a"}{"host":"h"}"#,
            bad(12, "Event field is required", 1),
        ),
        (
            r#"{"event":"a"}{"event":""}"#,
            bad(13, "Event field cannot be blank", 1),
        ),
        (
            r#"{"event":null}"#,
            bad(13, "Event field cannot be blank", 0),
        ),
        (
            r#"{"event":"a"} {"event":"b"} {"event": oops}"#,
            bad(6, "Invalid data format", 2),
        ),
        (r#"["not","an","object"]"#, bad(6, "Invalid data format", 0)),
        (
            r#"{"event":"a","time":"soon"}"#,
            bad(6, "Invalid data format", 0),
        ),
        (
            r#"{"event":"a"}{"event":"b","index":"secret"}"#,
            bad(7, "Incorrect index", 1),
        ),
        (
            r#"{"event":"a","fields":{"n":{"deep":1}}}"#,
            bad(15, "Error in handling indexed fields", 0),
        ),
        ("  \n", (400, json!({"text":"No data","code":5}))),
    ];
    for (body, want) in cases {
        assert_eq!(send(&hec, body).await, want, "for {body}");
    }
}

#[tokio::test]
async fn events_before_a_rejected_one_are_indexed_or_not_as_chosen() {
    let body =
        r#"{"event":{"message":"a"}}{"event":{"message":"b POISON"}}{"event":{"message":"c"}}"#;
    for (partial, kept) in [(Partial::Prefix, vec!["a"]), (Partial::Nothing, vec![])] {
        let hec = Hec::builder(TOKEN).partial(partial).start().await;
        hec.set_poison(Some("POISON"));
        let (status, answer) = send(&hec, body).await;
        assert_eq!(status, 400);
        assert_eq!(answer["invalid-event-number"], 1, "{answer}");
        let messages: Vec<Value> = hec.events().iter().map(|e| e["message"].clone()).collect();
        assert_eq!(messages, kept, "with {partial:?}");
    }
}

#[tokio::test]
async fn hec_is_busy_or_fails_on_cue() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.script([
        Cue::Busy {
            retry_after_secs: Some(3),
        },
        Cue::Busy {
            retry_after_secs: None,
        },
        Cue::InternalError,
    ]);
    let path = "/services/collector/event";
    let event = r#"{"event":"x"}"#;
    let busy = json!({"text":"Server is busy","code":9});
    assert_eq!(
        post(&hec, path, &[AUTH], event).await,
        (503, Some("3".into()), busy.clone())
    );
    assert_eq!(post(&hec, path, &[AUTH], event).await, (503, None, busy));
    assert_eq!(
        post(&hec, path, &[AUTH], event).await,
        (500, None, json!({"text":"Internal server error","code":8}))
    );
    assert!(hec.indexed().is_empty());
    hec.set_cue(Cue::InternalError);
    hec.script([Cue::Normal]);
    assert_eq!(send(&hec, event).await.0, 200, "a scripted cue goes first");
    assert_eq!(send(&hec, event).await.0, 500);
    hec.set_cue(Cue::Normal);
    assert_eq!(send(&hec, event).await.0, 200);
    assert_eq!(hec.indexed().len(), 2);
    let requests = hec.requests();
    assert!(requests.windows(2).all(|w| w[0].arrived <= w[1].arrived));
    let seen: Vec<(u16, Option<u64>)> = requests
        .iter()
        .filter(|r| r.is_event())
        .map(|r| (r.status, r.code()))
        .collect();
    assert_eq!(
        seen,
        [
            (503, Some(9)),
            (503, Some(9)),
            (500, Some(8)),
            (200, Some(0)),
            (500, Some(8)),
            (200, Some(0))
        ],
        "{}",
        hec.summary()
    );
}

#[tokio::test]
async fn with_acknowledgement_a_channel_is_required_and_each_ack_reads_true_once() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    let event = r#"{"event":"x"}"#;
    let path = "/services/collector/event";
    assert_eq!(
        send(&hec, event).await,
        (400, json!({"text":"Data channel is missing","code":10}))
    );
    let bad_channel = ("x-splunk-request-channel", "not-a-guid");
    assert_eq!(
        post(&hec, path, &[AUTH, bad_channel], event).await.2,
        json!({"text":"Invalid data channel","code":11})
    );
    let channel = ("x-splunk-request-channel", CHANNEL);
    let first = post(&hec, path, &[AUTH, channel], event).await;
    assert_eq!(first.2, json!({"text":"Success","code":0,"ackId":0}));
    let last = hec.requests().pop().unwrap();
    assert_eq!(last.headers["x-splunk-request-channel"], CHANNEL);
    let query_path = format!("{path}?channel={CHANNEL}");
    assert_eq!(post(&hec, &query_path, &[AUTH], event).await.2["ackId"], 1);
    let other = (
        "x-splunk-request-channel",
        "00000000-0000-4000-8000-000000000001",
    );
    assert_eq!(
        post(&hec, path, &[AUTH, other], event).await.2["ackId"],
        0,
        "ackIds are per channel"
    );

    let ack_path = format!("/services/collector/ack?channel={CHANNEL}");
    let query = r#"{"acks":[0,1,7]}"#;
    let (status, _, acks) = post(&hec, &ack_path, &[AUTH], query).await;
    assert_eq!(
        (status, acks),
        (200, json!({"acks":{"0":true,"1":true,"7":false}}))
    );
    let (_, _, again) = post(&hec, &ack_path, &[AUTH], query).await;
    assert_eq!(
        again,
        json!({"acks":{"0":false,"1":false,"7":false}}),
        "read-once"
    );
    assert_eq!(
        post(&hec, "/services/collector/ack", &[AUTH], query)
            .await
            .2,
        json!({"text":"Data channel is missing","code":10})
    );
}

#[tokio::test]
async fn acks_come_true_after_the_delay_or_never_and_only_then_are_the_events_indexed() {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(true)
        .start()
        .await;
    let channel = ("x-splunk-request-channel", CHANNEL);
    let path = "/services/collector/event";
    hec.set_ack_after(AckAfter::Delay(Duration::from_millis(300)));
    assert_eq!(
        post(&hec, path, &[AUTH, channel], r#"{"event":"late"}"#)
            .await
            .2["ackId"],
        0
    );
    hec.set_ack_after(AckAfter::Never);
    assert_eq!(
        post(&hec, path, &[AUTH, channel], r#"{"event":"lost"}"#)
            .await
            .2["ackId"],
        1
    );

    let ack_path = format!("/services/collector/ack?channel={CHANNEL}");
    let query = r#"{"acks":[0,1]}"#;
    assert_eq!(
        post(&hec, &ack_path, &[AUTH], query).await.2,
        json!({"acks":{"0":false,"1":false}})
    );
    assert!(
        hec.indexed().is_empty(),
        "nothing is indexed before its ack is due"
    );
    wait_until(SHORT, "ack 0 to come true", async || {
        post(&hec, &ack_path, &[AUTH], query).await.2["acks"]["0"] == true
    })
    .await;
    assert_eq!(hec.events(), vec![json!("late")]);
    assert_eq!(hec.indexed()[0].channel.as_deref(), Some(CHANNEL));
    assert_eq!(
        post(&hec, &ack_path, &[AUTH], query).await.2,
        json!({"acks":{"0":false,"1":false}})
    );
}

#[tokio::test]
async fn the_ack_endpoint_refuses_when_acknowledgement_is_off() {
    let hec = Hec::builder(TOKEN).start().await;
    let path = format!("/services/collector/ack?channel={CHANNEL}");
    let (status, _, answer) = post(&hec, &path, &[AUTH], r#"{"acks":[0]}"#).await;
    assert_eq!(
        (status, answer),
        (400, json!({"text":"ACK is disabled","code":14}))
    );
    // Without acknowledgement a channel is optional.
    assert_eq!(send(&hec, r#"{"event":"x"}"#).await.0, 200);
}

#[tokio::test]
async fn hec_gets_busy_part_way_through_a_request_on_cue() {
    let hec = Hec::builder(TOKEN).start().await;
    hec.script([Cue::BusyAfter { events: 2 }]);
    let body = r#"{"event":"a"}{"event":"b"}{"event":"c"}"#;
    assert_eq!(
        send(&hec, body).await,
        (
            503,
            json!({"text":"Server is busy","code":9,"invalid-event-number":2})
        )
    );
    assert_eq!(hec.events(), [json!("a"), json!("b")]);
}

#[tokio::test]
async fn hec_refuses_a_body_over_its_max_content_length() {
    let hec = Hec::builder(TOKEN).max_content_length(20).start().await;
    assert_eq!(send(&hec, r#"{"event":"short"}"#).await.0, 200);
    let (status, _) = send(&hec, r#"{"event":"a little too long"}"#).await;
    assert_eq!(status, 413);
    assert_eq!(hec.events(), [json!("short")]);
}
