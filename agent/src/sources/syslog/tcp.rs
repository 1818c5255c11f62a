//! The TCP and TLS listener: accepts up to `max_connections` connections and runs each as
//! read one batch → append → await durability → read again (the rule in the module doc of
//! `syslog`). Connections beyond the limit are closed at once, counted in
//! `gapless_source_refused_connections_total` and logged once per burst. At shutdown (and
//! reload) each connection first reads what has already arrived — until it is quiet for
//! 100 ms, at most 1 s — appends it, and only then closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use gapless_wal::AppendBatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::framing::Decoder;
use super::{append, Events, READ_CHUNK};
use crate::config::{SyslogMode, SyslogSourceConfig};
use crate::metrics::SourceLabel;
use crate::sources::SourceContext;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for connections to append the batch in hand.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// At shutdown, a connection is read until it has been quiet this long …
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// … or for at most this long.
const DRAIN_CONNECTION: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown.
pub(super) async fn run(ctx: SourceContext, config: SyslogSourceConfig) -> crate::Result<()> {
    let acceptor = match (&config.mode, &config.tls) {
        (SyslogMode::Tls, Some(tls)) => {
            Some(TlsAcceptor::from(super::tls::server_config(tls).map_err(
                |e| crate::Error::io("load syslog tls", e.key, std::io::Error::other(e.reason)),
            )?))
        }
        _ => None,
    };
    let listener = TcpListener::bind(config.address)
        .await
        .map_err(|e| crate::Error::io("bind syslog source", config.address.to_string(), e))?;
    tracing::info!(source = ctx.encoder.source(), address = %config.address, mode = ?config.mode, "syslog source listening");
    ctx.mark_started();
    let active = Arc::new(AtomicUsize::new(0));
    let mut refusing = false;
    let mut connections = JoinSet::new();
    let mut shutdown = ctx.clone();
    loop {
        tokio::select! {
            () = shutdown.stopped() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, usually: wait for some to come back.
                        tracing::warn!(source = ctx.encoder.source(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if active.load(Ordering::Relaxed) >= config.max_connections {
                    ctx.metrics
                        .source_refused_connections
                        .get_or_create(&SourceLabel { source: ctx.encoder.source().to_string() })
                        .inc();
                    if !refusing {
                        tracing::warn!(source = ctx.encoder.source(), %peer, max_connections = config.max_connections, "refusing connections over max_connections");
                        refusing = true;
                    }
                    drop(stream);
                    continue;
                }
                refusing = false;
                let _ = stream.set_nodelay(true);
                active.fetch_add(1, Ordering::Relaxed);
                let guard = Active(active.clone());
                let ctx = ctx.clone();
                let acceptor = acceptor.clone();
                let decoder = Decoder::new(config.framing, config.max_message_bytes);
                connections.spawn(async move {
                    let _guard = guard;
                    match acceptor {
                        None => serve(&ctx, stream, peer, decoder).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => serve(&ctx, tls, peer, decoder).await,
                                Ok(Err(e)) => tracing::warn!(source = ctx.encoder.source(), %peer, error = %e, "tls handshake failed"),
                                Err(_) => tracing::warn!(source = ctx.encoder.source(), %peer, "tls handshake timed out"),
                            }
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    // Each connection stops reading and appends what it has in hand.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Decrements the connection count when a connection ends.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads one connection until it closes, fails, or the agent stops: one read, the frames
/// it completes appended and durable, then the next read.
async fn serve(
    ctx: &SourceContext,
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    peer: SocketAddr,
    mut decoder: Decoder,
) {
    let peer_text = peer.to_string();
    let mut shutdown = ctx.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // Set when the agent stops: until then, the connection is read for what has already
    // arrived (closing a socket with unread bytes resets it and the kernel discards them).
    let mut drain_until: Option<Instant> = None;
    loop {
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        let read = match drain_until {
            Some(deadline) => {
                let quiet = DRAIN_QUIET.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::timeout(quiet, stream.read(&mut buf[start..]))
                    .await
                    .unwrap_or(Ok(0))
            }
            None => tokio::select! {
                r = stream.read(&mut buf[start..]) => r,
                () = shutdown.stopped() => {
                    drain_until = Some(Instant::now() + DRAIN_CONNECTION);
                    buf.truncate(start);
                    continue;
                }
            },
        };
        let (n, eof) = match read {
            Ok(0) => (0, true),
            Ok(n) => (n, false),
            Err(e) => {
                tracing::debug!(source = ctx.encoder.source(), peer = %peer_text, error = %e, "syslog connection failed");
                (0, true)
            }
        };
        buf.truncate(start + n);
        let mut events = Events::new(ctx);
        let mut batch = AppendBatch::with_capacity(64, buf.len() * 2 + 256);
        decoder.decode(&mut buf, eof, |frame, truncated| {
            events.push(&mut batch, frame, truncated, &peer_text);
        });
        if !batch.is_empty() && !append(ctx, events, batch).await {
            return;
        }
        if eof {
            // TLS: a close_notify, so that the client sees a clean end.
            let _ = stream.shutdown().await;
            return;
        }
    }
}
