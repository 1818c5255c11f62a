//! The heartbeat source: every `interval` it writes an event through the WAL saying that
//! this agent is alive and how far behind each sink is. Downstream, the absence of
//! heartbeats means "agent not delivering", not "nothing happened". Sinks deliver
//! heartbeats whatever their `inputs`.

use std::sync::Arc;
use std::time::Duration;

use gapless_wal::{AppendBatch, Wal};
use serde_json::{json, Map, Value};

use crate::event::{unix_nanos_now, Timestamp};
use crate::metrics::Metrics;
use crate::sources::SourceContext;

/// Writes heartbeats until shutdown.
pub async fn run(
    mut ctx: SourceContext,
    interval: Duration,
    wal: Arc<Wal>,
    agent_id: String,
) -> crate::Result<()> {
    ctx.mark_started();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = ctx.stopped() => return Ok(()),
        }
        let w = wal.clone();
        let stats = tokio::task::spawn_blocking(move || w.stats())
            .await
            .map_err(|e| {
                crate::Error::io(
                    "WAL stats",
                    "heartbeat",
                    std::io::Error::other(e.to_string()),
                )
            })??;
        let object = heartbeat(&agent_id, &stats, &ctx.metrics);
        let mut batch = AppendBatch::new();
        ctx.encoder
            .push_agent_object(&mut batch, object, &Timestamp::now());
        let bytes = batch.payload_bytes() as u64;
        // Under `block` a full WAL makes the heartbeat wait, which is the truth: nothing
        // moves. The next tick writes a fresh one.
        ctx.appender.append(batch).await?;
        ctx.metrics.source_appended(ctx.encoder.source(), 1, bytes);
    }
}

fn heartbeat(agent_id: &str, stats: &gapless_wal::Stats, metrics: &Metrics) -> Map<String, Value> {
    let now = unix_nanos_now();
    let states = metrics.sinks.lock().map(|g| g.clone()).unwrap_or_default();
    let mut sinks = Map::new();
    let mut dead_lettered = 0;
    for c in &stats.cursors {
        let state = states.get(&c.name).cloned().unwrap_or_default();
        dead_lettered += state.dead_lettered_events;
        sinks.insert(
            c.name.clone(),
            json!({
                "backlog_events": c.backlog_records,
                "backlog_bytes": c.backlog_bytes,
                "oldest_undelivered_age_seconds": c.oldest_unacked.map(|t| now.saturating_sub(t) as f64 / 1e9),
                "delivered_events": state.delivered_events,
                "dead_lettered_events": state.dead_lettered_events,
            }),
        );
    }
    let uptime = metrics.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let mut m = Map::new();
    m.insert("gapless".into(), "heartbeat".into());
    m.insert(
        "message".into(),
        format!("gapless heartbeat from {agent_id}").into(),
    );
    m.insert("agent_id".into(), agent_id.into());
    m.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    m.insert("uptime_seconds".into(), uptime.into());
    m.insert("sinks".into(), Value::Object(sinks));
    m.insert(
        "dropped_events".into(),
        (stats.dropped_oldest_records + stats.dropped_newest_records).into(),
    );
    m.insert("dead_lettered_events".into(), dead_lettered.into());
    m
}
