//! The HTTP source: `POST` NDJSON, a JSON array (or object), or plain text lines, optionally
//! gzip-compressed. The answer is 200 only once every event of the request is durable in
//! the WAL; a malformed request gets 400 naming the problem and nothing of it is ingested;
//! 413 over `max_body_bytes` (plain, chunked or once gunzipped); 503 with `Retry-After` when
//! the WAL is full (policy `block`) or the disk is; 401 on a wrong or missing token. Every
//! answer other than 200 is `{"error": "…"}`.
//!
//! A JSON object is stored as sent, byte for byte ([`crate::client_json`]); its fields
//! with reserved names move under `client_fields` ([`crate::reserved`]). A JSON string is a
//! line.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use gapless_wal::AppendBatch;
use serde_json::json;

use crate::client_json::{self, Body, Item};
use crate::config::HttpSourceConfig;
use crate::event::Timestamp;
use crate::metrics::SourceLabel;
use crate::sources::SourceContext;

struct Handler {
    ctx: SourceContext,
    max_body_bytes: usize,
    token: Option<String>,
}

/// Serves the source until shutdown.
pub async fn run(ctx: SourceContext, config: HttpSourceConfig) -> crate::Result<()> {
    let token = config.auth.token().map_err(|e| {
        crate::Error::io(
            "read bearer_token_file",
            config.auth.bearer_token_file.clone().unwrap_or_default(),
            e,
        )
    })?;
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .map_err(|e| crate::Error::io("bind http source", config.address.to_string(), e))?;
    tracing::info!(source = ctx.encoder.source(), address = %config.address, path = %config.path, "http source listening");
    ctx.mark_started();
    let mut shutdown = ctx.clone();
    let handler = Arc::new(Handler {
        ctx,
        max_body_bytes: config.max_body_bytes,
        token,
    });
    let app = Router::new()
        .route(&config.path, post(ingest))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(handler);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.stopped().await })
        .await
        .map_err(|e| crate::Error::io("serve http source", config.address.to_string(), e))
}

/// A JSON answer: the message itself on success, `{"error": message}` otherwise (also the
/// relay source's, [`crate::sources::relay`]).
pub(crate) fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    let msg: String = message.into();
    let body = if status.is_success() {
        msg
    } else {
        json!({ "error": msg }).to_string()
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn ingest(
    State(h): State<Arc<Handler>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let resp = match body {
        Ok(body) => ingest_inner(&h, &headers, body).await,
        // Over `max_body_bytes` by its Content-Length, or while a chunked body was read.
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds max_body_bytes ({} bytes)", h.max_body_bytes),
        ),
        Err(e) => answer(e.status(), e.body_text()),
    };
    if !resp.status().is_success() {
        h.ctx
            .metrics
            .source_rejected
            .get_or_create(&SourceLabel {
                source: h.ctx.encoder.source().to_string(),
            })
            .inc();
    }
    resp
}

async fn ingest_inner(h: &Handler, headers: &HeaderMap, body: Bytes) -> Response {
    if let Some(token) = &h.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return answer(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let body = match decode_body(headers, &body, h.max_body_bytes) {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ts = Timestamp::now();
    let mut batch = AppendBatch::with_capacity(64, body.len() + 256);
    let parsed = match content_type.as_str() {
        "application/json" => parse_json(h, &mut batch, &body, &ts),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/json-lines" => {
            parse_ndjson(h, &mut batch, &body, &ts)
        }
        "text/plain" | "" => parse_text(h, &mut batch, &body, &ts),
        other => Err(format!("unsupported Content-Type {other:?} (use application/x-ndjson, application/json or text/plain)")),
    };
    if let Err(reason) = parsed {
        return answer(StatusCode::BAD_REQUEST, reason);
    }
    if batch.is_empty() {
        return answer(StatusCode::OK, json!({"accepted": 0}).to_string());
    }
    let events = batch.len();
    let bytes = batch.payload_bytes() as u64;
    match h.ctx.appender.try_append(batch).await {
        Ok(range) => {
            h.ctx
                .metrics
                .source_appended(h.ctx.encoder.source(), events as u64, bytes);
            answer(
                StatusCode::OK,
                json!({"accepted": events, "first_seq": range.first, "last_seq": range.last})
                    .to_string(),
            )
        }
        Err(e) => append_failed(h.ctx.encoder.source(), e),
    }
}

/// A request refused: its status and why.
pub(crate) struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        answer(self.0, self.1)
    }
}

