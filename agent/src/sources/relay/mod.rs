//! The relay's intake, `type = "gapless"`: batches POSTed by other agents' `gapless`
//! sinks, stored in this agent's WAL with their origin, and passed on by its own sinks.
//!
//! A request is taken only from an authenticated agent ([`identity`]) and answered 200
//! only once its events are durable here. Each event keeps its origin: it is stored as
//! `{"origin_agent_id":…,"origin_seq":…, <the agent's fields but its seq>}`, and the agent's
//! gap records, heartbeats and dead-letter notices keep their top-level `gapless` marker —
//! the one place where records from outside may carry it (a client of an agent's own http
//! source never can: the agent moves its `gapless`, `origin_agent_id` and `origin_seq`
//! under `client_fields`). Events the relay already holds (the agent sent its batch again)
//! are skipped ([`dedup`]). When a request's `Gapless-Seq-Range` has seqs without an event
//! (the agent's sink takes only some sources), a record
//! `{"gapless":"range","origin_agent_id":…,"first_seq":a,"last_seq":b}` is stored after its
//! events, so that a platform can tell those seqs from lost ones (`gapless verify-stream`
//! checks each origin agent).
//!
//! Answers: 200 `{"accepted":n,"duplicates":d}`; 400 a request that is not a gapless
//! sink's (headers, a line that is not an object with one integer `seq` inside the range,
//! seqs not increasing, an event that already carries origin fields, a `gapless` marker
//! other than `gap`/`heartbeat`); 401 missing or wrong credentials (checked before the body
//! is read); 403 an agent id the credentials may not speak for; 408 a body that did not
//! arrive within 30 s; 413 over `max_body_bytes`; 415 an unknown `Content-Encoding`; 503
//! with `Retry-After` when the WAL or the disk is full; 500 when an append failed otherwise.

pub mod dedup;
pub mod identity;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use gapless_wal::{AppendBatch, Wal};
use serde_json::json;

use self::dedup::Dedup;
use self::identity::{AgentTokens, Peer, TlsListener};
use crate::client_json::{self, ClientObject, Item};
use crate::config::GaplessSourceConfig;
use crate::event::{write_json_str, Timestamp};
use crate::metrics::SourceLabel;
use crate::reserved::{GAPLESS, ORIGIN_AGENT_ID, ORIGIN_SEQ, ORIGIN_WAL_ID};
use crate::sources::http::{answer, append_failed, busy, decode_body, Refusal};
use crate::sources::SourceContext;

/// The longest agent id taken.
const MAX_AGENT_ID: usize = 256;
/// The longest `Gapless-Wal-Id` taken (an agent sends a UUID).
const MAX_WAL_ID: usize = 64;
/// How long the body of a request may take to arrive once its turn came.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

struct Relay {
    ctx: SourceContext,
    max_body_bytes: usize,
    shared_token: Option<String>,
    agent_tokens: AgentTokens,
    seen: Dedup,
    prefix: Vec<u8>,
    /// Requests whose bodies are read and worked on at once: the relay's memory is bounded
    /// by it and `max_body_bytes`, not by how many agents send at once (the others wait,
    /// their bodies unread).
    working: Arc<tokio::sync::Semaphore>,
}

/// How many requests a relay source reads and works on at once.
pub const REQUESTS_AT_ONCE: usize = 8;

