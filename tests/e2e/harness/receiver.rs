//! [`Receiver`]: the remote logging platform, played by a small HTTP/1.1 server on
//! 127.0.0.1 (optionally HTTPS) that records every request and answers as its [`Mode`]
//! says — 200, any status, 429 with `Retry-After`, a reset connection, a stalled one, 413
//! over a batch size, a slow 200, or a status for every request that carries events
//! other than gap records. The mode can be switched at any time, or scripted
//! request by request.
//!
//! It speaks HTTP/1.1 itself ([`super::http1`]) so that it can misbehave at the connection
//! level: every accepted socket has `SO_LINGER` 0, so dropping it sends a TCP reset.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::certs::ServerCert;
use super::http1::{decode_body, raw_events, read_request, write_response, RawRequest};
use super::lines::lines_in;

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200.
    Ok,
    /// This status: 500/503 for an outage, 400 for a permanent rejection, 401, …
    Status(u16),
    /// 429 with `Retry-After: <retry_after_secs>`.
    TooManyRequests {
        /// The header's value, in seconds.
        retry_after_secs: u64,
    },
    /// Reads the request, then resets the connection without answering.
    Reset,
    /// Reads the request and never answers (until the client gives up and closes).
    Stall,
    /// 413 for a request of more than `max_events` events, 200 otherwise.
    TooLarge {
        /// The largest batch taken.
        max_events: usize,
    },
    /// 200 after this delay.
    Slow(Duration),
    /// This status (400: a permanent rejection) for a request holding any event that is
    /// not a gap record, 200 for one holding gap records only: a platform refusing these
    /// events but taking the agent's notices about them.
    RejectEvents {
        /// The status for requests with events.
        status: u16,
    },
    /// Request after request takes the next of these modes, round and round.
    Cycle(Vec<Mode>),
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Being answered (a [`Mode::Slow`] delay) or about to be.
    Pending,
    /// Answered with this status.
    Answered(u16),
    /// The connection was reset instead of answering.
    Reset,
    /// Never answered.
    Stalled,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its last byte arrived.
    pub arrived: Instant,
    /// When the answer was written, if it was.
    pub answered: Option<Instant>,
    /// `POST`, …
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body, gunzipped and split into events (NDJSON lines or JSON array elements).
    pub events: Vec<Value>,
    /// The same events as the text that arrived, byte for byte.
    pub raw_events: Vec<String>,
    /// Why the body could not be decoded, if it could not.
    pub body_error: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
}

impl Request {
    /// Whether it was answered 2xx.
    pub fn accepted(&self) -> bool {
        matches!(self.outcome, Outcome::Answered(s) if (200..300).contains(&s))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `gapless-seq-range` header as `(first, last)`.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let (a, b) = self.header("gapless-seq-range")?.split_once('-')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    }
}

struct State {
    mode: Mutex<Mode>,
    script: Mutex<VecDeque<Mode>>,
    cycle: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    handshake_failures: AtomicUsize,
}

/// What to do with one request, its mode resolved.
enum Action {
    Answer {
        status: u16,
        retry_after: Option<u64>,
        delay: Duration,
    },
    Reset,
    Stall,
}

impl State {
    /// `events` is how many events the request holds, `plain` whether any of them is not
    /// a gap record.
    fn action(&self, events: usize, plain: bool) -> Action {
        let scripted = self.script.lock().unwrap().pop_front();
        let mode = scripted.unwrap_or_else(|| self.mode.lock().unwrap().clone());
        let mode = match mode {
            Mode::Cycle(modes) => {
                assert!(!modes.is_empty(), "an empty Mode::Cycle");
                let i = self.cycle.fetch_add(1, Ordering::Relaxed) % modes.len();
                modes[i].clone()
            }
            other => other,
        };
        let answer = |status| Action::Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
        };
        match mode {
            Mode::Ok => answer(200),
            Mode::Status(s) => answer(s),
            Mode::TooManyRequests { retry_after_secs } => Action::Answer {
                status: 429,
                retry_after: Some(retry_after_secs),
                delay: Duration::ZERO,
            },
            Mode::Reset => Action::Reset,
            Mode::Stall => Action::Stall,
            Mode::TooLarge { max_events } => answer(if events > max_events { 413 } else { 200 }),
            Mode::Slow(delay) => Action::Answer {
                status: 200,
                retry_after: None,
                delay,
            },
            Mode::RejectEvents { status } => answer(if plain { status } else { 200 }),
            Mode::Cycle(_) => panic!("a Mode::Cycle inside a Mode::Cycle"),
        }
    }

    fn push(&self, request: Request) -> usize {
        let mut requests = self.requests.lock().unwrap();
        requests.push(request);
        requests.len() - 1
    }

    fn finish(&self, index: usize, outcome: Outcome) {
        let mut requests = self.requests.lock().unwrap();
        requests[index].outcome = outcome;
        if matches!(outcome, Outcome::Answered(_)) {
            requests[index].answered = Some(Instant::now());
        }
    }
}

