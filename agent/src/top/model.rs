//! What `gapless top` shows, computed from successive `/status` answers: per sink its
//! health, backlog, oldest undelivered age, delivery rate (and its history for the
//! sparkline) and last error; per source its events per second; the WAL and drops.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde_json::Value;

/// How many samples of history are kept (one a second: ten minutes).
pub const HISTORY: usize = 600;

/// One sink as shown.
#[derive(Debug, Clone, Default)]
pub struct SinkView {
    /// Its name.
    pub name: String,
    /// `ok`, `failing (N)`, or `UNHEALTHY`.
    pub health: String,
    /// Whether it is unhealthy.
    pub unhealthy: bool,
    /// Events waiting.
    pub backlog: u64,
    /// Bytes waiting.
    pub backlog_bytes: u64,
    /// Age of the oldest undelivered event, seconds.
    pub oldest_age: Option<f64>,
    /// Events delivered per second, over the last sample.
    pub rate: f64,
    /// Delivery rates, oldest first.
    pub history: VecDeque<u64>,
    /// The last error, if it failed since its last success.
    pub last_error: Option<String>,
    /// Why it is unhealthy.
    pub reasons: Vec<String>,
    /// Events dead-lettered.
    pub dead_lettered: u64,
}

/// One source as shown.
#[derive(Debug, Clone, Default)]
pub struct SourceView {
    /// Its name.
    pub name: String,
    /// Events appended per second, over the last sample.
    pub rate: f64,
    /// Events appended since the agent started.
    pub events: u64,
}

/// Everything on the screen.
#[derive(Debug, Default)]
pub struct Model {
    /// Agent id, version, uptime.
    pub agent: String,
    /// Whether delivery is healthy overall.
    pub healthy: bool,
    /// WAL bytes and bound.
    pub wal: (u64, u64),
    /// Dropped records (oldest + newest) and disk-full errors.
    pub drops: u64,
    /// Disk-full errors.
    pub disk_full: u64,
    /// Sinks by name.
    pub sinks: Vec<SinkView>,
    /// Sources by name.
    pub sources: Vec<SourceView>,
    previous: Option<Sample>,
}

/// When, delivered events per sink, appended events per source.
type Sample = (Instant, BTreeMap<String, u64>, BTreeMap<String, u64>);

impl Model {
    /// Takes one `/status` answer.
    pub fn update(&mut self, status: &Value, at: Instant) {
        self.agent = format!(
            "up {} · gapless {} · agent {}",
            crate::ops::age(status["uptime_seconds"].as_f64()),
            status["version"].as_str().unwrap_or("?"),
            status["agent_id"].as_str().unwrap_or("?"),
        );
        self.healthy = status["status"] == "healthy";
        let w = &status["wal"];
        self.wal = (
            w["bytes"].as_u64().unwrap_or(0),
            w["max_bytes"].as_u64().unwrap_or(0),
        );
        self.drops = w["dropped_oldest_records"].as_u64().unwrap_or(0)
            + w["dropped_newest_records"].as_u64().unwrap_or(0);
        self.disk_full = w["disk_full_errors"].as_u64().unwrap_or(0);
        let delivered: BTreeMap<String, u64> = status["sinks"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v["delivered_events"].as_u64().unwrap_or(0)))
            .collect();
        let appended: BTreeMap<String, u64> = status["sources"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v["events"].as_u64().unwrap_or(0)))
            .collect();
        let (elapsed, before_d, before_a) = match &self.previous {
            Some((t, d, a)) => (
                at.duration_since(*t).as_secs_f64().max(0.001),
                Some(d),
                Some(a),
            ),
            None => (1.0, None, None),
        };
        let rate = |before: Option<&BTreeMap<String, u64>>, name: &str, now: u64| {
            before
                .and_then(|b| b.get(name))
                .map_or(0.0, |b| now.saturating_sub(*b) as f64 / elapsed)
        };
        let mut sinks = Vec::new();
        for (name, s) in status["sinks"].as_object().into_iter().flatten() {
            let mut view = self
                .sinks
                .iter()
                .find(|v| &v.name == name)
                .cloned()
                .unwrap_or_default();
            view.name = name.clone();
            let health = &status["delivery"][name];
            view.unhealthy = health["healthy"] == false;
            let failures = s["consecutive_failures"].as_u64().unwrap_or(0);
            view.health = if view.unhealthy {
                "UNHEALTHY".into()
            } else if failures > 0 {
                format!("failing ({failures})")
            } else {
                "ok".into()
            };
            view.backlog = s["backlog_events"].as_u64().unwrap_or(0);
            view.backlog_bytes = s["backlog_bytes"].as_u64().unwrap_or(0);
            view.oldest_age = s["oldest_undelivered_age_seconds"].as_f64();
            view.rate = rate(before_d, name, delivered.get(name).copied().unwrap_or(0));
            view.history.push_back(view.rate.round() as u64);
            while view.history.len() > HISTORY {
                view.history.pop_front();
            }
            view.last_error = s["last_error"].as_str().map(str::to_string);
            view.reasons = health["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect();
            view.dead_lettered = s["dead_lettered_events"].as_u64().unwrap_or(0);
            sinks.push(view);
        }
        self.sinks = sinks;
        self.sources = appended
            .iter()
            .map(|(name, events)| SourceView {
                name: name.clone(),
                rate: rate(before_a, name, *events),
                events: *events,
            })
            .collect();
        self.previous = Some((at, delivered, appended));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_come_from_successive_answers_and_health_from_the_delivery_section() {
        let status = |delivered: u64, events: u64, failures: u64, healthy: bool| {
            json!({
                "agent_id": "a1", "version": "0.1.0", "uptime_seconds": 65, "status": if healthy {"healthy"} else {"unhealthy"},
                "wal": {"bytes": 10, "max_bytes": 100, "dropped_oldest_records": 0, "dropped_newest_records": 2, "disk_full_errors": 0},
                "sinks": {"out": {"delivered_events": delivered, "backlog_events": 5, "backlog_bytes": 50,
                    "oldest_undelivered_age_seconds": 12.0, "consecutive_failures": failures, "last_error": null, "dead_lettered_events": 0}},
                "delivery": {"out": {"healthy": healthy, "reasons": if healthy { json!([]) } else { json!(["no progress for 400s"]) }}},
                "sources": {"in": {"events": events}}
            })
        };
        let t0 = Instant::now();
        let mut m = Model::default();
        m.update(&status(100, 1000, 0, true), t0);
        m.update(
            &status(300, 1500, 3, true),
            t0 + std::time::Duration::from_secs(2),
        );
        assert_eq!(m.sinks[0].rate, 100.0);
        assert_eq!(m.sinks[0].health, "failing (3)");
        assert_eq!(m.sources[0].rate, 250.0);
        assert_eq!(m.drops, 2);
        m.update(
            &status(300, 1500, 9, false),
            t0 + std::time::Duration::from_secs(3),
        );
        assert_eq!(m.sinks[0].health, "UNHEALTHY");
        assert_eq!(m.sinks[0].reasons, vec!["no progress for 400s".to_string()]);
        assert_eq!(
            m.sinks[0].history.iter().copied().collect::<Vec<_>>(),
            vec![0, 100, 0]
        );
    }
}
