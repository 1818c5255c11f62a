//! The monitoring gapless ships: the Prometheus alert rules
//! (`packaging/prometheus/gapless-alerts.yml`) pass their promtool unit tests, the Grafana
//! dashboard (`packaging/grafana/gapless-dashboard.json`) is a dashboard, and every metric
//! either of them uses is one a running agent exports — so that a renamed metric cannot
//! silently blind an alert.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::agent::metric_value;
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

/// The metric names in a PromQL expression: `gapless_*`, `process_*` and `up`.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut token = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
            continue;
        }
        if token.starts_with("gapless_") || token.starts_with("process_") || token == "up" {
            into.insert(std::mem::take(&mut token));
        }
        token.clear();
    }
}

/// Every `expr` of the alert rules.
fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(packaging("prometheus/gapless-alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            out.push(rule["expr"].as_str().unwrap().to_string());
            for key in ["summary", "description", "runbook"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{:?} lacks a {key}",
                    rule["alert"]
                );
            }
        }
    }
    out
}

/// Every PromQL expression of the dashboard (panel targets and template queries).
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(packaging("grafana/gapless-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "gapless-agents");
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let panels = dash["panels"].as_array().unwrap();
    let mut out = Vec::new();
    for p in panels {
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            out.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            out.push(q.to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_alert_rules_pass_their_promtool_unit_tests() {
    let dir = packaging("prometheus");
    for args in [
        vec!["check", "rules", "gapless-alerts.yml"],
        vec!["test", "rules", "gapless-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package; .ci/run installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_running_agent() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 10, "")
        ))
        .start()
        .await;
    let response = reqwest::get(agent.api_url("/metrics")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .chain(["up".to_string()]) // Prometheus' own, per target
        .collect();
    let mut used = BTreeSet::new();
    for expr in alert_exprs().iter().chain(&dashboard_exprs()) {
        metric_names(expr, &mut used);
    }
    assert!(used.len() > 10, "{used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}");
    // Counters that alerts take increase() of exist at 0 before anything happened.
    for (name, labels) in [
        (
            "gapless_sink_watchdog_restarts_total",
            &[("sink", "out")][..],
        ),
        ("gapless_sink_dead_letter_events_total", &[("sink", "out")]),
        (
            "gapless_dropped_events_total",
            &[("reason", "wal_full_drop_oldest")],
        ),
        ("gapless_gap_records_total", &[("reason", "dead_letter")]),
        (
            "gapless_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
        ),
    ] {
        assert!(
            metric_value(&text, name, labels).is_some(),
            "{name}{labels:?} is not exported:\n{text}"
        );
    }
    // A scraper asking for OpenMetrics gets it.
    let om = reqwest::Client::new()
        .get(agent.api_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
}
