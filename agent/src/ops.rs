//! Operator commands that talk to a running agent or its files: `gapless status`,
//! `gapless dead-letter list|replay` and `gapless verify-stream`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, SinkKind};
use crate::continuity;
use crate::error::{Error, Result};
use crate::sinks::dead_letter;

pub(crate) fn get_status(
    client: &reqwest::Client,
    api: &str,
) -> impl std::future::Future<Output = Result<Value>> {
    let url = format!("http://{api}/status");
    let req = client
        .get(url.clone())
        .timeout(Duration::from_secs(5))
        .send();
    async move {
        let resp = req
            .await
            .map_err(|e| Error::io("GET", &url, std::io::Error::other(e.to_string())))?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::io("read", &url, std::io::Error::other(e.to_string())))?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::io("parse", &url, std::io::Error::other(e.to_string())))
    }
}

/// A duration in seconds as `42s`, `7m`, `1.5h`, or `-`.
pub(crate) fn age(secs: Option<f64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// A byte count as `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `gapless status`: a human summary (or JSON) of a running agent, from its API. Samples
/// `/status` twice a second apart to measure delivery rates.
pub async fn status(api: &str, json: bool, out: &mut dyn Write) -> Result<bool> {
    let client = reqwest::Client::new();
    let first = get_status(&client, api).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut now = get_status(&client, api).await?;
    let healthy = now["status"] == "healthy";
    if let Some(sinks) = now["sinks"].as_object_mut() {
        for (name, s) in sinks.iter_mut() {
            let before = first["sinks"][name]["delivered_events"]
                .as_u64()
                .unwrap_or(0);
            let after = s["delivered_events"].as_u64().unwrap_or(0);
            let rate = after.saturating_sub(before) as f64;
            let backlog = s["backlog_events"].as_u64().unwrap_or(0);
            s["delivery_rate_per_second"] = rate.into();
            s["estimated_drain_seconds"] = if backlog == 0 {
                0.0.into()
            } else if rate > 0.0 {
                (backlog as f64 / rate).into()
            } else {
                Value::Null
            };
        }
    }
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&now).unwrap_or_default()
        );
        return Ok(healthy);
    }
    let w = &now["wal"];
    // Healthy while failing (an outage shorter than alert_after) is said as it is.
    let failing: Vec<String> = now["delivery"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, d)| d["healthy"] == true && d["consecutive_failures"].as_u64().unwrap_or(0) > 0)
        .map(|(name, d)| {
            format!(
                "sink {name} failing for {} ({} requests); unhealthy after {} or {} failed requests",
                age(d["failing_for_seconds"].as_f64()),
                d["consecutive_failures"],
                age(d["alert_after_seconds"].as_f64()),
                d["alert_after_failed_requests"]
            )
        })
        .collect();
    let verdict = match (healthy, failing.is_empty()) {
        (false, _) => "UNHEALTHY".to_string(),
        (true, true) => "HEALTHY".to_string(),
        (true, false) => format!("HEALTHY so far — {}", failing.join("; ")),
    };
    let _ = writeln!(
        out,
        "agent {} (gapless {}), up {}, delivery {verdict}",
        now["agent_id"].as_str().unwrap_or("?"),
        now["version"].as_str().unwrap_or("?"),
        age(now["uptime_seconds"].as_f64()),
    );
    let used = w["bytes"].as_u64().unwrap_or(0);
    let max = w["max_bytes"].as_u64().unwrap_or(1).max(1);
    let _ = writeln!(
        out,
        "WAL: {} of {} ({:.1}%), seqs {}..{}, dropped {} (oldest) + {} (newest), disk-full errors {}",
        bytes(used),
        bytes(max),
        used as f64 * 100.0 / max as f64,
        w["first_seq"],
        w["next_seq"].as_u64().unwrap_or(1).saturating_sub(1),
        w["dropped_oldest_records"],
        w["dropped_newest_records"],
        w["disk_full_errors"],
    );
    let _ = writeln!(out, "sinks:");
    if let Some(sinks) = now["sinks"].as_object() {
        for (name, s) in sinks {
            let failures = s["consecutive_failures"].as_u64().unwrap_or(0);
            let drain = match s["estimated_drain_seconds"].as_f64() {
                Some(0.0) => "caught up".to_string(),
                Some(d) => format!("drains in ~{}", age(Some(d))),
                None if failures > 0 => {
                    format!("not draining: {failures} requests failed in a row")
                }
                None => "not draining".to_string(),
            };
            let _ = writeln!(
                out,
                "  {name}: backlog {} events ({}), oldest undelivered {}, {:.0} events/s, {drain}, dead-lettered {}",
                s["backlog_events"],
                bytes(s["backlog_bytes"].as_u64().unwrap_or(0)),
                age(s["oldest_undelivered_age_seconds"].as_f64()),
                s["delivery_rate_per_second"].as_f64().unwrap_or(0.0),
                s["dead_lettered_events"],
            );
            if let Some(err) = s["last_error"].as_str() {
                let _ = writeln!(
                    out,
                    "    last error: {err} (at {})",
                    s["last_error_at"].as_str().unwrap_or("?")
                );
            }
            if let Some(reasons) = now["delivery"][name]["reasons"].as_array() {
                for r in reasons {
                    let _ = writeln!(out, "    UNHEALTHY: {}", r.as_str().unwrap_or(""));
                }
            }
        }
    }
    let _ = writeln!(out, "sources:");
    if let Some(sources) = now["sources"].as_object() {
        for (name, s) in sources {
            let _ = writeln!(
                out,
                "  {name}: {} events in ({})",
                s["events"],
                bytes(s["bytes"].as_u64().unwrap_or(0))
            );
            if let (Some(open), Some(waiting)) =
                (s["open_files"].as_u64(), s["waiting_files"].as_u64())
            {
                let _ = writeln!(
                    out,
                    "    files: {open} open, {waiting} waiting for a descriptor"
                );
            }
            for f in s["files"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "    {}: durable to offset {} of {}",
                    f["path"].as_str().unwrap_or("?"),
                    f["offset"],
                    f["size"]
                );
            }
        }
    }
    Ok(healthy)
}