/// Serves the relay source until shutdown.
pub async fn run(
    ctx: SourceContext,
    config: GaplessSourceConfig,
    wal: Arc<Wal>,
) -> crate::Result<()> {
    let shared_token = config.auth.token().map_err(|e| {
        crate::Error::io(
            "read bearer_token_file",
            config.auth.bearer_token_file.clone().unwrap_or_default(),
            e,
        )
    })?;
    let seen = {
        let (dir, name, wal, window) = (
            ctx.state_dir.clone(),
            ctx.name.clone(),
            wal.clone(),
            config.dedup_window,
        );
        tokio::task::spawn_blocking(move || Dedup::load(&dir, &name, &wal, window))
            .await
            .map_err(|e| {
                crate::Error::io("load relay state", &ctx.state_dir, std::io::Error::other(e))
            })?
    };
    if wal.options().durability != gapless_wal::Durability::Always {
        tracing::warn!(source = %ctx.name, "wal.durability is not \"always\": this relay answers agents 200 before their events are synced, so a power cut of the relay may lose events the agents no longer hold");
    }
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|e| crate::Error::io("bind gapless source", config.address.to_string(), e))?;
    let name = ctx.encoder.source().as_bytes();
    let name = &name[..name.len().min(255)];
    let mut prefix = vec![name.len() as u8];
    prefix.extend_from_slice(name);
    let relay = Arc::new(Relay {
        ctx: ctx.clone(),
        max_body_bytes: config.max_body_bytes,
        shared_token,
        agent_tokens: AgentTokens::new(config.agent_tokens_file.clone()),
        seen,
        prefix,
        working: Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE)),
    });
    // The de-duplication snapshot, about once a second while requests come.
    let snapshots = {
        let relay = relay.clone();
        let wal = wal.clone();
        tokio::spawn(async move {
            let mut written = u64::MAX;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let next = wal.next_seq();
                if next == written {
                    continue;
                }
                match relay.seen.snapshot(&wal).await {
                    Ok(agents) => {
                        written = next;
                        relay
                            .ctx
                            .metrics
                            .source_relay_agents
                            .get_or_create(&relay.label())
                            .set(agents as i64);
                    }
                    Err(e) => {
                        tracing::warn!(source = %relay.ctx.name, error = %e, "relay: cannot write the de-duplication snapshot; retrying")
                    }
                }
            }
        })
    };
    let app = Router::new()
        .route(&config.path, post(ingest))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(relay.clone());
    let mut shutdown = ctx.clone();
    let stop = async move { shutdown.stopped().await };
    tracing::info!(source = ctx.encoder.source(), address = %config.address, tls = config.tls.is_some(), client_certificates = config.tls.as_ref().is_some_and(|t| t.ca_file.is_some()), "gapless (relay) source listening");
    ctx.mark_started();
    let served = match &config.tls {
        None => {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            let mut server = (*crate::sources::syslog::server_config(tls).map_err(|e| {
                crate::Error::io(
                    "load relay TLS",
                    config.address.to_string(),
                    std::io::Error::other(e.reason),
                )
            })?)
            .clone();
            server.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let listener = TlsListener::new(listener, acceptor, tls.ca_file.is_some());
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop)
                .await
        }
    };
    snapshots.abort();
    // What was stored is recorded for the next start.
    if let Err(e) = relay.seen.snapshot(&wal).await {
        tracing::warn!(source = %ctx.name, error = %e, "relay: cannot write the de-duplication snapshot at shutdown; the WAL is read back at start instead");
    }
    served.map_err(|e| crate::Error::io("serve gapless source", config.address.to_string(), e))
}

impl Relay {
    fn label(&self) -> SourceLabel {
        SourceLabel {
            source: self.ctx.encoder.source().to_string(),
        }
    }

    fn count_duplicates(&self, n: u64) {
        if n > 0 {
            self.ctx
                .metrics
                .source_relay_duplicates
                .get_or_create(&self.label())
                .inc_by(n);
        }
    }
}

async fn ingest(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
) -> Response {
    let headers = request.headers().clone();
    let resp = match admit(&relay, &peer, &headers) {
        Ok(admitted) => read_and_store(&relay, admitted, headers, request).await,
        Err(refusal) => {
            // Read what the client is still sending (without keeping it), so that it gets
            // the answer rather than a connection reset in the middle of its body.
            drain(request.into_body(), relay.max_body_bytes).await;
            refusal.into_response()
        }
    };
    let mut resp = resp;
    if matches!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        // The body may not have been read to its end: the connection cannot carry another
        // request, and the client must know not to reuse it.
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    if !resp.status().is_success() {
        relay
            .ctx
            .metrics
            .source_rejected
            .get_or_create(&relay.label())
            .inc();
        tracing::debug!(source = %relay.ctx.name, peer = %peer.addr, status = resp.status().as_u16(), "relay: request refused");
    }
    resp
}