/// The body as sent, or gunzipped (`Content-Encoding: gzip`), within `max_body_bytes`.
pub(crate) fn decode_body(
    headers: &HeaderMap,
    body: &[u8],
    max_body_bytes: usize,
) -> Result<Vec<u8>, Refusal> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            let limit = max_body_bytes as u64 + 1;
            match flate2::read::MultiGzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
            {
                Ok(_) if out.len() as u64 >= limit => Err(Refusal(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("decompressed body exceeds max_body_bytes ({max_body_bytes} bytes)"),
                )),
                Ok(_) => Ok(out),
                Err(e) => Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    format!("body is not valid gzip: {e}"),
                )),
            }
        }
        other => Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {other:?} (use gzip or none)"),
        )),
    }
}

/// The answer to an append the WAL did not take: 503 with `Retry-After` when it or the disk
/// is full (or it is closing), 413 for a record over its limit, else 500.
pub(crate) fn append_failed(source: &str, e: gapless_wal::Error) -> Response {
    match e {
        gapless_wal::Error::Full { .. } | gapless_wal::Error::DroppedNewest { .. } => {
            busy(&e.to_string(), 1)
        }
        gapless_wal::Error::DiskFull { .. } | gapless_wal::Error::Closed => busy(&e.to_string(), 5),
        gapless_wal::Error::RecordTooLarge { .. } => {
            answer(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        e => {
            tracing::error!(source, error = %e, "append failed");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the events could not be stored; retry",
            )
        }
    }
}

/// 503 with `Retry-After`.
pub(crate) fn busy(reason: &str, retry_after_secs: u32) -> Response {
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, reason.to_string());
    if let Ok(v) = retry_after_secs.to_string().parse() {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Where in a request an event was, for a 400's reason.
#[derive(Clone, Copy)]
enum Place {
    Body,
    Element(usize),
    Line(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Body => f.write_str("body"),
            Place::Element(i) => write!(f, "element {i}"),
            Place::Line(n) => write!(f, "line {n}"),
        }
    }
}

fn push_item(
    h: &Handler,
    batch: &mut AppendBatch,
    item: &Item<'_>,
    ts: &Timestamp,
    at: Place,
) -> Result<(), String> {
    match item {
        Item::Object(object) => {
            h.ctx.encoder.push_client_object(batch, object, ts);
            Ok(())
        }
        Item::Line(s) => {
            h.ctx.encoder.push_line(batch, s.as_bytes(), ts, &[], &[]);
            Ok(())
        }
        Item::Other(kind) => Err(format!(
            "{at}: expected a JSON object or string, found {kind}"
        )),
    }
}

/// The body as text, or why it is not UTF-8 (JSON is).
fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "invalid JSON: not UTF-8 at byte {} of {}",
            e.valid_up_to(),
            bytes.len()
        )
    })
}

fn parse_json(
    h: &Handler,
    batch: &mut AppendBatch,
    body: &[u8],
    ts: &Timestamp,
) -> Result<(), String> {
    let body = client_json::parse_body(utf8(body)?).map_err(|e| format!("invalid JSON: {e}"))?;
    match &body {
        Body::Many(items) => {
            for (i, item) in items.iter().enumerate() {
                push_item(h, batch, item, ts, Place::Element(i))?;
            }
            Ok(())
        }
        Body::One(item) => push_item(h, batch, item, ts, Place::Body),
    }
}

fn parse_ndjson(
    h: &Handler,
    batch: &mut AppendBatch,
    body: &[u8],
    ts: &Timestamp,
) -> Result<(), String> {
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = Place::Line(i + 1);
        let item = utf8(line)
            .and_then(|text| {
                client_json::parse_item(text).map_err(|e| format!("invalid JSON: {e}"))
            })
            .map_err(|e| format!("{at}: {e}"))?;
        push_item(h, batch, &item, ts, at)?;
    }
    Ok(())
}

fn parse_text(
    h: &Handler,
    batch: &mut AppendBatch,
    body: &[u8],
    ts: &Timestamp,
) -> Result<(), String> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if body.is_empty() {
        return Ok(());
    }
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        h.ctx.encoder.push_line(batch, line, ts, &[], &[]);
    }
    Ok(())
}
