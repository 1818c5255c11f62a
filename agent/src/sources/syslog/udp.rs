//! The UDP socket: one datagram is one message. Reads what the kernel has queued in
//! batches (one wait, then whatever else is already there) and keeps up to
//! [`MAX_IN_FLIGHT`] batches appending at once, filling the next one meanwhile, so that the
//! socket is drained while the WAL syncs; while one appends, the next goes out only once it
//! holds [`MIN_BATCH_IN_FLIGHT`] datagrams (a write per handful of datagrams halved the
//! rate). UDP has no acknowledgement to hold back; the
//! bound (at most 5 batches of 16,384 events or 8 MiB) keeps memory bounded when the WAL
//! blocks, and then the kernel drops and counts. Datagrams the kernel drops while the socket
//! buffer is full are read from the socket's `drops` counter in `/proc/net/udp` (or `udp6`)
//! every second and written as a `source_overflow` gap record.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use gapless_wal::{AppendBatch, PendingAppend};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{settle, Counts, Events};
use crate::config::SyslogSourceConfig;
use crate::sources::SourceContext;

/// The most datagrams appended as one batch.
const BATCH: usize = 16384;
/// The most payload bytes of one batch.
const BATCH_BYTES: usize = 8 << 20;
/// A batch goes out while another is appending only once it holds this many.
const MIN_BATCH_IN_FLIGHT: usize = 1024;
/// The most batches appending at once.
const MAX_IN_FLIGHT: usize = 4;
/// How often the kernel's drop counter is read.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

fn bind(config: &SyslogSourceConfig) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(config.address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(config.receive_buffer_bytes)?;
    socket.set_nonblocking(true)?;
    socket.bind(&config.address.into())?;
    // Linux caps SO_RCVBUF at net.core.rmem_max (and reports twice what it keeps).
    if let Ok(got) = socket.recv_buffer_size() {
        if got < config.receive_buffer_bytes {
            tracing::warn!(
                address = %config.address,
                asked = config.receive_buffer_bytes,
                got,
                "the kernel kept a smaller UDP receive buffer than receive_buffer_bytes; raise net.core.rmem_max"
            );
        }
    }
    UdpSocket::from_std(socket.into())
}

/// The socket's inode, which names it in `/proc/net/udp`.
fn inode(socket: &UdpSocket) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let link = link.to_str()?;
    Some(
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .to_string(),
    )
}

/// The kernel's count of datagrams dropped on the socket `inode`.
fn kernel_drops(inode: &str) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(9) == Some(&inode) {
                    fields.last()?.parse().ok()
                } else {
                    None
                }
            })
        })
}

/// Reads datagrams until shutdown.
pub(super) async fn run(ctx: SourceContext, config: SyslogSourceConfig) -> crate::Result<()> {
    let socket = bind(&config)
        .map_err(|e| crate::Error::io("bind syslog source", config.address.to_string(), e))?;
    let inode = inode(&socket);
    if inode.is_none() {
        tracing::warn!(
            source = ctx.encoder.source(),
            "cannot find the socket in /proc/net/udp: kernel drops will not be reported"
        );
    }
    let mut seen = inode.as_deref().and_then(kernel_drops).unwrap_or(0);
    tracing::info!(source = ctx.encoder.source(), address = %config.address, "syslog source listening (udp)");
    ctx.mark_started();
    let max = config.max_message_bytes.min(MAX_DATAGRAM);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut tick = tokio::time::interval(DROPS_INTERVAL);
    let mut shutdown = ctx.clone();
    let mut in_flight: VecDeque<(PendingAppend, Counts)> = VecDeque::new();
    // The batch being filled: while appends are in flight, datagrams gather here, so that
    // the batches grow with the WAL's latency.
    let mut events = Events::new(&ctx);
    let mut batch = AppendBatch::with_capacity(256, 64 << 10);
    loop {
        let (busy, room) = (
            !in_flight.is_empty(),
            batch.len() < BATCH && batch.payload_bytes() < BATCH_BYTES,
        );
        tokio::select! {
            () = shutdown.stopped() => {
                for (pending, counts) in in_flight {
                    settle(&ctx, &counts, pending.await);
                }
                if !batch.is_empty() {
                    let counts = events.counts(&batch);
                    settle(&ctx, &counts, ctx.appender.append(batch).await);
                }
                return Ok(());
            }
            Some(done) = first_done(&mut in_flight), if busy => {
                if let Some((_, counts)) = in_flight.pop_front() {
                    if !settle(&ctx, &counts, done) {
                        return Ok(());
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(now) = inode.as_deref().and_then(kernel_drops) {
                    if now > seen {
                        report_drops(&ctx, now - seen).await?;
                    }
                    seen = now;
                }
            }
            first = socket.recv_from(&mut buf), if room => {
                let mut received = first;
                loop {
                    match received {
                        Ok((n, peer)) => push(&mut events, &mut batch, &buf[..n], max, peer),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(source = ctx.encoder.source(), error = %e, "udp receive failed");
                            break;
                        }
                    }
                    if batch.len() >= BATCH || batch.payload_bytes() >= BATCH_BYTES {
                        break;
                    }
                    received = socket.try_recv_from(&mut buf);
                }
            }
        }
        // A small batch waits while another is appending: it grows instead of costing a
        // write of its own.
        let worth = in_flight.is_empty() || batch.len() >= MIN_BATCH_IN_FLIGHT;
        if !batch.is_empty() && worth && in_flight.len() < MAX_IN_FLIGHT {
            let full = std::mem::replace(&mut batch, AppendBatch::with_capacity(256, 64 << 10));
            let counts = std::mem::replace(&mut events, Events::new(&ctx)).counts(&full);
            match ctx.appender.enqueue(full) {
                Ok(pending) => in_flight.push_back((pending, counts)),
                Err(e) => {
                    settle(&ctx, &counts, Err(e));
                    return Ok(());
                }
            }
        }
    }
}

/// The result of the oldest append in flight, once it completes (it stays queued; the
/// caller pops it).
async fn first_done(
    in_flight: &mut VecDeque<(PendingAppend, Counts)>,
) -> Option<gapless_wal::Result<gapless_wal::SeqRange>> {
    let (pending, _) = in_flight.front_mut()?;
    Some(pending.await)
}

fn push(
    events: &mut Events<'_>,
    batch: &mut AppendBatch,
    datagram: &[u8],
    max: usize,
    peer: SocketAddr,
) {
    let truncated = datagram.len() > max;
    let message = &datagram[..datagram.len().min(max)];
    let message = message.strip_suffix(b"\0").unwrap_or(message);
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    let message = message.strip_suffix(b"\r").unwrap_or(message);
    if message.is_empty() {
        return;
    }
    events.push(batch, message, truncated, &peer.to_string());
}

/// Appends a `source_overflow` gap record for `dropped` datagrams and counts them.
async fn report_drops(ctx: &SourceContext, dropped: u64) -> crate::Result<()> {
    tracing::warn!(
        source = ctx.encoder.source(),
        dropped,
        "the kernel dropped syslog datagrams (socket buffer full)"
    );
    let now = crate::event::unix_nanos_now();
    let gap = gapless_wal::Gap {
        reason: gapless_wal::GapReason::SourceOverflow,
        seqs: None,
        records: dropped,
        bytes: 0,
        from: now,
        to: now,
    };
    let mut batch = AppendBatch::new();
    batch.push_gap(&gap);
    ctx.appender.append(batch).await?;
    ctx.metrics
        .dropped_events
        .get_or_create(&crate::metrics::ReasonLabel {
            reason: "source_overflow".into(),
        })
        .inc_by(dropped);
    Ok(())
}
