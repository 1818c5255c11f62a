//! The console sink: NDJSON on stdout, for trying things out. The cursor advances once
//! the lines are written and flushed.

use tokio::io::AsyncWriteExt;

use crate::config::Encoding;
use crate::event::hostname;
use crate::sinks::batch::{BatchLimits, BatchReader};
use crate::sinks::encode::encode;
use crate::sinks::SinkContext;

/// Writes every event to stdout until shutdown.
pub async fn run(mut ctx: SinkContext) -> crate::Result<()> {
    let host = hostname();
    let mut reader = BatchReader::new(
        &ctx.inputs,
        BatchLimits {
            max_events: 1000,
            max_bytes: 1 << 20,
            timeout: std::time::Duration::from_millis(50),
        },
    );
    let mut stdout = tokio::io::stdout();
    loop {
        let batch = tokio::select! {
            b = reader.next(&mut ctx.cursor) => b?,
            _ = ctx.shutdown.changed() => return Ok(()),
        };
        let body = encode(
            &batch.records,
            Encoding::Ndjson,
            &host,
            ctx.seq_field.as_deref(),
        );
        stdout
            .write_all(&body)
            .await
            .map_err(|e| crate::Error::io("write", "stdout", e))?;
        stdout
            .flush()
            .await
            .map_err(|e| crate::Error::io("flush", "stdout", e))?;
        ctx.cursor.ack(batch.last_seq)?;
        let events = batch.records.len() as u64;
        ctx.metrics.sink_state(&ctx.name, |s| {
            s.delivered_events += events;
            s.delivered_seq = Some(batch.last_seq);
            s.last_progress = Some(std::time::Instant::now());
        });
        let _ = ctx.delivered.send(batch.last_seq);
        if *ctx.shutdown.borrow() {
            return Ok(());
        }
    }
}
