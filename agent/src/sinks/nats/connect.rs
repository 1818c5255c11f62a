//! The connection of a `nats` sink: one `async-nats` client and its JetStream context,
//! made at the first request and kept. Credentials (a token or a `.creds` file) are read
//! at each connect, never logged; TLS comes from the sink's `tls` keys. Once connected the
//! client reconnects by itself — to any server of `url` or of the cluster it learned of —
//! so a lost connection costs the requests in flight (retried, then de-duplicated by the
//! stream), never the connection object. A connect that fails is an `Answer::Retry`, with
//! an alarm when a person must act (credentials, TLS).

use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, ConnectOptions, Event};

use crate::config::NatsConfig;
use crate::sinks::delivery::Answer;

/// Builds the client options from the config, reading the credentials now.
async fn options(name: &str, cfg: &NatsConfig) -> Result<ConnectOptions, Answer> {
    let refused = |why: String| Answer::Retry {
        wait: None,
        why,
        alarm: true,
    };
    let mut opts = ConnectOptions::new();
    if let Some(path) = &cfg.auth.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|e| {
            refused(format!(
                "cannot read auth.credentials_file {}: {e}",
                path.display()
            ))
        })?;
    }
    if let Some(path) = &cfg.auth.token_file {
        let token = std::fs::read_to_string(path).map_err(|e| {
            refused(format!(
                "cannot read auth.token_file {}: {e}",
                path.display()
            ))
        })?;
        opts = opts.token(token.trim().to_string());
    }
    let tls = &cfg.delivery.tls;
    if let Some(ca) = &tls.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let sink = name.to_string();
    let timeout = cfg.delivery.request_timeout;
    Ok(opts
        .name(format!("gapless {name}"))
        .connection_timeout(timeout.min(Duration::from_secs(10)))
        .request_timeout(Some(timeout))
        // Room for whole requests published before their acks are awaited.
        .client_capacity(pipeline_depth(cfg).max(2048))
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                match event {
                    Event::Connected => tracing::info!(sink = %sink, "connected to NATS"),
                    Event::Disconnected => {
                        tracing::warn!(sink = %sink, "disconnected from NATS; reconnecting (requests in flight are sent again)")
                    }
                    Event::Closed => tracing::info!(sink = %sink, "NATS connection closed"),
                    other => tracing::warn!(sink = %sink, event = %other, "NATS connection event"),
                }
            }
        }))
}

/// How many acknowledgements one request may await at once: enough to keep the server busy
/// (a round trip per 1,024 messages), few enough that memory does not grow with the batch
/// size (each pending ack holds its message in the client's queue and a reply slot).
pub(super) fn pipeline_depth(cfg: &NatsConfig) -> usize {
    const MAX_ACKS_IN_FLIGHT: usize = 1024;
    cfg.delivery.batch_max_events.clamp(1, MAX_ACKS_IN_FLIGHT)
}

/// Connects to the servers of `url` and makes the JetStream context publishes go through.
pub(super) async fn connect(name: &str, cfg: &NatsConfig) -> Result<jetstream::Context, Answer> {
    let opts = options(name, cfg).await?;
    let servers = cfg.urls.join(",");
    let client = opts.connect(cfg.urls.as_slice()).await.map_err(|e| {
        let alarm = matches!(
            e.kind(),
            ConnectErrorKind::Authentication
                | ConnectErrorKind::AuthorizationViolation
                | ConnectErrorKind::Tls
                | ConnectErrorKind::ServerParse
        );
        Answer::Retry {
            wait: None,
            why: format!("cannot connect to NATS ({servers}): {e}"),
            alarm,
        }
    })?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(cfg.delivery.request_timeout)
        .max_ack_inflight(pipeline_depth(cfg))
        .backpressure_on_inflight(true)
        .build(client))
}
