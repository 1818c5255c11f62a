//! Sinks: where events go. Each sink owns one WAL cursor, reads batches from it
//! ([`batch`]), encodes them ([`encode`]) and acknowledges the cursor only once the
//! destination has them. A sink that is down holds back only its own cursor.
//!
//! Every uploading sink runs on the one [`delivery`] mechanism; a platform module
//! ([`http`], [`azure_monitor_logs`], [`splunk_hec`], [`elasticsearch`], [`nats`]) only
//! encodes, limits, authenticates and reads answers (`nats` also sends: it is not HTTP).
//! The `gapless` sink (to a relay's `gapless` source, [`crate::sources::relay`]) is the
//! `http` platform with its wire fixed: NDJSON, seq field `seq`.

pub mod azure_monitor_logs;
pub mod batch;
pub mod console;
pub mod dead_letter;
pub mod delivery;
pub mod elasticsearch;
pub mod encode;
pub mod http;
pub mod nats;
pub mod retry;
pub mod splunk_hec;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use gapless_wal::{Cursor, Wal};
use tokio::sync::watch;

use crate::config::SinkKind;
use crate::error::Result;
use crate::metrics::Metrics;

/// What every sink gets from the pipeline.
pub struct SinkContext {
    /// The sink's name (the key under `[sinks]`), also its cursor's name.
    pub name: String,
    /// Its cursor.
    pub cursor: Cursor,
    /// Sources whose events it takes; empty means all. Gap records always pass.
    pub inputs: HashSet<String>,
    /// This agent's id (for continuity headers).
    pub agent_id: String,
    /// The id of this agent's WAL, new with every new WAL (`Gapless-Wal-Id`): its seqs
    /// start again at 1, and a receiver must not take them for seqs it already has.
    pub wal_id: String,
    /// `data_dir/dead-letter/<sink>/`.
    pub dead_letter_dir: PathBuf,
    /// Becomes `true` on shutdown: finish in-flight work, start nothing new.
    pub shutdown: watch::Receiver<bool>,
    /// How long in-flight work may take after shutdown begins.
    pub shutdown_timeout: std::time::Duration,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Reports the last sequence number delivered (for stdin's drain-then-exit).
    pub delivered: watch::Sender<u64>,
    /// The WAL, to read a batch again when it must be split or dead-lettered.
    pub wal: Arc<Wal>,
    /// The field carrying each event's seq, or `None`.
    pub seq_field: Option<String>,
    /// How long a sink may be down before it is logged as an error (again).
    pub alert_after: std::time::Duration,
    /// Sources whose records the agent writes itself (heartbeats): sent without the guard
    /// against clashing fields, and without a platform's `agent_id` (they carry it).
    pub agent_sources: HashSet<String>,
    /// Sources whose events are JSON objects of a client's own (http sources).
    pub client_sources: HashSet<String>,
    /// Sources whose events the agent writes whole (file, stdin, syslog, journald lines): no
    /// client names in them. A record of any other source (one no longer configured) is
    /// treated as a client's.
    pub line_sources: HashSet<String>,
}

/// Runs the sink of `kind` until shutdown: `console`, or an uploading sink on the
/// [`delivery`] mechanism with its platform.
pub async fn run(ctx: SinkContext, kind: &SinkKind) -> Result<()> {
    let added = kind.added_fields();
    match kind {
        SinkKind::Console => console::run(ctx).await,
        // A relay's `gapless` source takes the http sink's request as it is (NDJSON, `seq`).
        SinkKind::Http(c) | SinkKind::Gapless(c) => {
            let platform = http::Http::new(&ctx.name, (**c).clone())?;
            delivery::run(ctx, &c.delivery, platform, &added).await
        }
        SinkKind::AzureMonitorLogs(c) => {
            let platform = azure_monitor_logs::AzureMonitorLogs::new(
                &ctx.name,
                &ctx.agent_id,
                ctx.seq_field.as_deref(),
                c,
            )?;
            delivery::run(ctx, &c.delivery, platform, &added).await
        }
        SinkKind::SplunkHec(c) => {
            let platform = splunk_hec::SplunkHec::new(&ctx.name, &ctx.agent_id, c)?;
            delivery::run(ctx, &c.delivery, platform, &added).await
        }
        SinkKind::Elasticsearch(c) => {
            let platform = elasticsearch::Elasticsearch::new(&ctx.name, &ctx.agent_id, c)?;
            delivery::run(ctx, &c.delivery, platform, &added).await
        }
        SinkKind::Nats(c) => {
            let platform = nats::Nats::new(&ctx.name, &ctx.agent_id, c)?;
            delivery::run(ctx, &c.delivery, platform, &added).await
        }
    }
}
