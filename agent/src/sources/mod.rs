//! Sources: where events come from. Each appends to the WAL through an
//! [`gapless_wal::Appender`] and acknowledges (answers its client, checkpoints its
//! offset) only after the append completed — that is, once the events are as durable as
//! the WAL's `durability` says.

pub mod file;
pub mod heartbeat;
pub mod http;
pub mod journald;
pub mod relay;
pub mod stdin;
pub mod syslog;

use std::path::PathBuf;
use std::sync::Arc;

use gapless_wal::Appender;
use tokio::sync::watch;

use crate::event::EventEncoder;
use crate::metrics::Metrics;

/// What every source gets from the pipeline.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name (the key under `[sources]`).
    pub name: String,
    /// Where to append.
    pub appender: Appender,
    /// Turns lines and objects into WAL payloads for this source.
    pub encoder: EventEncoder,
    /// A directory of this source's own for state (checkpoints):
    /// `data_dir/sources/<name>/`, created by the pipeline.
    pub state_dir: PathBuf,
    /// Becomes `true` when the agent shuts down: stop reading, finish what is in hand.
    pub shutdown: watch::Receiver<bool>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Set by the source once it takes input (the http source: once it listens); `/ready`
    /// waits for every source.
    pub started: Arc<watch::Sender<bool>>,
}

impl SourceContext {
    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells the pipeline this source now takes input.
    pub fn mark_started(&self) {
        self.started.send_replace(true);
    }

    /// Waits until shutdown begins.
    pub async fn stopped(&mut self) {
        while !*self.shutdown.borrow_and_update() {
            if self.shutdown.changed().await.is_err() {
                return;
            }
        }
    }
}
