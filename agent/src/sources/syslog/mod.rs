//! The syslog source: RFC 5424 and RFC 3164 messages over UDP, TCP or TLS. This module
//! owns turning one message into one event and the acknowledgement rule of each
//! transport; `parse.rs` owns the grammar, `framing.rs` the stream framing, `tcp.rs` the
//! TCP/TLS listener and connections (with `tls.rs` for the rustls server setup), `udp.rs`
//! the datagram socket and its kernel drop counter. The WAL owns durability.
//!
//! Every message becomes one event: `message` (MSG), `timestamp` (the message's, in UTC;
//! ingest time when it has none or it does not parse), `host` (this agent's) and a
//! `syslog` object the agent writes itself (`facility`, `severity`, `hostname`,
//! `appname`, `procid`, `msgid`, `structured_data`, `format`, `peer`). A message that is
//! neither RFC 5424 nor RFC 3164 is kept whole, `format = "unparsed"`: nothing is dropped
//! for its shape.
//!
//! # What a crash can lose
//! Syslog has no application-level acknowledgement, so the rule is:
//! - **TCP/TLS**: a connection reads one batch (at most one read of [`READ_CHUNK`] bytes
//!   plus one incomplete frame), appends it to the WAL and awaits its durability before it
//!   reads again. A full WAL (`when_full = "block"`) therefore stops the reads and TCP
//!   flow control pushes back on the sender; nothing is buffered without bound. On a
//!   `kill -9`, power loss or connection reset, what is lost is exactly what the kernel had
//!   already ACKed at the TCP level but the agent had not yet made durable: the bytes in
//!   the socket's receive buffer plus the one batch in hand. The sender cannot know which
//!   (RFC 6587 has no acks); everything appended before is delivered. On SIGTERM or
//!   reload a connection reads what has already arrived before it closes (`tcp.rs`).
//! - **UDP**: no flow control at all. Datagrams the kernel drops because the socket
//!   buffer (`receive_buffer_bytes`) is full are counted by the kernel; the source reads
//!   that counter from `/proc/net/udp` every second and appends a `source_overflow` gap
//!   record with the count, also added to
//!   `gapless_dropped_events_total{reason="source_overflow"}`. Datagrams lost on the
//!   network, and those in the socket buffer at a crash, are not seen by anyone.

mod framing;
pub(crate) mod parse;
mod tcp;
mod tls;
mod udp;

use gapless_wal::AppendBatch;

pub use framing::Framing;
pub use tls::server_config;

use crate::config::{SyslogMode, SyslogSourceConfig};
use crate::event::Timestamp;
use crate::metrics::SourceLabel;
use crate::sources::SourceContext;

/// The most bytes one TCP/TLS read takes before the batch is appended.
pub const READ_CHUNK: usize = 256 << 10;

/// Serves the source until shutdown.
pub async fn run(ctx: SourceContext, config: SyslogSourceConfig) -> crate::Result<()> {
    match config.mode {
        SyslogMode::Udp => udp::run(ctx, config).await,
        SyslogMode::Tcp | SyslogMode::Tls => tcp::run(ctx, config).await,
    }
}

/// Turns messages into events of one batch.
struct Events<'a> {
    ctx: &'a SourceContext,
    now: u64,
    ingest: Timestamp,
    syslog: Vec<u8>,
    unparsed: u64,
    truncated: u64,
}

impl<'a> Events<'a> {
    fn new(ctx: &'a SourceContext) -> Self {
        let now = crate::event::unix_nanos_now();
        Events {
            ctx,
            now,
            ingest: Timestamp::from_unix_nanos(now),
            syslog: Vec::with_capacity(256),
            unparsed: 0,
            truncated: 0,
        }
    }

    /// Appends the event of one message from `peer` to `batch`.
    fn push(&mut self, batch: &mut AppendBatch, message: &[u8], truncated: bool, peer: &str) {
        let m = parse::parse(message, self.now);
        self.syslog.clear();
        m.write_json(&mut self.syslog, peer);
        if m.format == parse::Format::Unparsed {
            self.unparsed += 1;
        }
        let own = m.timestamp.map(Timestamp::from_unix_nanos);
        let flags: &[&str] = if truncated {
            self.truncated += 1;
            &["truncated"]
        } else {
            &[]
        };
        self.ctx.encoder.push_line_with_object(
            batch,
            m.msg,
            own.as_ref().unwrap_or(&self.ingest),
            ("syslog", &self.syslog),
            flags,
        );
    }

    /// What `batch` holds, to count once it is appended.
    fn counts(self, batch: &AppendBatch) -> Counts {
        Counts {
            events: batch.len() as u64,
            bytes: batch.payload_bytes() as u64,
            unparsed: self.unparsed,
            truncated: self.truncated,
        }
    }
}

/// What one batch held, counted in the metrics once it is durable.
struct Counts {
    events: u64,
    bytes: u64,
    unparsed: u64,
    truncated: u64,
}

/// Counts an appended batch, or logs why it was not. `false`: the WAL refused it for good
/// (closed or failed); the caller stops reading.
fn settle(
    ctx: &SourceContext,
    counts: &Counts,
    result: gapless_wal::Result<gapless_wal::SeqRange>,
) -> bool {
    match result {
        Ok(_) => {
            let source = ctx.encoder.source();
            ctx.metrics
                .source_appended(source, counts.events, counts.bytes);
            let label = SourceLabel {
                source: source.to_string(),
            };
            if counts.unparsed > 0 {
                ctx.metrics
                    .source_syslog_unparsed
                    .get_or_create(&label)
                    .inc_by(counts.unparsed);
            }
            if counts.truncated > 0 {
                ctx.metrics
                    .source_syslog_truncated
                    .get_or_create(&label)
                    .inc_by(counts.truncated);
            }
            true
        }
        // Counted, and written as a gap record, by the WAL's drop_newest policy.
        Err(gapless_wal::Error::DroppedNewest { .. }) => true,
        Err(e) => {
            tracing::error!(source = ctx.encoder.source(), error = %e, "append failed");
            false
        }
    }
}

/// Appends `batch` and waits until it is durable; see [`settle`].
async fn append(ctx: &SourceContext, events: Events<'_>, batch: AppendBatch) -> bool {
    let counts = events.counts(&batch);
    let result = ctx.appender.append(batch).await;
    settle(ctx, &counts, result)
}

#[cfg(test)]
mod proptests;
