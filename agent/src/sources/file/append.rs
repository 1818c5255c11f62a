//! Appending: reading the next chunk of a file off the async threads, handing its batch
//! to the WAL, and taking the WAL's answers strictly in order. Up to [`MAX_IN_FLIGHT`]
//! appends holding at most [`IN_FLIGHT_BYTES`] are on their way while the next chunk is read; a file's `durable` offset moves
//! only when an append of its current generation completes, so it advances over a
//! contiguous prefix. A failed append rewinds the file to `durable`; the pieces after it
//! that were already in flight become duplicates, never a gap.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use gapless_wal::SeqRange;

use super::chunk::{read_chunk, Chunk, ChunkRequest};
use super::fingerprint::Fingerprint;
use super::{Source, IN_FLIGHT_BYTES, MAX_IN_FLIGHT};
use crate::sources::SourceContext;

/// Pause after a failed append before the lines are tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

pub(super) type AppendFuture = Pin<Box<dyn Future<Output = gapless_wal::Result<SeqRange>> + Send>>;

/// An append on its way to the WAL.
pub(super) struct InFlight {
    key: u64,
    generation: u64,
    start: u64,
    end: u64,
    /// The batch's encoded size.
    size: u64,
    /// The fingerprint of the bytes just before `end`.
    anchor: Fingerprint,
    /// The file's `continuing` and `after_partial` before this batch, to restore on
    /// failure.
    continuing: bool,
    after_partial: bool,
    events: u64,
    bytes: u64,
    largest: usize,
    pub(super) fut: AppendFuture,
}

