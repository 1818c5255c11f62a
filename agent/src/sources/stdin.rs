//! The stdin source: one event per line. At end of input it reports the last sequence
//! number it appended, so the pipeline can wait for delivery and exit 0
//! (`cat file | gapless run …`).

use gapless_wal::AppendBatch;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::event::Timestamp;
use crate::sources::SourceContext;

const CHUNK: usize = 256 << 10;
const MAX_LINE: usize = 1 << 20;

/// Reads stdin to its end (or shutdown). Sends the last appended seq on `done` at EOF.
pub async fn run(mut ctx: SourceContext, done: watch::Sender<Option<u64>>) -> crate::Result<()> {
    let mut stdin = tokio::io::stdin();
    ctx.mark_started();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    let mut last_seq = 0u64;
    let mut chunk = vec![0u8; CHUNK];
    // Up to two appends in flight: the next chunk is read and encoded while the previous
    // one is being synced.
    let mut in_flight: Option<(gapless_wal::PendingAppend, u64, u64)> = None;
    loop {
        let n = tokio::select! {
            r = stdin.read(&mut chunk) => r.map_err(|e| crate::Error::io("read", "stdin", e))?,
            () = ctx.stopped() => return Ok(()),
        };
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        let mut batch = AppendBatch::with_capacity(1024, buf.len() + 4096);
        let ts = Timestamp::now();
        let mut consumed = 0;
        while let Some(pos) = memchr::memchr(b'\n', &buf[consumed..]) {
            let line = &buf[consumed..consumed + pos];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            push_split(&ctx, &mut batch, line, &ts);
            consumed += pos + 1;
        }
        // The last line without a newline at the end, or an over-long line so far.
        if (eof && consumed < buf.len()) || buf.len() - consumed > MAX_LINE {
            push_split(&ctx, &mut batch, &buf[consumed..], &ts);
            consumed = buf.len();
        }
        buf.drain(..consumed);
        if !batch.is_empty() {
            let events = batch.len() as u64;
            let bytes = batch.payload_bytes() as u64;
            let next = (ctx.appender.enqueue(batch)?, events, bytes);
            if let Some(prev) = in_flight.replace(next) {
                last_seq = finish(&ctx, prev).await?;
            }
        }
        if eof {
            if let Some(prev) = in_flight.take() {
                last_seq = finish(&ctx, prev).await?;
            }
            let _ = done.send(Some(last_seq));
            tracing::info!(
                source = ctx.encoder.source(),
                last_seq,
                "end of stdin; waiting for delivery"
            );
            ctx.stopped().await;
            return Ok(());
        }
    }
}

async fn finish(
    ctx: &SourceContext,
    (append, events, bytes): (gapless_wal::PendingAppend, u64, u64),
) -> crate::Result<u64> {
    let range = append.await?;
    ctx.metrics
        .source_appended(ctx.encoder.source(), events, bytes);
    Ok(range.last)
}

fn push_split(ctx: &SourceContext, batch: &mut AppendBatch, line: &[u8], ts: &Timestamp) {
    if line.len() <= MAX_LINE {
        ctx.encoder.push_line(batch, line, ts, &[], &[]);
        return;
    }
    for piece in line.chunks(MAX_LINE) {
        ctx.encoder.push_line(batch, piece, ts, &[], &["truncated"]);
    }
}
