//! `kill -9` of the agent while it delivers to HEC through an outage: no seq is lost.
//! Duplicates are allowed: HEC has no id to de-duplicate a resent event by.

use std::time::Duration;

use crate::harness::platforms::splunk::{AckAfter, Cue, Hec};
use crate::harness::*;

use super::*;

/// Three rounds of: post 200 lines, let the agent deliver (or fail to) for a moment, kill
/// -9, restart. The collector is busy through the second round and acks late.
async fn kills_mid_delivery(ack: bool) {
    let hec = Hec::builder(TOKEN)
        .indexer_acknowledgement(ack)
        .start()
        .await;
    hec.set_ack_after(AckAfter::Delay(Duration::from_millis(200)));
    let extra = if ack {
        "indexer_acknowledgement = true\nack_poll_interval = \"100ms\"\nconcurrency = 4"
    } else {
        ""
    };
    let (mut agent, ingest) = start_agent(&hec, TOKEN, 25, extra).await;
    for round in 0..3u64 {
        // Crash mid-delivery: batches sent, some answered, some acks pending, or (round 1)
        // the collector refusing everything as busy.
        if round == 1 {
            hec.set_cue(Cue::Busy {
                retry_after_secs: None,
            });
        } else {
            hec.set_cue(Cue::Normal);
        }
        ingest
            .post_ok(&numbered_lines("crash", (round * 200) as usize, 200))
            .await;
        let sent = hec.requests().len();
        wait_until(SHORT, "requests under way", async || {
            hec.requests().len() >= sent + 2
        })
        .await;
        agent.kill9();
        agent.restart().await;
    }
    hec.set_cue(Cue::Normal);
    wait_for_seqs(&hec, 600).await;
    let dups: usize = seq_counts(&hec).values().map(|n| n - 1).sum();
    eprintln!("{dups} duplicates after 3 kills; {}", hec.summary());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_delivery_during_an_outage_loses_no_seq() {
    kills_mid_delivery(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_delivery_with_acks_pending_loses_no_seq() {
    kills_mid_delivery(true).await;
}