/// Reads and drops a refused request's body: up to `limit` bytes, within [`BODY_TIMEOUT`].
async fn drain(body: axum::body::Body, limit: usize) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(BODY_TIMEOUT, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > limit {
                break;
            }
        }
    })
    .await;
}

/// Reads the body of an admitted request — with a permit, so that the relay's memory does
/// not grow with the agents sending at once, and within [`BODY_TIMEOUT`] — and stores it.
async fn read_and_store(
    relay: &Arc<Relay>,
    admitted: Admitted,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let Ok(permit) = relay.working.clone().acquire_owned().await else {
        return busy("the relay is shutting down", 5);
    };
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        <Bytes as axum::extract::FromRequest<()>>::from_request(request, &()),
    )
    .await;
    let Ok(body) = body else {
        return answer(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
        );
    };
    match body {
        Ok(body) => {
            // Once read, a request runs to its end even if the agent goes away meanwhile
            // (its connection closed, it was killed): an append it started is then recorded
            // as held, or the agent's resend would be stored twice.
            let r = relay.clone();
            let work = tokio::spawn(async move {
                let _permit = permit;
                ingest_inner(&r, &admitted, &headers, body).await
            });
            match work.await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!(source = %relay.ctx.name, error = %e, "relay: a request's work failed");
                    answer(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the events could not be stored; retry",
                    )
                }
            }
        }
        // Over `max_body_bytes` by its Content-Length, or while a chunked body was read.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body exceeds max_body_bytes ({} bytes)",
                relay.max_body_bytes
            ),
        ),
        Err(e) => answer(e.status(), e.body_text()),
    }
}

/// Which agent ids a request may speak for: `None` any; `Some(ids)` those. `Err`: the
/// answer refusing it.
fn speaker(
    relay: &Relay,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<Option<Vec<String>>, Refusal> {
    let mut allowed: Option<Vec<String>> = peer.cert_names.as_ref().map(|n| n.to_vec());
    if relay.shared_token.is_some() || relay.agent_tokens.configured() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(given) = given else {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "missing bearer token".into(),
            ));
        };
        if relay.shared_token.as_deref() == Some(given) {
            // A shared token binds no agent id.
        } else if let Some(agent) = relay.agent_tokens.agent_of(given) {
            allowed = Some(match allowed {
                Some(names) => names.into_iter().filter(|n| *n == agent).collect(),
                None => vec![agent],
            });
        } else {
            return Err(Refusal(
                StatusCode::UNAUTHORIZED,
                "wrong bearer token".into(),
            ));
        }
    }
    Ok(allowed)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What the headers of an admitted request say.
struct Admitted {
    agent: String,
    first: u64,
    last: u64,
    /// `Gapless-Wal-Id`, when sent.
    wal_id: Option<String>,
}

