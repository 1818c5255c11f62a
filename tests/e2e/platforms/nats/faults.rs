//! Exactly once through faults: kill -9 of the agent mid-stream, a restart of the server
//! on its own store, and the loss of one node of a three-node cluster holding an R3 stream.
//! Every batch in flight is sent again and the stream drops what it already has (same
//! `Nats-Msg-Id`, within its duplicate window): every seq is stored once.

use super::*;
use crate::harness::nats::{stream_messages, NatsCluster, NatsServer};

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_agent_mid_stream_leaves_every_seq_in_the_stream_once() {
    // Crash after publishing, before the cursor moved: the restarted agent publishes the
    // batch again and the stream drops the copies.
    const KILLS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path()).await;
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let mut s = start(&nats.url(), 20).await;
    let lines = numbered_lines("nats kill9", 0, 10_000);
    s.ingest.post_ok(&lines).await;
    let total = lines.len() as u64;
    for kill in 0..KILLS {
        // Once the stream has passed the next mark: kills spread over the whole stream.
        let mark = (kill as u64 + 1) * total / (KILLS as u64 + 1);
        let mut stored = 0;
        wait_until(
            DELIVERY,
            format!("{mark} messages in the stream"),
            async || {
                stored = stream_messages(&nats.url(), STREAM).await.unwrap_or(0);
                stored >= mark
            },
        )
        .await;
        if stored >= total {
            eprintln!("kill {kill}: everything is stored already; no more kills");
            break;
        }
        s.agent.kill9();
        eprintln!("kill {kill}: {stored} messages in the stream");
        s.agent.restart().await;
    }
    let stored = wait_for_stream(&nats.url(), &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["bus"]["backlog_events"] == 0
    })
    .await;
    assert_eq!(
        stream_messages(&nats.url(), STREAM).await,
        Some(lines.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_and_restarted_on_its_store_mid_stream_loses_nothing() {
    // The server dies with PubAcks unsent: those batches time out, are published again
    // after it is back, and the stream (its de-duplication state rebuilt from the store)
    // keeps one copy.
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path()).await;
    create_stream(&nats.url(), STREAM, SUBJECT, 1, Duration::from_secs(120)).await;
    let s = start(&nats.url(), 20).await;
    let lines = numbered_lines("nats restart", 0, 6000);
    s.ingest.post_ok(&lines).await;
    for round in 1..=2u64 {
        let mark = round * lines.len() as u64 / 3;
        let mut stored = 0;
        wait_until(
            DELIVERY,
            format!("{mark} messages in the stream"),
            async || {
                stored = stream_messages(&nats.url(), STREAM).await.unwrap_or(0);
                stored >= mark
            },
        )
        .await;
        nats.kill9();
        eprintln!("server killed at {stored} messages");
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.restart().await;
    }
    let stored = wait_for_stream(&nats.url(), &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_node_killed_mid_stream_loses_nothing_from_an_r3_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path()).await;
    let survivor = cluster.nodes[2].url();
    create_stream(&survivor, STREAM, SUBJECT, 3, Duration::from_secs(120)).await;
    let s = start(&cluster.urls(), 50).await;
    let lines = numbered_lines("nats cluster", 0, 4000);
    s.ingest.post_ok(&lines).await;
    wait_until(DELIVERY, "some messages in the stream", async || {
        stream_messages(&survivor, STREAM)
            .await
            .is_some_and(|m| m > 200)
    })
    .await;
    // The first node in `url`: the one the agent most likely talks to, perhaps the
    // stream's leader.
    cluster.nodes[0].kill9();
    let stored = wait_for_stream(&survivor, &s.agent_id, lines.len()).await;
    assert_stored_once(&stored, &lines);
    wait_for_status(&s.agent, "every event delivered", |st| {
        st["sinks"]["bus"]["backlog_events"] == 0
    })
    .await;
}
