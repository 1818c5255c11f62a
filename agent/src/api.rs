//! The agent's HTTP API: `GET /health` (the process is alive), `/ready` (sources and sinks
//! started), `/metrics` (Prometheus text) and `/status` (JSON per sink and the WAL).
//! Secrets never appear in any of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gapless_wal::Wal;
use serde_json::json;

use crate::event::{unix_nanos_now, Timestamp};
use crate::metrics::Metrics;

/// What the API reads.
pub struct ApiState {
    /// Set once every source and sink has started.
    pub ready: AtomicBool,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The WAL, for stats.
    pub wal: Arc<Wal>,
    /// This agent's id.
    pub agent_id: String,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

async fn health() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"alive"}"#,
    )
        .into_response()
}

async fn ready(State(s): State<Arc<ApiState>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#,
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"starting"}"#,
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<ApiState>>) -> Response {
    let wal = s.wal.clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || wal.stats()).await {
        s.metrics.observe_wal(&stats);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn status(State(s): State<Arc<ApiState>>) -> Response {
    let wal = s.wal.clone();
    let stats = match tokio::task::spawn_blocking(move || wal.stats()).await {
        Ok(Ok(stats)) => stats,
        _ => return (StatusCode::INTERNAL_SERVER_ERROR, "WAL stats unavailable").into_response(),
    };
    s.metrics.observe_wal(&stats);
    let now = unix_nanos_now();
    let sink_states = s
        .metrics
        .sinks
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let sinks: serde_json::Map<String, serde_json::Value> = stats
        .cursors
        .iter()
        .map(|c| {
            let state = sink_states.get(&c.name).cloned().unwrap_or_default();
            let age = c.oldest_unacked.map(|t| now.saturating_sub(t) as f64 / 1e9);
            (
                c.name.clone(),
                json!({
                    "active": c.open,
                    "backlog_events": c.backlog_records,
                    "backlog_bytes": c.backlog_bytes,
                    "oldest_undelivered_age_seconds": age,
                    "acked_seq": c.next.saturating_sub(1),
                    "delivered_events": state.delivered_events,
                    "consecutive_failures": state.consecutive_failures,
                    "last_error": state.last_error,
                    "last_error_at": state.last_error_at,
                    "last_success_at": state.last_success_at,
                    "dead_lettered_events": state.dead_lettered_events,
                }),
            )
        })
        .collect();
    let uptime = s
        .metrics
        .started
        .elapsed()
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = json!({
        "agent_id": s.agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": s.ready.load(Ordering::Acquire),
        "uptime_seconds": uptime,
        "time": Timestamp::now().as_str(),
        "wal": {
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "segments": stats.segments,
            "first_seq": stats.first_seq,
            "next_seq": stats.next_seq,
            "dropped_oldest_records": stats.dropped_oldest_records,
            "dropped_newest_records": stats.dropped_newest_records,
            "disk_full_errors": stats.disk_full_errors,
        },
        "sinks": sinks,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