/// The misbehaving platform. Stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// An HTTP receiver answering in `mode`.
    pub async fn start(mode: Mode) -> Receiver {
        Self::bind(mode, None).await
    }

    /// An HTTPS receiver presenting `cert`.
    pub async fn start_tls(mode: Mode, cert: &ServerCert) -> Receiver {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .expect("a TLS server config");
        Self::bind(mode, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn bind(mode: Mode, tls: Option<TlsAcceptor>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            script: Mutex::new(VecDeque::new()),
            cycle: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            handshake_failures: AtomicUsize::new(0),
        });
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(listener, tls, state.clone()));
        Receiver {
            addr,
            tls: is_tls,
            state,
            task,
        }
    }

    /// The URI to configure as the sink's `uri`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/ingest", self.addr)
    }

    /// Switches how requests from now on are answered (after any scripted ones).
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
        self.state.cycle.store(0, Ordering::Relaxed);
    }

    /// The next requests are answered by these modes, one each, before the current mode
    /// applies again.
    pub fn script(&self, modes: impl IntoIterator<Item = Mode>) {
        self.state.script.lock().unwrap().extend(modes);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every event of every request answered 2xx, duplicates included, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| r.events.iter().cloned())
            .collect()
    }

    /// Every event of every request answered 2xx as the text that arrived, byte for byte,
    /// duplicates included, in arrival order.
    pub fn raw_events(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| r.raw_events.iter().cloned())
            .collect()
    }

    /// The events answered 2xx, one per `seq`, in `seq` order.
    pub fn unique_events(&self) -> Vec<Value> {
        let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
        for e in self.events() {
            let seq = e["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("an event without a numeric seq: {e}"));
            by_seq.entry(seq).or_insert(e);
        }
        by_seq.into_values().collect()
    }

    /// The `gapless-seq-range` of every request answered 2xx, in arrival order.
    pub fn accepted_seq_ranges(&self) -> Vec<(u64, u64)> {
        self.requests()
            .iter()
            .filter(|r| r.accepted())
            .map(|r| {
                r.seq_range().unwrap_or_else(|| {
                    panic!("a request without gapless-seq-range: {:?}", r.headers)
                })
            })
            .collect()
    }

    /// TLS handshakes that failed (e.g. the client refused our certificate).
    pub fn handshake_failures(&self) -> usize {
        self.state.handshake_failures.load(Ordering::Relaxed)
    }

    /// Requests so far, by outcome, for failure messages.
    pub fn summary(&self) -> String {
        let requests = self.requests();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &requests {
            *counts.entry(format!("{:?}", r.outcome)).or_default() += 1;
        }
        format!(
            "{} requests {counts:?}, {} TLS handshake failures",
            requests.len(),
            self.handshake_failures()
        )
    }

    /// Waits until at least `n` distinct events (by `seq`) were answered 2xx.
    pub async fn wait_for_events(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.unique_events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {n} events; {} arrived; {}",
                events.len(),
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every one of `expected` arrived as the `message` of an event answered
    /// 2xx; on timeout panics saying how many are missing and which.
    pub async fn wait_for_lines(&self, expected: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived: BTreeSet<String> = lines_in(&self.events()).into_iter().collect();
            let missing: Vec<&String> = expected.iter().filter(|l| !arrived.contains(*l)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?}: {} of {} lines never arrived (first: {:?}, last: {:?}); {}",
                missing.len(),
                expected.len(),
                missing.first(),
                missing.last(),
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until some request satisfies `pred` and returns it.
    pub async fn wait_for_request(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Request) -> bool,
    ) -> Request {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for a request that {what}; {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // Dropping the socket then sends RST rather than FIN: a real reset.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                let state = state.clone();
                match tls.clone() {
                    Some(acceptor) => connections.spawn(async move {
                        match acceptor.accept(tcp).await {
                            Ok(stream) => serve(stream, state).await,
                            Err(_) => {
                                state.handshake_failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }),
                    None => connections.spawn(serve(tcp, state)),
                };
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves the requests of one connection until the client closes it or the mode says
/// to reset or stall.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, state: Arc<State>) {
    let mut conn = BufReader::new(stream);
    loop {
        let Ok(Some(RawRequest {
            method,
            path,
            headers,
            body,
        })) = read_request(&mut conn).await
        else {
            return;
        };
        let (events, body_error) = match decode_body(&headers, &body) {
            Ok(events) => (events, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let raw_events = raw_events(&headers, &body).unwrap_or_default();
        let n_events = events.len();
        let plain = events.iter().any(|e| e["gapless"] != "gap");
        let index = state.push(Request {
            arrived: Instant::now(),
            answered: None,
            method,
            path,
            headers,
            events,
            raw_events,
            body_error,
            outcome: Outcome::Pending,
        });
        match state.action(n_events, plain) {
            Action::Answer {
                status,
                retry_after,
                delay,
            } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if write_response(conn.get_mut(), status, retry_after)
                    .await
                    .is_err()
                {
                    state.finish(index, Outcome::Reset);
                    return;
                }
                state.finish(index, Outcome::Answered(status));
            }
            Action::Reset => {
                state.finish(index, Outcome::Reset);
                return;
            }
            Action::Stall => {
                state.finish(index, Outcome::Stalled);
                // Hold the connection until the client gives up.
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink).await;
                return;
            }
        }
    }
}
