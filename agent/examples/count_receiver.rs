//! A minimal receiver for the end-to-end benchmark: accepts POSTs, gunzips them, counts
//! lines and bytes, answers 200. `GET /count` returns `lines bytes`.
//!
//! Run: `cargo run --release -p gapless --example count_receiver -- 127.0.0.1:9999`

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;

#[derive(Default)]
struct Counts {
    lines: AtomicU64,
    bytes: AtomicU64,
}

async fn ingest(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> &'static str {
    let gz = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let plain = if gz {
        let mut out = Vec::with_capacity(body.len() * 6);
        if flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return "bad gzip";
        }
        out
    } else {
        body.to_vec()
    };
    let lines = memchr::memchr_iter(b'\n', &plain).count() as u64;
    c.lines.fetch_add(lines, Ordering::Relaxed);
    c.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
    "ok"
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
        .route("/count", get(count))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
