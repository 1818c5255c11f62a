//! The agent's HTTP API: `GET /health` (the process is alive), `/ready` (sources and sinks
//! started), `/metrics` (Prometheus text) and `/status` (JSON per sink and the WAL).
//! Secrets never appear in any of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use gapless_wal::Wal;
use serde_json::json;

use crate::event::{unix_nanos_now, Timestamp};
use crate::metrics::{Metrics, SinkState};

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
    /// Per sink: when delivery counts as unhealthy (replaced on reload).
    pub alerts: std::sync::Mutex<BTreeMap<String, DeliveryAlert>>,
}

/// When a sink's delivery counts as unhealthy (see the sink's `alert_after` keys).
#[derive(Debug, Clone, Copy)]
pub struct DeliveryAlert {
    /// Undelivered events older than this, or no progress for this long with a backlog.
    pub alert_after: Duration,
    /// This many failed requests in a row.
    pub failed_requests: u64,
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/delivery", get(delivery))
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

/// Per-sink delivery health: healthy, or the reasons it is not.
pub fn delivery_health(
    stats: &gapless_wal::Stats,
    states: &BTreeMap<String, SinkState>,
    alerts: &BTreeMap<String, DeliveryAlert>,
) -> (bool, serde_json::Map<String, serde_json::Value>) {
    let now = unix_nanos_now();
    let mut all = true;
    let mut out = serde_json::Map::new();
    for c in &stats.cursors {
        let Some(alert) = alerts.get(&c.name) else {
            continue; // a cursor of a sink no longer configured
        };
        let state = states.get(&c.name).cloned().unwrap_or_default();
        let mut reasons = Vec::new();
        let age = c
            .oldest_unacked
            .map(|t| Duration::from_nanos(now.saturating_sub(t)));
        if let Some(age) = age.filter(|a| *a > alert.alert_after) {
            reasons.push(format!(
                "oldest undelivered event is {}s old (alert_after {}s)",
                age.as_secs(),
                alert.alert_after.as_secs()
            ));
        }
        if state.consecutive_failures >= alert.failed_requests {
            reasons.push(format!(
                "the last {} requests failed: {}",
                state.consecutive_failures,
                state.last_error.as_deref().unwrap_or("error")
            ));
        }
        // No progress counts only while data waits: an idle sink that just got new events
        // is not stuck, so the wait is also bounded by the oldest undelivered event's age.
        let stuck = state
            .last_progress
            .map(|t| t.elapsed())
            .zip(age)
            .map(|(since, age)| since.min(age));
        if let Some(stuck) = stuck.filter(|s| c.backlog_records > 0 && *s > alert.alert_after) {
            reasons.push(format!(
                "no progress for {}s with {} events waiting",
                stuck.as_secs(),
                c.backlog_records
            ));
        }
        all &= reasons.is_empty();
        out.insert(
            c.name.clone(),
            json!({
                "healthy": reasons.is_empty(),
                "reasons": reasons,
                "backlog_events": c.backlog_records,
                "oldest_undelivered_age_seconds": age.map(|a| a.as_secs_f64()),
                "consecutive_failures": state.consecutive_failures,
                "failing_for_seconds": state.failing_since.map(|t| t.elapsed().as_secs_f64()),
                "alert_after_seconds": alert.alert_after.as_secs_f64(),
                "alert_after_failed_requests": alert.failed_requests,
            }),
        );
    }
    (all, out)
}

async fn delivery(State(s): State<Arc<ApiState>>) -> Response {
    let wal = s.wal.clone();
    let stats = match tokio::task::spawn_blocking(move || wal.stats()).await {
        Ok(Ok(stats)) => stats,
        _ => return (StatusCode::SERVICE_UNAVAILABLE, "WAL stats unavailable").into_response(),
    };
    let states = s
        .metrics
        .sinks
        .lock()
        .map(|g| g.clone())
        .unwrap_or_default();
    let alerts = s.alerts.lock().map(|a| a.clone()).unwrap_or_default();
    let (healthy, sinks) = delivery_health(&stats, &states, &alerts);
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if healthy { "healthy" } else { "unhealthy" }, "sinks": sinks});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
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

/// `/metrics`: OpenMetrics when the scraper accepts it (Prometheus asks for it first),
/// else the Prometheus text format 0.0.4.
async fn metrics(State(s): State<Arc<ApiState>>, headers: axum::http::HeaderMap) -> Response {
    let wal = s.wal.clone();
    if let Ok(Ok(stats)) = tokio::task::spawn_blocking(move || wal.stats()).await {
        s.metrics.observe_wal(&stats);
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        s.metrics.encode(openmetrics),
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
    let alerts = s.alerts.lock().map(|a| a.clone()).unwrap_or_default();
    let (healthy, health) = delivery_health(&stats, &sink_states, &alerts);
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "delivery": health,
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
            "fsyncs": stats.syncs,
        },
        "sinks": sinks,
        "sources": s.metrics.sources.lock().map(|g| g.clone()).unwrap_or_default(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
