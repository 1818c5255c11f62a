//! The HTTP uploader: one per sink. Two halves run side by side:
//!
//! 1. the **reader** owns the cursor: it fills batches ([`BatchReader`]), encodes and
//!    compresses them off the async threads, hands them over, and applies acknowledgements;
//! 2. the **sender** keeps up to `concurrency` requests in flight and retries each
//!    forever — connection errors, timeouts, 408, 429, 5xx, 401/403 — with backoff and
//!    `Retry-After`; splits on 413; dead-letters other 4xx. It reports completed batches
//!    in order, so the cursor only ever advances over a contiguous delivered prefix.
//!
//! While one request is in flight the next batch is already being compressed.
mod client;
mod deliver;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::config::HttpSinkConfig;
use crate::error::{Error, Result};
use crate::event::hostname;
use crate::metrics::Metrics;
use crate::sinks::batch::{Batch, BatchLimits, BatchReader};
use crate::sinks::encode::{encode, gzip};
use crate::sinks::SinkContext;

pub use client::build_client;
use client::static_headers;
use deliver::Sender;

/// A batch ready to send: its range and body only. Its records are dropped once encoded
/// (they stay in the WAL until acknowledged and are read again if a 413 or a permanent
/// rejection needs them), so batches in flight cost their compressed size.
struct Prepared {
    first_seq: u64,
    last_seq: u64,
    events: usize,
    gap_reasons: Vec<&'static str>,
    body: Bytes,
    /// Appended to the idempotency key (a notice about a batch is not that batch).
    key_suffix: &'static str,
}

/// How a batch ended.
enum Outcome {
    /// Delivered (or dead-lettered): the cursor may move past `last_seq`.
    Done { last_seq: u64 },
    /// Shutdown came first: it stays in the WAL.
    Aborted,
}

/// Runs the uploader of one sink until shutdown.
pub async fn run(ctx: SinkContext, cfg: HttpSinkConfig) -> Result<()> {
    let client = build_client(&ctx.name, &cfg)?;
    let headers = static_headers(&ctx.name, &cfg, &ctx.agent_id)?;
    let SinkContext {
        name,
        mut cursor,
        inputs,
        agent_id,
        dead_letter_dir,
        shutdown,
        shutdown_timeout,
        metrics,
        delivered,
        wal,
        seq_field,
        alert_after,
    } = ctx;
    metrics.sink_state(&name, |s| s.last_progress = Some(std::time::Instant::now()));
    let limits = BatchLimits {
        max_events: cfg.batch_max_events,
        max_bytes: cfg.batch_max_bytes,
        timeout: cfg.batch_timeout,
    };
    let host = hostname();
    let sender = Arc::new(Sender {
        name: name.clone(),
        cfg: cfg.clone(),
        client,
        headers,
        host: host.clone(),
        agent_id,
        metrics: metrics.clone(),
        dead_letter_dir,
        shutdown: shutdown.clone(),
        wal,
        inputs: inputs.clone(),
        seq_field: seq_field.clone(),
        alert_after,
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
                    let prepared = prepare(batch?, sender.clone()).await;
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

async fn prepare(batch: Batch, how: Arc<Sender>) -> Prepared {
    tokio::task::spawn_blocking(move || {
        let raw = encode(
            &batch.records,
            how.cfg.encoding,
            &how.host,
            how.seq_field.as_deref(),
        );
        let compress = how.cfg.gzip;
        let body = if compress { gzip(&raw) } else { raw };
        Prepared {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            events: batch.records.len(),
            gap_reasons: batch
                .records
                .iter()
                .filter_map(|r| r.gap())
                .map(|g| g.reason.as_str())
                .collect(),
            body: Bytes::from(body),
            key_suffix: "",
        }
    })
    .await
    .unwrap_or_else(|e| {
        // encode/gzip do not panic; if they did, fail loudly rather than send garbage.
        panic!("encoding a batch panicked: {e}")
    })
}