/// The checks a request's headers must pass before its body is read: credentials, the
/// agent id they may speak for, the seq range.
fn admit(relay: &Relay, peer: &Peer, headers: &HeaderMap) -> Result<Admitted, Refusal> {
    let allowed = speaker(relay, peer, headers)?;
    let refuse = |status: StatusCode, why: String| Err(Refusal(status, why));
    let Some(agent) = header_utf8(headers, "gapless-agent-id").filter(|a| !a.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing Gapless-Agent-Id: a relay takes the requests of a `gapless` sink".into(),
        );
    };
    if agent.len() > MAX_AGENT_ID || agent.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "Gapless-Agent-Id must be at most {MAX_AGENT_ID} bytes without control characters"
            ),
        );
    }
    if let Some(allowed) = &allowed {
        if !allowed.iter().any(|a| a == agent) {
            let names = if allowed.is_empty() {
                "no agent id".to_string()
            } else {
                allowed.join(", ")
            };
            return refuse(
                StatusCode::FORBIDDEN,
                format!("these credentials speak for {names}, not for agent {agent:?}"),
            );
        }
    }
    let range = header_str(headers, "gapless-seq-range")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b);
    let Some((first, last)) = range else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "missing or invalid Gapless-Seq-Range (\"<first>-<last>\")".into(),
        );
    };
    let wal_id = header_str(headers, "gapless-wal-id").filter(|w| !w.is_empty());
    if wal_id.is_some_and(|w| {
        w.len() > MAX_WAL_ID || w.chars().any(|c| c.is_control() || c == '"' || c == '\\')
    }) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("Gapless-Wal-Id must be at most {MAX_WAL_ID} plain characters"),
        );
    }
    Ok(Admitted {
        agent: agent.to_string(),
        first,
        last,
        wal_id: wal_id.map(str::to_string),
    })
}

/// A header as UTF-8 text (an agent id may be any text), trimmed.
fn header_utf8<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::trim)
}

async fn ingest_inner(
    relay: &Relay,
    admitted: &Admitted,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let (agent, first, last) = (admitted.agent.as_str(), admitted.first, admitted.last);
    let body = match decode_body(headers, &body, relay.max_body_bytes) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("body is not UTF-8 at byte {}", e.valid_up_to()),
            )
        }
    };
    // Parse and check every line before anything is stored.
    let mut events: Vec<(u64, ClientObject<'_>)> = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let at = i + 1;
        let object = match client_json::parse_item(line) {
            Ok(Item::Object(o)) => o,
            Ok(_) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!("line {at}: not a JSON object"),
                )
            }
            Err(e) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!("line {at}: invalid JSON: {e}"),
                )
            }
        };
        let Some(seq) = object.get("seq").and_then(|v| v.get().parse::<u64>().ok()) else {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("line {at}: no integer top-level \"seq\""),
            );
        };
        if seq < first || seq > last {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("line {at}: seq {seq} outside Gapless-Seq-Range {first}-{last}"),
            );
        }
        if events.last().is_some_and(|(prev, _)| *prev >= seq) {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("line {at}: seq {seq} does not follow the line before"),
            );
        }
        if let Some(why) = not_an_agents_record(&object) {
            return answer(StatusCode::BAD_REQUEST, format!("line {at}: {why}"));
        }
        events.push((seq, object));
    }
    let lines = events.len() as u64;

    let _shared = relay.seen.gate.read().await;
    let state = relay.seen.agent(agent);
    let mut seen = state.lock().await;
    Dedup::touch(&mut seen);
    // Without the header (a dead letter replayed), the WAL the relay knows.
    if let Some(wal_id) = &admitted.wal_id {
        seen.of_wal(wal_id, agent);
    }
    let mut batch =
        AppendBatch::with_capacity(events.len() + 1, body.len() + events.len() * 64 + 256);
    let mut fresh = Vec::with_capacity(events.len());
    let mut agent_json = Vec::with_capacity(agent.len() + 2);
    write_json_str(&mut agent_json, agent);
    // `"<agent id>"` and, when the agent named its WAL, `,"origin_wal_id":"<id>"`.
    let mut origin = agent_json.clone();
    if let Some(wal_id) = &admitted.wal_id {
        origin.extend_from_slice(format!(",\"{ORIGIN_WAL_ID}\":").as_bytes());
        write_json_str(&mut origin, wal_id);
    }
    for (seq, object) in &events {
        if seen.contains(*seq) {
            continue;
        }
        fresh.push(*seq);
        batch.push_with(|buf| write_relayed(buf, &relay.prefix, &origin, *seq, object));
    }
    let duplicates = lines - fresh.len() as u64;
    if lines <= last - first {
        // After the events: stored only if they are.
        let ts = Timestamp::now();
        batch.push_with(|buf| {
            buf.extend_from_slice(&relay.prefix);
            buf.extend_from_slice(
                format!("{{\"{GAPLESS}\":\"range\",\"{ORIGIN_AGENT_ID}\":").as_bytes(),
            );
            buf.extend_from_slice(&origin);
            buf.extend_from_slice(
                format!(
                    ",\"first_seq\":{first},\"last_seq\":{last},\"timestamp\":\"{}\"}}",
                    ts.as_str()
                )
                .as_bytes(),
            );
        });
    }
    if batch.is_empty() {
        relay.count_duplicates(duplicates);
        return answer(
            StatusCode::OK,
            json!({"accepted": 0, "duplicates": duplicates}).to_string(),
        );
    }
    let records = batch.len() as u64;
    let bytes = batch.payload_bytes() as u64;
    match relay.ctx.appender.try_append(batch).await {
        Ok(range) => {
            for seq in &fresh {
                seen.insert(*seq);
            }
            relay
                .ctx
                .metrics
                .source_appended(relay.ctx.encoder.source(), records, bytes);
            relay.count_duplicates(duplicates);
            answer(
                StatusCode::OK,
                json!({"accepted": fresh.len(), "duplicates": duplicates, "first_seq": range.first, "last_seq": range.last}).to_string(),
            )
        }
        Err(e) => append_failed(&relay.ctx.name, e),
    }
}