/// An error naming the configured sinks when `sink` is not one of them.
fn known_sink(config: &Config, sink: &str) -> Result<()> {
    if config.sinks.contains_key(sink) {
        return Ok(());
    }
    Err(Error::Client {
        sink: sink.to_string(),
        reason: format!(
            "no sink of that name in the config (sinks: {})",
            config.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

/// `gapless dead-letter list`: the dead-lettered batches of a sink.
pub fn dead_letter_list(config: &Config, sink: &str, out: &mut dyn Write) -> Result<()> {
    known_sink(config, sink)?;
    let dir = config.data_dir.join("dead-letter").join(sink);
    let items = dead_letter::list(&dir)?;
    if items.is_empty() {
        let _ = writeln!(
            out,
            "no dead letters for sink {sink:?} in {}",
            dir.display()
        );
    }
    for (path, m) in items {
        let _ = writeln!(
            out,
            "{}: seqs {}..={}, {} events, HTTP {} at {}: {}",
            path.display(),
            m.first_seq,
            m.last_seq,
            m.events,
            m.status,
            m.at,
            m.response.chars().take(200).collect::<String>()
        );
    }
    Ok(())
}

/// `gapless dead-letter replay`: sends each dead-lettered batch of `sink` again through its
/// platform with the sink's current settings (address, credentials, TLS), and deletes it
/// once the platform took all of it. Stops at the first failure. Returns (replayed,
/// remaining).
pub async fn dead_letter_replay(
    config: &Config,
    sink: &str,
    out: &mut dyn Write,
) -> Result<(usize, usize)> {
    let no_sink = |reason: &str| Error::Client {
        sink: sink.to_string(),
        reason: reason.into(),
    };
    known_sink(config, sink)?;
    let Some(s) = config.sinks.get(sink) else {
        return Err(no_sink("no sink of that name in the config"));
    };
    let agent_id = crate::pipeline::agent_id(config)?;
    let seq_field = s.seq_field.as_deref();
    let added = s.kind.added_fields();
    use crate::sinks::delivery::Replay;
    use crate::sinks::{azure_monitor_logs, elasticsearch, http, nats, splunk_hec};
    match &s.kind {
        SinkKind::Console => Err(no_sink("a console sink has no dead letters")),
        SinkKind::Http(c) | SinkKind::Gapless(c) => {
            let p = http::Http::new(sink, (**c).clone())?;
            let r = Replay::new(sink, &agent_id, &c.delivery, p, seq_field, &added)?;
            replay_all(config, sink, &r, out).await
        }
        SinkKind::AzureMonitorLogs(c) => {
            let p = azure_monitor_logs::AzureMonitorLogs::new(sink, &agent_id, seq_field, c)?;
            let r = Replay::new(sink, &agent_id, &c.delivery, p, seq_field, &added)?;
            replay_all(config, sink, &r, out).await
        }
        SinkKind::SplunkHec(c) => {
            let p = splunk_hec::SplunkHec::new(sink, &agent_id, c)?;
            let r = Replay::new(sink, &agent_id, &c.delivery, p, seq_field, &added)?;
            replay_all(config, sink, &r, out).await
        }
        SinkKind::Elasticsearch(c) => {
            let p = elasticsearch::Elasticsearch::new(sink, &agent_id, c)?;
            let r = Replay::new(sink, &agent_id, &c.delivery, p, seq_field, &added)?;
            replay_all(config, sink, &r, out).await
        }
        SinkKind::Nats(c) => {
            let p = nats::Nats::new(sink, &agent_id, c)?;
            let r = Replay::new(sink, &agent_id, &c.delivery, p, seq_field, &added)?;
            replay_all(config, sink, &r, out).await
        }
    }
}

async fn replay_all<P: crate::sinks::delivery::Platform>(
    config: &Config,
    sink: &str,
    replay: &crate::sinks::delivery::Replay<P>,
    out: &mut dyn Write,
) -> Result<(usize, usize)> {
    let dir = config.data_dir.join("dead-letter").join(sink);
    let items = dead_letter::list(&dir)?;
    let total = items.len();
    let pb = crate::progress::bar(total as u64, "replaying dead letters");
    for (i, (path, meta)) in items.iter().enumerate() {
        pb.set_position(i as u64);
        let body = std::fs::read(path).map_err(|e| Error::io("read dead letter", path, e))?;
        let sent = replay.send(meta, &body).await;
        match sent {
            Ok(()) => {
                let _ = std::fs::remove_file(path);
                let _ = std::fs::remove_file(meta_path(path));
                pb.suspend(|| {
                    let _ = writeln!(
                        out,
                        "[{}/{total}] replayed seqs {}..={} ({} events)",
                        i + 1,
                        meta.first_seq,
                        meta.last_seq,
                        meta.events
                    );
                });
            }
            Err(why) => {
                pb.finish_and_clear();
                let _ = writeln!(
                    out,
                    "[{}/{total}] seqs {}..={} not taken: {why}; stopping (the file stays)",
                    i + 1,
                    meta.first_seq,
                    meta.last_seq
                );
                return Ok((i, total - i));
            }
        }
    }
    pb.finish_and_clear();
    Ok((total, 0))
}

fn meta_path(ndjson: &Path) -> std::path::PathBuf {
    let name = ndjson.file_name().and_then(|n| n.to_str()).unwrap_or("");
    ndjson.with_file_name(format!("{}.meta.json", name.trim_end_matches(".ndjson")))
}

/// ` seqs 3..=5`, ` seq 3`, or nothing when the gap names no seqs.
fn seq_range(g: &continuity::GapSeen) -> String {
    match (g.first_seq, g.last_seq) {
        (Some(a), Some(z)) if a == z => format!(" seq {a}"),
        (Some(a), Some(z)) => format!(" seqs {a}..={z}"),
        (Some(a), None) => format!(" seqs from {a}"),
        (None, Some(z)) => format!(" seqs up to {z}"),
        (None, None) => String::new(),
    }
}

/// `gapless verify-stream`: checks captured batches for silent holes and duplicates.
pub fn verify_stream(
    files: &[std::path::PathBuf],
    seq_field: &str,
    from: Option<u64>,
    json: bool,
    out: &mut dyn Write,
) -> Result<bool> {
    let mut batches = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io("read", f, e))?;
        let mut b = continuity::parse_capture(&text)
            .map_err(|e| Error::io("parse", f, std::io::Error::other(e)))?;
        batches.append(&mut b);
    }
    let report = continuity::check(&batches, seq_field, from);
    let origins = continuity::check_origins(&batches);
    if json {
        let text = if origins.is_empty() {
            serde_json::to_string_pretty(&report)
        } else {
            serde_json::to_string_pretty(&serde_json::json!({"hop": report, "origins": origins}))
        };
        let _ = writeln!(out, "{}", text.unwrap_or_default());
    } else {
        write_report(out, "", &report);
        for (origin, r) in &origins {
            write_report(out, &format!("origin {origin}: "), r);
        }
    }
    Ok(report.is_continuous()
        && origins
            .values()
            .all(continuity::StreamReport::is_continuous))
}

/// One report as text, its first line starting with `label`.
fn write_report(out: &mut dyn Write, label: &str, report: &continuity::StreamReport) {
    let _ = writeln!(
        out,
        "{label}seqs {}..{}: {} delivered, {} duplicate deliveries, {} gap records, {} missing ranges",
        report.first_seq.unwrap_or(0),
        report.last_seq.unwrap_or(0),
        report.delivered,
        report.duplicate_deliveries,
        report.gaps.len(),
        report.missing.len()
    );
    for g in &report.gaps {
        let _ = writeln!(
            out,
            "  gap: {}{}{}",
            g.reason,
            seq_range(g),
            g.events.map_or(String::new(), |n| format!(" ({n} events)"))
        );
    }
    for g in &report.ignored_gaps {
        let _ = writeln!(
            out,
            "  IGNORED gap-like event, not the agent's (no seq of its own, or seqs after it): {}{}",
            g.reason,
            seq_range(g)
        );
    }
    for (a, z) in &report.missing {
        let _ = writeln!(out, "  MISSING without a gap record: seqs {a}..={z}");
    }
}
