//! Heartbeats: a `heartbeat` source writes an event through the WAL every `interval`
//! saying the agent is alive and how far behind each sink is; every sink delivers them,
//! whatever its `inputs`.

use gapless::continuity::check;

use crate::harness::capture::received_batches;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_reach_a_sink_whose_inputs_name_another_source() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "[sources.hb]\ntype = \"heartbeat\"\ninterval = \"500ms\"\n{}{}",
            http_source("app", port, ""),
            http_sink(&receiver.url(), &["app"], 50, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("heartbeat", 0, 20);
    Ingest::new(port).post_ok(&lines).await;
    receiver.wait_for_lines(&lines, DELIVERY).await;
    wait_until(SHORT, "two heartbeats", async || {
        receiver
            .events()
            .iter()
            .filter(|e| e["gapless"] == "heartbeat")
            .count()
            >= 2
    })
    .await;

    let agent_id = agent.status_json().await["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    for r in receiver.requests().iter().filter(|r| r.accepted()) {
        for hb in r.events.iter().filter(|e| e["gapless"] == "heartbeat") {
            assert_eq!(hb["agent_id"], agent_id.as_str(), "{hb}");
            assert_eq!(
                r.header("gapless-agent-id"),
                Some(agent_id.as_str()),
                "the heartbeat's request"
            );
            assert!(hb["seq"].is_u64(), "a heartbeat goes through the WAL: {hb}");
            assert!(hb["version"].is_string(), "{hb}");
            assert!(hb["uptime_seconds"].is_u64(), "{hb}");
            let out = &hb["sinks"]["out"];
            let age = &out["oldest_undelivered_age_seconds"];
            assert!(
                out["backlog_events"].is_u64() && out["backlog_bytes"].is_u64(),
                "a heartbeat without sink out's backlog: {hb}"
            );
            // A number whenever something waits; null only when nothing does.
            assert!(
                age.as_f64().is_some_and(|a| a >= 0.0)
                    || (age.is_null() && out["backlog_events"] == 0),
                "oldest_undelivered_age_seconds {age} with backlog {}: {hb}",
                out["backlog_events"]
            );
            assert!(hb["dropped_events"].is_u64(), "{hb}");
            assert!(hb["dead_lettered_events"].is_u64(), "{hb}");
        }
    }
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(report.missing.is_empty(), "{report:?}");
}
