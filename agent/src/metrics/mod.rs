//! Counters and gauges, in Prometheus form (prometheus-client), plus the per-sink state
//! `/status` reports. Names follow `gapless_<component>_<what>_<unit>`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

mod exposition;
mod process;

/// Label set `{source="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's name.
    pub source: String,
}

/// Label set `{sink="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// The sink's name.
    pub sink: String,
}

/// Label set `{sink="…",status="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The sink's name.
    pub sink: String,
    /// HTTP status, or `error` for a connection error or timeout.
    pub status: String,
}

/// Label set `{version="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    /// The agent's version.
    pub version: String,
}

/// Every `reason` of `gapless_dropped_events_total` and `gapless_gap_records_total`: the WAL's
/// gap reasons and `dead_letter`. Each exists at 0 from the start, so that `increase()` and
/// absence alerts have a series to look at.
pub const REASONS: &[&str] = &[
    "wal_full_drop_oldest",
    "wal_full_drop_newest",
    "wal_corrupt",
    "wal_missing",
    "source_overflow",
    "dead_letter",
];

/// Label set `{reason="…"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why (`wal_full_drop_oldest`, `wal_corrupt`, `dead_letter`, …).
    pub reason: String,
}

/// What `/status` says about a sink, kept up to date by its uploader.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkState {
    /// Events delivered since start.
    pub delivered_events: u64,
    /// Last sequence number delivered.
    pub delivered_seq: Option<u64>,
    /// Requests failed in a row.
    pub consecutive_failures: u64,
    /// The last error, if the last request failed (no secrets in it).
    pub last_error: Option<String>,
    /// When the last error happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// When the last batch was delivered (RFC 3339).
    pub last_success_at: Option<String>,
    /// Events dead-lettered since start.
    pub dead_lettered_events: u64,
    /// Last time the sink's cursor advanced (or the sink started).
    #[serde(skip)]
    pub last_progress: Option<Instant>,
    /// When the request now in flight started, if one is.
    #[serde(skip)]
    pub in_flight_since: Option<Instant>,
    /// Until when the sink backs off after a failure, if it does.
    #[serde(skip)]
    pub backoff_until: Option<Instant>,
    /// When the last "still failing" error was logged.
    #[serde(skip)]
    pub last_alert_log: Option<Instant>,
    /// When the current run of failures began (`None` while requests succeed).
    #[serde(skip)]
    pub failing_since: Option<Instant>,
}

/// What `/status` says about a source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceState {
    /// Events appended since start.
    pub events: u64,
    /// Bytes of events appended since start.
    pub bytes: u64,
    /// For a file source: the files it follows, with how far they are durable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileState>,
    /// For a file source: followed files holding a descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// For a file source: files waiting for a descriptor (`max_open_files`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_files: Option<u64>,
    /// For a journald source: the cursor of the last entry durable in the WAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_cursor: Option<String>,
    /// For a journald source: times `journalctl` exited, failed to start or was
    /// restarted since start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journalctl_restarts: Option<u64>,
    /// For a journald source: why `journalctl` last stopped (its exit status and the end
    /// of its stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A file a file source follows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileState {
    /// Where it is now.
    pub path: String,
    /// Every byte before this is durable in the WAL.
    pub offset: u64,
    /// Its size when last polled.
    pub size: u64,
}

/// The WAL's running totals, to turn into counter increments.
#[derive(Debug, Default, Clone, Copy)]
struct WalTotals {
    records: u64,
    bytes: u64,
    syncs: u64,
    sync_seconds: f64,
    disk_full: u64,
}

