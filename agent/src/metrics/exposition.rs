//! The Prometheus text format 0.0.4, for scrapers that ask for `text/plain`, made from the
//! OpenMetrics text prometheus-client writes. The differences that matter: a counter's
//! `# TYPE`/`# HELP` name carries its `_total` suffix, `# UNIT` lines and the `# EOF`
//! terminator do not exist, and `unknown` is `untyped`.

/// Rewrites OpenMetrics text as text format 0.0.4.
pub fn to_text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            match kind {
                "counter" => {
                    counters.push(name.to_string());
                    out.push_str(&format!("# TYPE {name}_total counter\n"));
                }
                "unknown" => out.push_str(&format!("# TYPE {name} untyped\n")),
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // HELP precedes TYPE in prometheus-client's output: look ahead by name.
            if is_counter(openmetrics, name) {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_counter(text: &str, name: &str) -> bool {
    text.contains(&format!("# TYPE {name} counter\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_and_openmetrics_only_lines_go() {
        let om = "# HELP gapless_sink_retries Retried requests.\n# TYPE gapless_sink_retries counter\ngapless_sink_retries_total{sink=\"a\"} 0\n# HELP gapless_wal_bytes Bytes.\n# TYPE gapless_wal_bytes gauge\ngapless_wal_bytes 5\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP gapless_sink_retries_total Retried requests.\n# TYPE gapless_sink_retries_total counter\ngapless_sink_retries_total{sink=\"a\"} 0\n# HELP gapless_wal_bytes Bytes.\n# TYPE gapless_wal_bytes gauge\ngapless_wal_bytes 5\n"
        );
    }
}
