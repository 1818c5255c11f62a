//! `packaging/systemd/gapless.service`, read as text: restart, reload, stop timeout and
//! hardening. (`packaging/test-deb.sh` runs `systemd-analyze verify` on the installed unit.)

use std::time::Duration;

use gapless::config::Config;

use super::read;

/// The `[Service]` section of a unit: `(key, value)` in order (keys repeat).
fn service_section(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut entries = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line}"));
            entries.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    entries
}

/// A systemd time span: `30`, `30s`, `1min 30s`, `500ms`.
fn timespan(s: &str) -> Duration {
    s.split_whitespace()
        .map(|part| {
            let split = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            let (n, unit) = part.split_at(split);
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("time span {s:?}"));
            match unit {
                "" | "s" | "sec" => Duration::from_secs(n),
                "ms" | "msec" => Duration::from_millis(n),
                "m" | "min" => Duration::from_secs(n * 60),
                "h" | "hr" => Duration::from_secs(n * 3600),
                other => panic!("unit {other:?} in time span {s:?}"),
            }
        })
        .sum()
}

#[test]
fn systemd_unit_restarts_always_reloads_with_sighup_outwaits_the_shutdown_and_is_hardened() {
    let service = service_section(&read("systemd/gapless.service"));
    let values = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let last = |key: &str| -> &str {
        values(key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("{key}= is not set in [Service]"))
    };
    let yes = |key: &str| {
        assert!(
            ["yes", "true", "on", "1"].contains(&last(key)),
            "{key}={}",
            last(key)
        );
    };

    assert_eq!(last("Restart"), "always");
    // An invalid config (GAPLESS_ENDPOINT not set yet) exits 78 and is not restarted.
    assert_eq!(last("RestartPreventExitStatus"), "78");
    assert!(
        Config::parse_with_env(&read("gapless.toml"), |_| None).is_err(),
        "the shipped config must refuse to run before GAPLESS_ENDPOINT is set"
    );
    // The shipped config's shutdown_timeout (10s unless it sets one) must run out first.
    let endpoint = |k: &str| {
        matches!(k, "GAPLESS_ENDPOINT" | "GAPLESS_TOKEN")
            .then(|| "https://x.invalid/in".to_string())
    };
    let shipped = Config::parse_with_env(&read("gapless.toml"), endpoint)
        .unwrap_or_else(|e| panic!("packaging/gapless.toml: {e}"));
    let shutdown = shipped.shutdown_timeout.max(Duration::from_secs(10));
    let stop = timespan(last("TimeoutStopSec"));
    assert!(
        stop > shutdown,
        "TimeoutStopSec ({stop:?}) should exceed shutdown_timeout ({shutdown:?})"
    );

    let reload = values("ExecReload");
    let hup = reload
        .iter()
        .position(|r| {
            r.contains("$MAINPID")
                && ["-HUP", "-s HUP", "-SIGHUP", "-s SIGHUP"]
                    .iter()
                    .any(|s| r.contains(s))
        })
        .unwrap_or_else(|| panic!("no ExecReload sends SIGHUP to $MAINPID: {reload:?}"));
    let validate = reload.iter().position(|r| r.contains("gapless validate"));
    assert!(
        validate.is_some_and(|v| v < hup),
        "ExecReload should run `gapless validate` before the SIGHUP (README: Operate): \
         {reload:?}"
    );

    yes("NoNewPrivileges");
    assert_eq!(last("ProtectSystem"), "strict");
    let writable = values("ReadWritePaths").iter().any(|v| {
        v.split_whitespace()
            .any(|p| p.trim_start_matches('-') == "/var/lib/gapless")
    }) || values("StateDirectory")
        .iter()
        .any(|v| v.split_whitespace().any(|d| d == "gapless"));
    assert!(
        writable,
        "neither ReadWritePaths nor StateDirectory makes /var/lib/gapless writable"
    );
    assert!(
        !["no", "false", "off", "0"].contains(&last("ProtectHome")),
        "ProtectHome={}",
        last("ProtectHome")
    );
    yes("PrivateTmp");
    let caps = values("CapabilityBoundingSet");
    assert!(
        !caps.is_empty() && caps.iter().all(|c| c.is_empty()),
        "CapabilityBoundingSet should be set empty: {caps:?}"
    );
    assert!(
        !last("RestrictAddressFamilies").is_empty(),
        "RestrictAddressFamilies is empty"
    );
    let env_files = values("EnvironmentFile");
    assert!(
        env_files
            .iter()
            .any(|f| f.trim_start_matches('-') == "/etc/default/gapless"),
        "EnvironmentFile=/etc/default/gapless: {env_files:?}"
    );
}
