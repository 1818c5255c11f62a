//! What the gapless source refuses, each with a JSON `{"error": …}` and nothing of the
//! request stored: 400 for a missing or invalid Gapless-Agent-Id or Gapless-Seq-Range, a
//! line that is not a JSON object, an object without an integer `seq` inside the range,
//! seqs not increasing, or a top-level `origin_agent_id`/`origin_seq` (one relay hop only);
//! 413 over `max_body_bytes`. After each refusal the relay keeps taking good requests.

use super::{start_relay, TOKEN};
use crate::harness::relay::{
    answer_json, assert_answer, continuity_headers, origin_messages, shared_token, RelayClient,
};
use crate::harness::*;

/// The agent the refused requests claim to be.
const BAD: &str = "refused-agent";
/// The agent of the good requests between them.
const GOOD: &str = "good-agent";

/// 128 hex digits that gzip cannot shrink much (splitmix64 of `seed`).
fn noise(seed: u64) -> String {
    let mut x = seed;
    (0..8)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// A request's headers, (name, value).
type Headers = Vec<(String, String)>;

/// A line of an origin event with `seq` and extra top-level fields.
fn line(seq: u64, extra: &str) -> String {
    format!(r#"{{"seq":{seq},"message":"refused {seq}","host":"h","source":"app"{extra}}}"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_400_and_the_relay_keeps_taking_good_ones() {
    let platform = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let mut relay = start_relay(
        &platform,
        port,
        &format!("{}\nmax_body_bytes = \"64KiB\"", shared_token(TOKEN)),
    )
    .await;
    let client = RelayClient::new(port).with_token(TOKEN);
    let without = |name: &str| -> Headers {
        let mut h = continuity_headers(BAD, 1, 2);
        h.retain(|(k, _)| k != name);
        h
    };
    let with_range = |range: &str| -> Headers {
        let mut h = without("gapless-seq-range");
        h.push(("gapless-seq-range".into(), range.into()));
        h
    };
    let good_pair = vec![line(1, ""), line(2, "")];
    // Over 64 KiB once gunzipped, a few KiB as sent.
    let big_plain: Vec<String> = (1..=1_000)
        .map(|s| line(s, &format!(r#","pad":"{}""#, "x".repeat(100))))
        .collect();
    // Over 64 KiB even gzipped: hex digits that do not repeat.
    let big_gzipped: Vec<String> = (1..=2_000)
        .map(|s| line(s, &format!(r#","pad":"{}""#, noise(s))))
        .collect();
    let cases: Vec<(&str, Headers, Vec<String>, u16)> = vec![
        (
            "no Gapless-Agent-Id",
            without("gapless-agent-id"),
            good_pair.clone(),
            400,
        ),
        (
            "an empty Gapless-Agent-Id",
            {
                let mut h = without("gapless-agent-id");
                h.push(("gapless-agent-id".into(), String::new()));
                h
            },
            good_pair.clone(),
            400,
        ),
        (
            "no Gapless-Seq-Range",
            without("gapless-seq-range"),
            good_pair.clone(),
            400,
        ),
        (
            "a Gapless-Seq-Range that is not a-b",
            with_range("one-two"),
            good_pair.clone(),
            400,
        ),
        (
            "a Gapless-Seq-Range ending before it starts",
            with_range("2-1"),
            good_pair.clone(),
            400,
        ),
        (
            "a line without seq",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), r#"{"message":"refused, no seq"}"#.into()],
            400,
        ),
        (
            "a seq that is a string",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), r#"{"seq":"2","message":"refused"}"#.into()],
            400,
        ),
        (
            "a seq after the range",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), line(2, ""), line(3, "")],
            400,
        ),
        (
            "a seq before the range",
            continuity_headers(BAD, 2, 3),
            vec![line(1, ""), line(2, "")],
            400,
        ),
        (
            "seqs not increasing",
            continuity_headers(BAD, 1, 3),
            vec![line(1, ""), line(3, ""), line(2, "")],
            400,
        ),
        (
            "a seq twice",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), line(1, "")],
            400,
        ),
        (
            "a line that is not JSON",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), "refused, not JSON".into()],
            400,
        ),
        (
            "a line that is a JSON string",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), r#""refused, a string""#.into()],
            400,
        ),
        (
            "a top-level origin_agent_id",
            continuity_headers(BAD, 1, 2),
            vec![line(1, ""), line(2, r#","origin_agent_id":"elsewhere""#)],
            400,
        ),
        (
            "a top-level origin_seq",
            continuity_headers(BAD, 1, 2),
            vec![line(1, r#","origin_seq":7"#), line(2, "")],
            400,
        ),
        (
            "a body over max_body_bytes as sent",
            continuity_headers(BAD, 1, 2_000),
            big_gzipped,
            413,
        ),
        (
            "a body over max_body_bytes once gunzipped",
            continuity_headers(BAD, 1, 1_000),
            big_plain,
            413,
        ),
    ];
    let mut next = 1;
    for (what, headers, lines, status) in cases {
        let answer = client
            .post(&headers, &lines)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_answer(what, &answer, status);
        assert!(relay.is_running(), "the relay exited after {what}");
        let good = client.post_range(GOOD, "good", next, 2).await;
        assert_answer(&format!("a good request after {what}"), &good, 200);
        next += 2;
    }
    platform
        .wait_for_lines(&origin_messages("good", 1, next - 1), DELIVERY)
        .await;
    let refused: Vec<_> = platform
        .events()
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused"))
                || e["origin_agent_id"] == "elsewhere"
                || e["origin_agent_id"] == BAD
        })
        .collect();
    assert!(
        refused.is_empty(),
        "events of refused requests reached the platform: {refused:?}"
    );
    // Nothing of the refused requests was stored: the seqs they named are still free.
    let answer = client.post_range(BAD, "finally good", 1, 3).await;
    assert_answer("the refused agent's seqs 1..=3, well formed", &answer, 200);
    let body = answer_json("the refused agent's seqs 1..=3", &answer);
    assert_eq!(body["duplicates"], 0, "{body}");
    platform
        .wait_for_lines(&origin_messages("finally good", 1, 3), DELIVERY)
        .await;
}
