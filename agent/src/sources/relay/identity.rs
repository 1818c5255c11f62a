//! Who is speaking to the relay: the credentials a request carries and the agent ids they
//! may speak for.
//!
//! - A shared bearer token (`auth.bearer_token[_file]`): any holder may claim any agent id.
//! - A per-agent token (`auth.agent_tokens_file`, lines `<agent id> <token>`, `#` comments):
//!   it speaks for its agent id only. The file is read again when it changes.
//! - A client certificate (`tls.ca_file`): the connection speaks only for the
//!   certificate's subjectAltName DNS names.
//!
//! Every configured mechanism must pass; the ids a request may claim are those every
//! binding one allows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The connection a request came over: its address and the agent ids its client
/// certificate names (none without one).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The certificate's subjectAltName DNS names, when the relay asks for certificates.
    pub cert_names: Option<Arc<Vec<String>>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            cert_names: None,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The subjectAltName DNS names of a certificate (an unparsable one names nothing).
pub fn cert_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A TLS listener: TCP connections are accepted and their handshakes run concurrently (a
/// slow client holds up only itself); finished ones are handed to the HTTP server with the
/// names of their client certificate.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` with `acceptor`; `certs_required`: whether the relay asks
    /// for client certificates (then their names are the connection's identity).
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor, certs_required: bool) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "relay: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %addr, error = %e, "relay: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(peer = %addr, "relay: TLS handshake timed out");
                            return;
                        }
                    };
                    let cert_names = certs_required.then(|| {
                        Arc::new(
                            stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(cert_dns_names)
                                .unwrap_or_default(),
                        )
                    });
                    let _ = ready.send((stream, Peer { addr, cert_names })).await;
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accepting task ends only with the listener; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            cert_names: None,
        })
    }
}

/// `auth.agent_tokens_file`, read again when its modification time or size changes.
pub struct AgentTokens {
    path: Option<PathBuf>,
    cached: Mutex<TokenCache>,
}

/// The tokens last read, and the file's modification time and size then.
#[derive(Default)]
struct TokenCache {
    stamp: Option<(SystemTime, u64)>,
    tokens: Arc<HashMap<String, String>>,
}

impl AgentTokens {
    /// The tokens in `path` (none: no per-agent tokens).
    pub fn new(path: Option<PathBuf>) -> Self {
        AgentTokens {
            path,
            cached: Mutex::new(TokenCache::default()),
        }
    }

    /// Whether per-agent tokens are configured.
    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// The agent id `token` speaks for, if it is one of the file's.
    pub fn agent_of(&self, token: &str) -> Option<String> {
        let map = self.current();
        map.get(token).cloned()
    }

    fn current(&self) -> Arc<HashMap<String, String>> {
        let Some(path) = &self.path else {
            return Arc::default();
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if stamp.is_some() && cached.stamp == stamp {
            return cached.tokens.clone();
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let map = parse_agent_tokens(&text);
                tracing::info!(path = %path.display(), agents = map.len(), "relay: per-agent tokens loaded");
                *cached = TokenCache {
                    stamp,
                    tokens: Arc::new(map),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A deleted file revokes its tokens.
                if !cached.tokens.is_empty() {
                    tracing::error!(path = %path.display(), "relay: agent_tokens_file is gone; no per-agent token is valid until it is back");
                }
                *cached = TokenCache::default();
            }
            Err(e) => {
                // Keep the tokens last read: a file being replaced must not lock agents out.
                tracing::error!(path = %path.display(), error = %e, "relay: cannot read agent_tokens_file; keeping the tokens last read");
            }
        }
        cached.tokens.clone()
    }
}

/// `<agent id> <token>` per line → token → agent id. Blank lines and `#` comments are
/// skipped, as are lines without both fields.
pub fn parse_agent_tokens(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let agent = parts.next()?;
            let token = parts.next()?;
            Some((token.to_string(), agent.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_tokens_map_each_token_to_its_agent() {
        let map = parse_agent_tokens("# fleet\nweb-1 tok-a\n\n  db-2   tok-b  \nbroken\n");
        assert_eq!(map.get("tok-a").map(String::as_str), Some("web-1"));
        assert_eq!(map.get("tok-b").map(String::as_str), Some("db-2"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn a_certificates_dns_names_are_its_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["agent-a".to_string(), "agent-a.fleet".into()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let names = cert_dns_names(cert.der());
        assert_eq!(names, vec!["agent-a".to_string(), "agent-a.fleet".into()]);
    }
}
