//! The one delivery mechanism of every uploading sink (`http`, `azure_monitor_logs`,
//! `splunk_hec`, `elasticsearch`); a platform is a [`Platform`] — its encoding, limits,
//! authentication and reading of answers — and nothing more. Two halves run side by side:
//!
//! 1. the **reader** owns the cursor: it fills batches ([`BatchReader`]), encodes them into
//!    requests under the platform's size limit and compresses them off the async threads
//!    ([`prepare`]), hands them over, and applies acknowledgements;
//! 2. the **sender** ([`send`]) keeps up to `concurrency` batches in flight and retries each
//!    request forever — connection errors, timeouts and whatever the platform calls
//!    transient — with backoff and `Retry-After`; splits on 413; resends only the items a
//!    per-item answer asks for; dead-letters what is refused for good, with a notice. It
//!    reports completed batches in order, so the cursor only ever advances over a
//!    contiguous delivered prefix.
//!
//! While one request is in flight the next batch is already being encoded.
mod client;
mod platform;
mod prepare;
mod replay;
mod send;

use std::sync::Arc;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::config::DeliveryConfig;
use crate::error::{Error, Result};
use crate::event::hostname;
use crate::metrics::Metrics;
use crate::sinks::batch::{BatchLimits, BatchReader};
use crate::sinks::encode::SinkFields;
use crate::sinks::SinkContext;

pub use client::{build_client, error_chain};
pub use platform::{
    Answer, Framing, Item, ItemAnswer, ItemKind, NotReady, Outgoing, Platform, Rejection,
};
use prepare::{Encoder, KeyKind, Prepared};
pub use replay::Replay;
use send::Sender;

/// How a batch ended.
enum Outcome {
    /// Delivered (or dead-lettered): the cursor may move past `last_seq`.
    Done { last_seq: u64 },
    /// Shutdown came first: it stays in the WAL.
    Aborted,
}

/// Runs the uploader of one sink until shutdown.
///
/// `added_fields` are the fields the platform writes into every event besides the seq
/// field ([`crate::config::SinkKind::added_fields`]).
pub async fn run<P: Platform>(
    ctx: SinkContext,
    cfg: &DeliveryConfig,
    platform: P,
    added_fields: &[String],
) -> Result<()> {
    let client = build_client(&ctx.name, cfg)?;
    let SinkContext {
        name,
        mut cursor,
        inputs,
        agent_id,
        wal_id,
        dead_letter_dir,
        shutdown,
        shutdown_timeout,
        metrics,
        delivered,
        wal,
        seq_field,
        alert_after,
        agent_sources,
        client_sources,
        line_sources,
    } = ctx;
    metrics.sink_state(&name, |s| s.last_progress = Some(std::time::Instant::now()));
    let limits = BatchLimits {
        max_events: cfg.batch_max_events,
        max_bytes: cfg.batch_max_bytes,
        timeout: cfg.batch_timeout,
    };
    let platform = Arc::new(platform);
    let encoder = Arc::new(Encoder {
        platform: platform.clone(),
        host: hostname(),
        fields: SinkFields::new(seq_field.as_deref(), added_fields),
        agent_sources,
        client_sources,
        line_sources,
        gzip: cfg.gzip,
        key_prefix: format!("{agent_id}-{name}"),
    });
    let sender = Arc::new(Sender {
        name: name.clone(),
        cfg: cfg.clone(),
        client,
        agent_id,
        wal_id,
        metrics: metrics.clone(),
        dead_letter_dir,
        shutdown: shutdown.clone(),
        wal,
        inputs: inputs.clone(),
        alert_after,
        platform,
        encoder: encoder.clone(),
    });
    let (tx, rx) = mpsc::channel::<Prepared>(1);
    let (ack_tx, ack_rx) = watch::channel(0u64);

    let reader = async {
        let mut reader = BatchReader::new(&inputs, limits);
        let mut shutdown = shutdown.clone();
        let mut ack_rx = ack_rx;
        let mut tx = Some(tx);
        loop {
            if *shutdown.borrow() {
                // Stop reading; keep applying acks until the sender is done.
                tx = None;
            }
            let Some(sender_tx) = tx.clone() else {
                if ack_rx.changed().await.is_err() {
                    return Ok::<(), Error>(());
                }
                apply_ack(&mut cursor, &ack_rx, &delivered, &metrics, &name)?;
                continue;
            };
            tokio::select! {
                biased;
                changed = ack_rx.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    apply_ack(&mut cursor, &ack_rx, &delivered, &metrics, &name)?;
                }
                _ = shutdown.changed() => {}
                batch = reader.next(&mut cursor) => {
                    let batch = batch?;
                    let enc = encoder.clone();
                    let prepared = tokio::task::spawn_blocking(move || enc.prepare(&batch, KeyKind::Range))
                        .await
                        // encoding does not panic; if it did, fail loudly rather than send garbage.
                        .unwrap_or_else(|e| panic!("encoding a batch panicked: {e}"));
                    let send = sender_tx.send(prepared);
                    tokio::pin!(send);
                    loop {
                        tokio::select! {
                            biased;
                            changed = ack_rx.changed() => {
                                if changed.is_err() {
                                    return Ok(());
                                }
                                apply_ack(&mut cursor, &ack_rx, &delivered, &metrics, &name)?;
                            }
                            sent = &mut send => {
                                if sent.is_err() {
                                    return Ok(());
                                }
                                break;
                            }
                        }
                    }
                }
            }
        }
    };

    let sending = {
        let sender = sender.clone();
        let mut shutdown = shutdown.clone();
        async move {
            let mut rx = rx;
            let mut in_flight = FuturesOrdered::new();
            let mut open = true;
            let concurrency = sender.cfg.concurrency;
            loop {
                tokio::select! {
                    next = rx.recv(), if open && in_flight.len() < concurrency => match next {
                        Some(p) => in_flight.push_back(sender.clone().deliver(p)),
                        None => open = false,
                    },
                    Some(outcome) = in_flight.next(), if !in_flight.is_empty() => match outcome {
                        Outcome::Done { last_seq } => {
                            let _ = ack_tx.send(last_seq);
                        }
                        // Nothing after an undelivered batch may be acknowledged.
                        Outcome::Aborted => return,
                    },
                    _ = shutdown.changed(), if open => {
                        if *shutdown.borrow() {
                            open = false;
                        }
                    }
                    else => return,
                }
                if !open && in_flight.is_empty() {
                    return;
                }
            }
        }
    };
    let sending = async {
        let mut sd = shutdown.clone();
        tokio::select! {
            () = sending => {}
            () = async {
                while !*sd.borrow_and_update() {
                    if sd.changed().await.is_err() { break; }
                }
                tokio::time::sleep(shutdown_timeout).await;
            } => {
                tracing::warn!(sink = %name, "shutdown timeout: requests still in flight are left in the WAL");
            }
        }
    };
    let (read_result, ()) = tokio::join!(reader, sending);
    read_result
}

fn apply_ack(
    cursor: &mut gapless_wal::Cursor,
    ack_rx: &watch::Receiver<u64>,
    delivered: &watch::Sender<u64>,
    metrics: &Metrics,
    name: &str,
) -> Result<()> {
    let seq = *ack_rx.borrow();
    if seq >= cursor.acked_next() {
        cursor.ack(seq)?;
        metrics.sink_state(name, |s| {
            s.delivered_seq = Some(seq);
            s.last_progress = Some(std::time::Instant::now());
        });
        let _ = delivered.send(seq);
    }
    Ok(())
}
