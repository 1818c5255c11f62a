//! Sinks: where events go. Each sink owns one WAL cursor, reads batches from it
//! ([`batch`]), encodes them ([`encode`]) and acknowledges the cursor only once the
//! destination has them. A sink that is down holds back only its own cursor.

pub mod batch;
pub mod console;
pub mod dead_letter;
pub mod encode;
pub mod http;
pub mod retry;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use gapless_wal::{Cursor, Wal};
use tokio::sync::watch;

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
}
