//! A minimal receiver for the end-to-end benchmark: accepts POSTs, gunzips them, counts
//! events and bytes, and answers as the platform of its path would when all is well:
//! `/ingest` (the `http` sink) 200; an Entra ID token endpoint and the Azure Monitor Logs
//! Ingestion API (204, counting array items); Splunk HEC `/services/collector/event`
//! (`{"text":"Success","code":0}`, one event per line); Elasticsearch `/_bulk`
//! (`"errors":false`, two lines per event). `GET /count` returns `events bytes`.
//!
//! Run: `cargo run --release -p gapless --example count_receiver -- 127.0.0.1:9999`

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;

#[derive(Default)]
struct Counts {
    lines: AtomicU64,
    bytes: AtomicU64,
}

/// The body, gunzipped if it says so.
fn plain(headers: &HeaderMap, body: Bytes) -> Option<Vec<u8>> {
    let gz = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let plain = if gz {
        let mut out = Vec::with_capacity(body.len() * 6);
        if flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return None;
        }
        out
    } else {
        body.to_vec()
    };
    Some(plain)
}

fn add(c: &Counts, events: u64, bytes: usize) {
    c.lines.fetch_add(events, Ordering::Relaxed);
    c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
}

async fn ingest(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let Some(plain) = plain(&headers, body) else {
        return "bad gzip";
    };
    add(
        &c,
        memchr::memchr_iter(b'\n', &plain).count() as u64,
        plain.len(),
    );
    "ok"
}

async fn token() -> &'static str {
    r#"{"token_type":"Bearer","expires_in":3599,"access_token":"bench-token"}"#
}

async fn azure(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(plain) = plain(&headers, body) else {
        return StatusCode::BAD_REQUEST;
    };
    let items = memchr::memmem::find_iter(&plain, b"{\"TimeGenerated\":").count();
    add(&c, items as u64, plain.len());
    StatusCode::NO_CONTENT
}

async fn hec(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let Some(plain) = plain(&headers, body) else {
        return r#"{"text":"Invalid data format","code":6}"#;
    };
    add(
        &c,
        memchr::memchr_iter(b'\n', &plain).count() as u64,
        plain.len(),
    );
    r#"{"text":"Success","code":0}"#
}

async fn bulk(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let Some(plain) = plain(&headers, body) else {
        return "bad gzip";
    };
    add(
        &c,
        memchr::memchr_iter(b'\n', &plain).count() as u64 / 2,
        plain.len(),
    );
    r#"{"took":1,"errors":false,"items":[]}"#
}

async fn count(State(c): State<Arc<Counts>>) -> String {
    format!(
        "{} {}\n",
        c.lines.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed)
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/ingest", post(ingest))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/dataCollectionRules/{dcr}/streams/{stream}", post(azure))
        .route("/services/collector/event", post(hec))
        .route("/_bulk", post(bulk))
        .route("/count", get(count))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