/// Why an object is not a record an agent's `gapless` sink sends, if it is not: a repeated
/// `seq` or `gapless`, origin fields (an event relayed twice: one hop is supported), or a
/// `gapless` marker the agent does not write (only `gap` and `heartbeat`; `range` records
/// are the relay's own).
fn not_an_agents_record(object: &ClientObject<'_>) -> Option<String> {
    let mut seqs = 0;
    let mut markers = 0;
    for name in object.names() {
        match name.as_deref() {
            Some("seq") => seqs += 1,
            Some(GAPLESS) => markers += 1,
            Some(n @ (ORIGIN_AGENT_ID | ORIGIN_SEQ | ORIGIN_WAL_ID)) => {
                return Some(format!(
                    "an event already carrying {n} (an event relayed twice); one relay hop is supported"
                ))
            }
            _ => {}
        }
    }
    if seqs > 1 || markers > 1 {
        return Some("a repeated top-level \"seq\" or \"gapless\"".into());
    }
    let marker = object
        .get(GAPLESS)
        .map(|v| serde_json::from_str::<String>(v.get()).unwrap_or_default());
    match marker.as_deref() {
        None | Some("gap") | Some("heartbeat") => None,
        Some(other) => Some(format!(
            "\"gapless\":{other:?} is not a record an agent writes (gap, heartbeat)"
        )),
    }
}

/// One relayed event's WAL payload: the source prefix, then `{"origin_agent_id":<id>,
/// "origin_wal_id":<id>,"origin_seq":<seq>, <the agent's fields but its seq>}` (`origin` is
/// the first two, written once per request).
fn write_relayed(
    buf: &mut Vec<u8>,
    prefix: &[u8],
    origin: &[u8],
    seq: u64,
    object: &ClientObject<'_>,
) {
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(b"{\"");
    buf.extend_from_slice(ORIGIN_AGENT_ID.as_bytes());
    buf.extend_from_slice(b"\":");
    buf.extend_from_slice(origin);
    buf.extend_from_slice(b",\"");
    buf.extend_from_slice(ORIGIN_SEQ.as_bytes());
    buf.extend_from_slice(b"\":");
    buf.extend_from_slice(seq.to_string().as_bytes());
    let mut skipped_seq = false;
    for (name, key, value) in object.entries() {
        if !skipped_seq && name.as_deref() == Some("seq") {
            skipped_seq = true;
            continue;
        }
        buf.push(b',');
        buf.extend_from_slice(key.get().as_bytes());
        buf.push(b':');
        buf.extend_from_slice(value.get().as_bytes());
    }
    buf.push(b'}');
}