impl Source {
    /// Reads one chunk of file `key` and appends it, first waiting for room among the
    /// in-flight appends. Returns `false` if shutdown came first.
    pub(super) async fn read_and_append(
        &mut self,
        ctx: &mut SourceContext,
        key: u64,
    ) -> crate::Result<bool> {
        let Some(f) = self.files.get(&key) else {
            return Ok(true);
        };
        let Some(file) = f.file.clone() else {
            return Ok(true);
        };
        let now = Instant::now();
        let req = ChunkRequest {
            file,
            start: f.read,
            continuing: f.continuing,
            after_partial: f.after_partial,
            anchor: f.read_anchor,
            flush_partial: f.partial_due(now, self.config.partial_line_timeout),
            limits: self.limits,
            encoder: self.encoder.clone(),
            path: f.path_str.clone(),
        };
        let (generation, start, continuing, after_partial_before) =
            (f.generation, f.read, f.continuing, f.after_partial);
        let path = f.path.clone();
        let mut buf = std::mem::take(&mut self.buf);
        let (result, buf) = tokio::task::spawn_blocking(move || {
            let r = read_chunk(&req, &mut buf);
            (r, buf)
        })
        .await
        .map_err(|e| crate::Error::io("read", &path, std::io::Error::other(e)))?;
        self.buf = buf;
        let chunk = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    source = %self.name,
                    path = %path.display(),
                    offset = start,
                    error = %e,
                    "read failed; trying again after a pause",
                );
                self.paused_until = Some(Instant::now() + RETRY_PAUSE);
                return Ok(true);
            }
        };
        let Chunk {
            batch,
            end,
            seen,
            at_eof,
            continuing: continuing_after,
            after_partial,
            largest,
            anchor,
            moved,
        } = chunk;
        let Some(f) = self.files.get_mut(&key) else {
            return Ok(true);
        };
        if f.generation != generation || f.read != start {
            return Ok(true);
        }
        if moved {
            tracing::warn!(
                source = %self.name,
                path = %f.path.display(),
                offset = start,
                "the bytes before the read offset changed (rewritten in place?); reading the file again from its start",
            );
            let mut head = std::mem::take(&mut self.head);
            let read = f
                .file
                .as_ref()
                .map(|file| super::fingerprint::read_head(file, &mut head));
            if matches!(read, Some(Ok(()))) {
                f.restart(&head);
            } else {
                f.restart(&[]);
            }
            self.head = head;
            self.dirty = true;
            return Ok(true);
        }
        f.read = end;
        f.read_anchor = anchor;
        f.reads_since_open += 1;
        f.read_at = Instant::now();
        f.seen = seen;
        f.continuing = continuing_after;
        f.more = !at_eof;
        if seen > f.size {
            f.size = seen;
            f.grown_at = Instant::now();
        }
        f.after_partial = after_partial;
        if batch.is_empty() {
            if end > start {
                self.advance_without_events(key, generation, start, end, anchor);
            }
            return Ok(true);
        }
        tracing::debug!(
            source = %self.name,
            path = %f.path.display(),
            start,
            end,
            events = batch.len(),
            "chunk read",
        );
        let size = batch.encoded_len();
        while self.in_flight.len() >= MAX_IN_FLIGHT
            || (self.in_flight.len() >= 2
                && self.in_flight.iter().map(|a| a.size).sum::<u64>() + size > IN_FLIGHT_BYTES)
        {
            let result = tokio::select! {
                () = ctx.stopped() => return Ok(false),
                r = front(&mut self.in_flight) => r,
            };
            if let Some(done) = self.in_flight.pop_front() {
                self.settle(done, result)?;
            }
        }
        let Some(f) = self.files.get_mut(&key) else {
            return Ok(true);
        };
        if f.generation != generation {
            // An earlier append of this file failed meanwhile: it is read again from there.
            return Ok(true);
        }
        let events = batch.len() as u64;
        let bytes = batch.payload_bytes() as u64;
        let appender = self.appender.clone();
        let mut fut: AppendFuture = Box::pin(async move { appender.append(batch).await });
        // The first poll hands the batch to the WAL, so appends enter it in our order.
        if let Some(r) = (&mut fut).now_or_never() {
            fut = Box::pin(std::future::ready(r));
        }
        f.in_flight += 1;
        self.in_flight.push_back(InFlight {
            size,
            key,
            generation,
            start,
            end,
            anchor,
            continuing,
            after_partial: after_partial_before,
            events,
            bytes,
            largest,
            fut,
        });
        Ok(true)
    }

    /// Bytes that made no event (the late line end of an emitted partial line) are
    /// durable once everything before them is: they ride along with the file's last
    /// in-flight append, or count at once if there is none.
    fn advance_without_events(
        &mut self,
        key: u64,
        generation: u64,
        start: u64,
        end: u64,
        anchor: Fingerprint,
    ) {
        let last = self
            .in_flight
            .iter_mut()
            .rev()
            .find(|a| a.key == key && a.generation == generation);
        match last {
            Some(a) if a.end == start => {
                a.end = end;
                a.anchor = anchor;
            }
            Some(_) => {}
            None => {
                if let Some(f) = self.files.get_mut(&key) {
                    if f.durable == start {
                        f.durable = end;
                        f.durable_anchor = anchor;
                        self.dirty = true;
                    }
                }
            }
        }
    }

    /// Takes the results of appends that have completed, in order, without waiting.
    pub(super) fn take_finished(&mut self) -> crate::Result<()> {
        while let Some(first) = self.in_flight.front_mut() {
            let Some(r) = (&mut first.fut).now_or_never() else {
                return Ok(());
            };
            if let Some(done) = self.in_flight.pop_front() {
                self.settle(done, r)?;
            }
        }
        Ok(())
    }

    /// Applies the result of the oldest in-flight append.
    pub(super) fn settle(
        &mut self,
        done: InFlight,
        result: gapless_wal::Result<SeqRange>,
    ) -> crate::Result<()> {
        let file = self.files.get_mut(&done.key);
        let current = file
            .as_ref()
            .is_some_and(|f| f.generation == done.generation);
        let path = file.as_ref().map(|f| f.path.clone()).unwrap_or_default();
        if let Some(f) = file {
            f.in_flight = f.in_flight.saturating_sub(1);
            match &result {
                // `drop_newest` refused the lines by policy, and the WAL wrote a gap record
                // for them: move on as the operator asked.
                Ok(_) | Err(gapless_wal::Error::DroppedNewest { .. }) if current => {
                    f.durable = done.end;
                    f.durable_anchor = done.anchor;
                    self.dirty = true;
                }
                Err(gapless_wal::Error::Closed) => {}
                Err(_) if current => f.rewind(done.continuing, done.after_partial),
                _ => {}
            }
        }
        match result {
            Ok(range) => {
                self.metrics
                    .source_appended(self.encoder.source(), done.events, done.bytes);
                tracing::trace!(
                    source = %self.name,
                    path = %path.display(),
                    offset = done.end,
                    first_seq = range.first,
                    last_seq = range.last,
                    "appended",
                );
                Ok(())
            }
            Err(gapless_wal::Error::Closed) => Err(gapless_wal::Error::Closed.into()),
            Err(gapless_wal::Error::DroppedNewest { records }) => {
                tracing::warn!(
                    source = %self.name,
                    path = %path.display(),
                    offset = done.start,
                    records,
                    "WAL full: lines dropped by policy drop_newest (a gap record says so)",
                );
                Ok(())
            }
            Err(gapless_wal::Error::RecordTooLarge { size, max }) => {
                self.shrink(done.largest, max);
                tracing::warn!(
                    source = %self.name,
                    path = %path.display(),
                    offset = done.start,
                    size,
                    max,
                    batch_bytes = self.limits.batch_bytes,
                    line_bytes = self.limits.line_bytes,
                    "the WAL refused a batch as too large; reading again in smaller pieces",
                );
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    source = %self.name,
                    path = %path.display(),
                    offset = done.start,
                    error = %e,
                    "append failed; the lines are read again after a pause",
                );
                self.paused_until = Some(Instant::now() + RETRY_PAUSE);
                Ok(())
            }
        }
    }

    /// Makes batches (and, if one event was too large, lines) smaller for a WAL that
    /// refused one as too large.
    fn shrink(&mut self, largest: usize, max: usize) {
        let l = &mut self.limits;
        l.batch_bytes = (l.batch_bytes.min(max as u64) / 2).max(4 << 10);
        l.read_bytes = l.read_bytes.min(l.batch_bytes as usize).max(4 << 10);
        if largest > max {
            l.line_bytes = (l.line_bytes.min(max) / 2).max(64);
        }
    }
}

/// The result of the oldest in-flight append (pending forever if there is none).
pub(super) async fn front(in_flight: &mut VecDeque<InFlight>) -> gapless_wal::Result<SeqRange> {
    match in_flight.front_mut() {
        Some(first) => (&mut first.fut).await,
        None => std::future::pending().await,
    }
}