/// All metrics of one agent.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `gapless_source_events_total`.
    pub source_events: Family<SourceLabel, Counter>,
    /// `gapless_source_bytes_total`.
    pub source_bytes: Family<SourceLabel, Counter>,
    /// `gapless_source_rejected_requests_total` (http source 4xx/5xx answers).
    pub source_rejected: Family<SourceLabel, Counter>,
    /// `gapless_source_relay_duplicate_events_total` (gapless sources: events an agent sent
    /// again that the relay already held, and skipped).
    pub source_relay_duplicates: Family<SourceLabel, Counter>,
    /// `gapless_source_relay_agents` (gapless sources: agents whose seqs the relay remembers).
    pub source_relay_agents: Family<SourceLabel, Gauge>,
    /// `gapless_source_open_files` (file sources: followed files holding a descriptor).
    pub source_open_files: Family<SourceLabel, Gauge>,
    /// `gapless_source_waiting_files` (file sources: files waiting for a descriptor).
    pub source_waiting_files: Family<SourceLabel, Gauge>,
    /// `gapless_source_journalctl_restarts_total` (journald sources).
    pub source_journalctl_restarts: Family<SourceLabel, Counter>,
    /// `gapless_source_syslog_unparsed_events_total` (kept whole, `format = "unparsed"`).
    pub source_syslog_unparsed: Family<SourceLabel, Counter>,
    /// `gapless_source_syslog_truncated_events_total` (over `max_message_bytes`).
    pub source_syslog_truncated: Family<SourceLabel, Counter>,
    /// `gapless_source_refused_connections_total` (over `max_connections`).
    pub source_refused_connections: Family<SourceLabel, Counter>,
    /// `gapless_sink_events_sent_total`.
    pub sink_events_sent: Family<SinkLabel, Counter>,
    /// `gapless_sink_bytes_sent_total` (request bodies as sent).
    pub sink_bytes_sent: Family<SinkLabel, Counter>,
    /// `gapless_sink_requests_total`.
    pub sink_requests: Family<RequestLabel, Counter>,
    /// `gapless_sink_retries_total`.
    pub sink_retries: Family<SinkLabel, Counter>,
    /// `gapless_sink_dead_letter_events_total`.
    pub sink_dead_letter_events: Family<SinkLabel, Counter>,
    /// `gapless_sink_backlog_events`.
    pub sink_backlog_events: Family<SinkLabel, Gauge>,
    /// `gapless_sink_backlog_bytes`.
    pub sink_backlog_bytes: Family<SinkLabel, Gauge>,
    /// `gapless_sink_oldest_undelivered_age_seconds`.
    pub sink_oldest_age: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    /// `gapless_dropped_events_total` (by reason; what gap records describe).
    pub dropped_events: Family<ReasonLabel, Counter>,
    /// `gapless_gap_records_total` (gap records sent downstream, by reason).
    pub gap_records: Family<ReasonLabel, Counter>,
    /// `gapless_sink_consecutive_failures` (requests in a row that failed; 0 once one works).
    pub sink_consecutive_failures: Family<SinkLabel, Gauge>,
    /// `gapless_sink_watchdog_restarts_total`.
    pub sink_watchdog_restarts: Family<SinkLabel, Counter>,
    /// `gapless_wal_bytes`.
    pub wal_bytes: Gauge,
    /// `gapless_wal_max_bytes`.
    pub wal_max_bytes: Gauge,
    /// `gapless_wal_segments`.
    pub wal_segments: Gauge,
    /// `gapless_wal_appended_records_total`.
    pub wal_appended_records: Counter,
    /// `gapless_wal_appended_bytes_total`.
    pub wal_appended_bytes: Counter,
    /// `gapless_wal_fsyncs_total`.
    pub wal_fsyncs: Counter,
    /// `gapless_wal_fsync_seconds_total` (time spent in fdatasync).
    pub wal_fsync_seconds: Counter<f64, AtomicU64>,
    /// `gapless_wal_disk_full_errors_total` (appends that met a full disk).
    pub wal_disk_full_errors: Counter,
    /// `gapless_build_info{version}`: 1.
    pub build_info: Family<VersionLabel, Gauge>,
    /// `process_*`.
    process: process::ProcessMetrics,
    /// The WAL's totals as last folded into the counters.
    wal_totals_seen: Mutex<WalTotals>,
    /// Per-sink state for `/status`.
    pub sinks: Mutex<BTreeMap<String, SinkState>>,
    /// Per-source counts for `/status`.
    pub sources: Mutex<BTreeMap<String, SourceState>>,
    /// The WAL's drop counters as last folded into `dropped_events` (oldest, newest).
    wal_drops_seen: Mutex<(u64, u64)>,
    /// When the agent started.
    pub started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let process = process::ProcessMetrics::register(&mut root);
        let registry = root.sub_registry_with_prefix("gapless");
        macro_rules! reg {
            ($name:expr, $help:expr, $m:expr) => {{
                let m = $m;
                registry.register($name, $help, m.clone());
                m
            }};
        }
        let metrics = Metrics {
            source_events: reg!(
                "source_events",
                "Events appended to the WAL per source",
                Family::default()
            ),
            source_bytes: reg!(
                "source_bytes",
                "Bytes of events appended per source",
                Family::default()
            ),
            source_rejected: reg!(
                "source_rejected_requests",
                "Requests a source refused (4xx/5xx)",
                Family::default()
            ),
            source_relay_duplicates: reg!(
                "source_relay_duplicate_events",
                "Events an agent sent again that the relay already held (skipped), per gapless source",
                Family::default()
            ),
            source_relay_agents: reg!(
                "source_relay_agents",
                "Agents whose seqs the relay remembers for de-duplication, per gapless source",
                Family::default()
            ),
            source_open_files: reg!(
                "source_open_files",
                "Followed files holding a descriptor, per file source",
                Family::default()
            ),
            source_waiting_files: reg!(
                "source_waiting_files",
                "Files waiting for a descriptor (max_open_files), per file source",
                Family::default()
            ),
            source_journalctl_restarts: reg!(
                "source_journalctl_restarts",
                "Times journalctl exited or failed to start and was restarted, per journald source",
                Family::default()
            ),
            source_syslog_unparsed: reg!(
                "source_syslog_unparsed_events",
                "Syslog messages kept whole because neither RFC 5424 nor RFC 3164 parsed",
                Family::default()
            ),
            source_syslog_truncated: reg!(
                "source_syslog_truncated_events",
                "Syslog messages cut at max_message_bytes",
                Family::default()
            ),
            source_refused_connections: reg!(
                "source_refused_connections",
                "Connections closed at once because max_connections were open",
                Family::default()
            ),
            sink_events_sent: reg!(
                "sink_events_sent",
                "Events delivered per sink (2xx)",
                Family::default()
            ),
            sink_bytes_sent: reg!(
                "sink_bytes_sent",
                "Request body bytes delivered per sink",
                Family::default()
            ),
            sink_requests: reg!(
                "sink_requests",
                "Requests per sink by HTTP status",
                Family::default()
            ),
            sink_retries: reg!(
                "sink_retries",
                "Retried requests per sink",
                Family::default()
            ),
            sink_dead_letter_events: reg!(
                "sink_dead_letter_events",
                "Events moved to the dead-letter queue per sink",
                Family::default()
            ),
            sink_backlog_events: reg!(
                "sink_backlog_events",
                "WAL records not yet delivered per sink",
                Family::default()
            ),
            sink_backlog_bytes: reg!(
                "sink_backlog_bytes",
                "WAL bytes not yet delivered per sink",
                Family::default()
            ),
            sink_oldest_age: reg!(
                "sink_oldest_undelivered_age_seconds",
                "Age of the oldest undelivered record per sink",
                Family::default()
            ),
            dropped_events: reg!(
                "dropped_events",
                "Events dropped or lost, by reason",
                Family::default()
            ),
            gap_records: reg!(
                "gap_records",
                "Gap records sent downstream, by reason",
                Family::default()
            ),
            sink_consecutive_failures: reg!(
                "sink_consecutive_failures",
                "Requests in a row that failed per sink (0 once one is delivered)",
                Family::default()
            ),
            sink_watchdog_restarts: reg!(
                "sink_watchdog_restarts",
                "Uploaders restarted by the watchdog",
                Family::default()
            ),
            wal_bytes: reg!("wal_bytes", "Bytes in WAL segments", Gauge::default()),
            wal_max_bytes: reg!(
                "wal_max_bytes",
                "Configured bound of the WAL",
                Gauge::default()
            ),
            wal_segments: reg!("wal_segments", "WAL segment files", Gauge::default()),
            wal_appended_records: reg!(
                "wal_appended_records",
                "Records appended to the WAL",
                Counter::default()
            ),
            wal_appended_bytes: reg!(
                "wal_appended_bytes",
                "Bytes appended to the WAL",
                Counter::default()
            ),
            wal_fsyncs: reg!(
                "wal_fsyncs",
                "fdatasync calls on WAL segments",
                Counter::default()
            ),
            wal_fsync_seconds: reg!(
                "wal_fsync_seconds",
                "Seconds spent in fdatasync",
                Counter::default()
            ),
            wal_disk_full_errors: reg!(
                "wal_disk_full_errors",
                "WAL appends that met a full disk",
                Counter::default()
            ),
            build_info: reg!(
                "build_info",
                "The agent's version; always 1",
                Family::default()
            ),
            process,
            wal_totals_seen: Mutex::new(WalTotals::default()),
            sinks: Mutex::new(BTreeMap::new()),
            sources: Mutex::new(BTreeMap::new()),
            wal_drops_seen: Mutex::new((0, 0)),
            started: SystemTime::now(),
            registry: root,
        };
        metrics
            .build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        for reason in REASONS {
            let l = ReasonLabel {
                reason: (*reason).into(),
            };
            let _ = metrics.dropped_events.get_or_create(&l);
            let _ = metrics.gap_records.get_or_create(&l);
        }
        metrics
    }

    /// Creates a sink's labelled series at 0 (they exist before anything happens, so that
    /// `increase()` and absence alerts work from the start).
    pub fn init_sink(&self, sink: &str) {
        let l = SinkLabel { sink: sink.into() };
        let _ = self.sink_watchdog_restarts.get_or_create(&l);
        let _ = self.sink_retries.get_or_create(&l);
        let _ = self.sink_dead_letter_events.get_or_create(&l);
        let _ = self.sink_events_sent.get_or_create(&l);
        let _ = self.sink_bytes_sent.get_or_create(&l);
        let _ = self.sink_consecutive_failures.get_or_create(&l);
    }

    /// Counts events a source appended.
    pub fn source_appended(&self, source: &str, events: u64, bytes: u64) {
        let l = SourceLabel {
            source: source.to_string(),
        };
        self.source_events.get_or_create(&l).inc_by(events);
        self.source_bytes.get_or_create(&l).inc_by(bytes);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let s = sources.entry(l.source).or_default();
        s.events += events;
        s.bytes += bytes;
    }

    /// Replaces the list of files a file source follows.
    pub fn source_files(&self, source: &str, files: Vec<FileState>) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.entry(source.to_string()).or_default().files = files;
    }

    /// Sets a file source's open and waiting file counts.
    pub fn source_descriptors(&self, source: &str, open: u64, waiting: u64) {
        let l = SourceLabel {
            source: source.to_string(),
        };
        self.source_open_files.get_or_create(&l).set(open as i64);
        self.source_waiting_files
            .get_or_create(&l)
            .set(waiting as i64);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let s = sources.entry(l.source).or_default();
        s.open_files = Some(open);
        s.waiting_files = Some(waiting);
    }

    /// Updates a source's `/status` state.
    pub fn source_state(&self, source: &str, f: impl FnOnce(&mut SourceState)) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        f(sources.entry(source.to_string()).or_default());
    }

    /// Updates a sink's `/status` state.
    pub fn sink_state(&self, sink: &str, f: impl FnOnce(&mut SinkState)) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let state = sinks.entry(sink.to_string()).or_default();
        f(state);
        let failures = state.consecutive_failures;
        if failures == 0 {
            state.failing_since = None;
        } else if state.failing_since.is_none() {
            state.failing_since = Some(Instant::now());
        }
        drop(sinks);
        self.sink_consecutive_failures
            .get_or_create(&SinkLabel { sink: sink.into() })
            .set(failures as i64);
    }

    /// Refreshes the gauges derived from the WAL's stats.
    pub fn observe_wal(&self, stats: &gapless_wal::Stats) {
        self.wal_bytes.set(stats.bytes as i64);
        self.wal_max_bytes.set(stats.max_bytes as i64);
        self.wal_segments.set(stats.segments as i64);
        {
            let mut seen = self
                .wal_totals_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.wal_appended_records
                .inc_by(stats.appended_records.saturating_sub(seen.records));
            self.wal_appended_bytes
                .inc_by(stats.appended_bytes.saturating_sub(seen.bytes));
            self.wal_fsyncs
                .inc_by(stats.syncs.saturating_sub(seen.syncs));
            if stats.sync_seconds > seen.sync_seconds {
                self.wal_fsync_seconds
                    .inc_by(stats.sync_seconds - seen.sync_seconds);
            }
            self.wal_disk_full_errors
                .inc_by(stats.disk_full_errors.saturating_sub(seen.disk_full));
            *seen = WalTotals {
                records: stats.appended_records.max(seen.records),
                bytes: stats.appended_bytes.max(seen.bytes),
                syncs: stats.syncs.max(seen.syncs),
                sync_seconds: stats.sync_seconds.max(seen.sync_seconds),
                disk_full: stats.disk_full_errors.max(seen.disk_full),
            };
        }
        {
            let mut seen = self
                .wal_drops_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let (oldest, newest) = &mut *seen;
            for (reason, now, before) in [
                ("wal_full_drop_oldest", stats.dropped_oldest_records, oldest),
                ("wal_full_drop_newest", stats.dropped_newest_records, newest),
            ] {
                let counter = self.dropped_events.get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                });
                counter.inc_by(now.saturating_sub(*before));
                *before = now.max(*before);
            }
        }
        let now = crate::event::unix_nanos_now();
        for c in &stats.cursors {
            let l = SinkLabel {
                sink: c.name.clone(),
            };
            self.sink_backlog_events
                .get_or_create(&l)
                .set(c.backlog_records as i64);
            self.sink_backlog_bytes
                .get_or_create(&l)
                .set(c.backlog_bytes as i64);
            let age = c
                .oldest_unacked
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1e9);
            self.sink_oldest_age.get_or_create(&l).set(age);
        }
    }

    /// The exposition: OpenMetrics text, or with `openmetrics` false the Prometheus text
    /// format 0.0.4 (what a scraper asking for `text/plain` gets).
    pub fn encode(&self, openmetrics: bool) -> String {
        self.process.observe();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if openmetrics {
            out
        } else {
            exposition::to_text_004(&out)
        }
    }
}
