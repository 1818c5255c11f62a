//! From raw structs to typed settings: defaults, bounds and cross-references (a sink's
//! `inputs` must name sources; keys of another type are refused), each error located.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Checker, ConfigError};
use super::raw::{RawConfig, RawSource, RawWal};
use super::sinks::validate_sink;
use super::{
    ApiConfig, Auth, Config, FileSourceConfig, GaplessSourceConfig, HttpSourceConfig,
    JournaldSourceConfig, LogConfig, ReadFrom, SourceConfig, SyslogMode, SyslogSourceConfig,
    SyslogTls,
};

/// Every problem of the config, not just the first: each section, source and sink is
/// checked on its own, so `gapless validate` can list them all.
pub(super) fn validate(raw: RawConfig, text: &str) -> Result<Config, Vec<ConfigError>> {
    let c = Checker { text };
    let mut errors = Vec::new();
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/gapless"));
    let api_address = raw.api.address.as_deref().unwrap_or("127.0.0.1:8686");
    let api = api_address
        .parse()
        .map(|address| ApiConfig { address })
        .map_err(|e| {
            c.err(
                &["api", "address"],
                format!("{api_address:?} is not an address like 127.0.0.1:8686: {e}"),
            )
        });
    let wal = validate_wal(&raw.wal, &c);
    let log_json = match raw.log.format.as_deref() {
        None | Some("text") => Ok(false),
        Some("json") => Ok(true),
        Some(other) => Err(c.err(
            &["log", "format"],
            format!("{other:?} is not one of text, json"),
        )),
    };
    if let Some(id) = &raw.agent_id {
        if id.trim().is_empty() {
            errors.push(c.err(&["agent_id"], "must not be empty"));
        } else if !id.bytes().all(|b| b.is_ascii_graphic()) || id.len() > 256 {
            // It travels in the Gapless-Agent-Id header of every request.
            errors.push(c.err(
                &["agent_id"],
                "must be at most 256 visible ASCII characters (letters, digits, - . _ and the like; no spaces)",
            ));
        }
    }
    let mut sources = BTreeMap::new();
    let mut source_names = Vec::new();
    for (name, s) in raw.sources {
        source_names.push(name.clone());
        match check_name(&c, "sources", &name).and_then(|()| validate_source(&name, s, &c)) {
            Ok(source) => {
                sources.insert(name, source);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut sinks = BTreeMap::new();
    let sink_count = raw.sinks.len();
    for (name, s) in raw.sinks {
        let sink = match check_name(&c, "sinks", &name).and_then(|()| validate_sink(&name, s, &c)) {
            Ok(sink) => sink,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for input in &sink.inputs {
            if !source_names.contains(input) {
                errors.push(c.err(
                    &["sinks", &name, "inputs"],
                    format!(
                        "no source named {input:?} (sources: {})",
                        source_names.join(", ")
                    ),
                ));
            }
        }
        sinks.insert(name, sink);
    }
    if source_names.is_empty() {
        errors.push(c.err(&["sources"], "at least one source is needed"));
    }
    if sink_count == 0 {
        errors.push(c.err(&["sinks"], "at least one sink is needed"));
    }
    let stdin = sources
        .values()
        .filter(|s| matches!(s, SourceConfig::Stdin))
        .count();
    if stdin > 1 {
        errors.push(c.err(&["sources"], "only one stdin source is possible"));
    }
    let (api, wal, json) = match (api, wal, log_json) {
        (Ok(api), Ok(wal), Ok(json)) if errors.is_empty() => (api, wal, json),
        (api, wal, json) => {
            // In the order of the file: api, wal, log come first in most configs.
            let mut all: Vec<ConfigError> = [api.err(), wal.err(), json.err()]
                .into_iter()
                .flatten()
                .chain(errors)
                .collect();
            all.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            return Err(all);
        }
    };
    Ok(Config {
        data_dir,
        agent_id: raw.agent_id,
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        api,
        wal,
        log: LogConfig {
            json,
            level: raw.log.level.unwrap_or_else(|| "info".into()),
        },
        sources,
        sinks,
    })
}

fn check_name(c: &Checker<'_>, table: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(c.err(&[table, name], "names use 1 to 64 of A-Z a-z 0-9 _ - ."))
    }
}

fn validate_wal(raw: &RawWal, c: &Checker<'_>) -> Result<gapless_wal::WalOptions, ConfigError> {
    use gapless_wal::{Durability, WhenFull};
    let mut o = gapless_wal::WalOptions {
        max_bytes: raw.max_bytes.map_or(10 << 30, |b| b.0),
        segment_bytes: raw.segment_bytes.map_or(64 << 20, |b| b.0),
        ..Default::default()
    };
    o.durability = match raw.durability.as_deref() {
        None | Some("always") => Durability::Always,
        Some("interval") => Durability::Interval,
        Some("never") => Durability::Never,
        Some(other) => {
            return Err(c.err(
                &["wal", "durability"],
                format!("{other:?} is not one of always, interval, never"),
            ))
        }
    };
    if let Some(d) = raw.sync_interval {
        if d.0.is_zero() {
            return Err(c.err(&["wal", "sync_interval"], "must be greater than zero"));
        }
        o.sync_interval = d.0;
    }
    o.when_full = match raw.when_full.as_deref() {
        None | Some("block") => WhenFull::Block,
        Some("drop_oldest") => WhenFull::DropOldest,
        Some("drop_newest") => WhenFull::DropNewest,
        Some(other) => {
            return Err(c.err(
                &["wal", "when_full"],
                format!("{other:?} is not one of block, drop_oldest, drop_newest"),
            ))
        }
    };
    if o.max_bytes < 1 << 20 {
        return Err(c.err(&["wal", "max_bytes"], "must be at least 1MiB"));
    }
    if o.segment_bytes < 64 << 10 {
        return Err(c.err(&["wal", "segment_bytes"], "must be at least 64KiB"));
    }
    Ok(o)
}

pub(super) fn refuse_keys(
    c: &Checker<'_>,
    table: &str,
    name: &str,
    kind: &str,
    present: &[(&str, bool)],
) -> Result<(), ConfigError> {
    for (key, set) in present {
        if *set {
            return Err(c.err(
                &[table, name, key],
                format!("`{key}` does not apply to type {kind:?}"),
            ));
        }
    }
    Ok(())
}

fn validate_source(name: &str, s: RawSource, c: &Checker<'_>) -> Result<SourceConfig, ConfigError> {
    let file_keys = [
        ("include", s.include.is_some()),
        ("exclude", s.exclude.is_some()),
        ("read_from", s.read_from.is_some()),
        ("max_line_bytes", s.max_line_bytes.is_some()),
        ("poll_interval", s.poll_interval.is_some()),
        ("partial_line_timeout", s.partial_line_timeout.is_some()),
        ("max_open_files", s.max_open_files.is_some()),
        ("close_inactive", s.close_inactive.is_some()),
    ];
    let http_keys = [
        ("address", s.address.is_some()),
        ("path", s.path.is_some()),
        ("max_body_bytes", s.max_body_bytes.is_some()),
        ("auth", s.auth.is_some()),
    ];
    let heartbeat_keys = [("interval", s.interval.is_some())];
    if s.kind != "heartbeat" {
        refuse_keys(c, "sources", name, &s.kind, &heartbeat_keys)?;
    }
    let journald_keys = [
        ("units", s.units.is_some()),
        ("matches", s.matches.is_some()),
        ("journal_directory", s.journal_directory.is_some()),
        ("journalctl_path", s.journalctl_path.is_some()),
    ];
    if s.kind != "journald" {
        refuse_keys(c, "sources", name, &s.kind, &journald_keys)?;
    }
    let syslog_keys = [
        ("mode", s.mode.is_some()),
        ("framing", s.framing.is_some()),
        ("max_message_bytes", s.max_message_bytes.is_some()),
        ("tls", s.tls.is_some()),
        ("max_connections", s.max_connections.is_some()),
        ("receive_buffer_bytes", s.receive_buffer_bytes.is_some()),
    ];
    if s.kind != "syslog" && s.kind != "gapless" {
        refuse_keys(c, "sources", name, &s.kind, &syslog_keys)?;
    }
    if s.kind != "gapless" {
        refuse_keys(
            c,
            "sources",
            name,
            &s.kind,
            &[("dedup_window", s.dedup_window.is_some())],
        )?;
        if s.auth
            .as_ref()
            .is_some_and(|a| a.agent_tokens_file.is_some())
        {
            return Err(c.err(
                &["sources", name, "auth", "agent_tokens_file"],
                format!("applies to a gapless source only, not to type {:?}", s.kind),
            ));
        }
    }
    match s.kind.as_str() {
        "file" => {
            refuse_keys(c, "sources", name, "file", &http_keys)?;
            let include = s.include.unwrap_or_default();
            if include.is_empty() {
                return Err(c.err(
                    &["sources", name, "include"],
                    "a file source needs at least one include pattern",
                ));
            }
            for (key, pats) in [
                ("include", &include),
                ("exclude", s.exclude.as_ref().unwrap_or(&Vec::new())),
            ] {
                for p in pats {
                    globset::Glob::new(p).map_err(|e| {
                        c.err(&["sources", name, key], format!("bad glob {p:?}: {e}"))
                    })?;
                    if !p.starts_with('/') {
                        return Err(c.err(
                            &["sources", name, key],
                            format!("{p:?} must be an absolute path"),
                        ));
                    }
                }
            }
            let read_from = match s.read_from.as_deref() {
                None | Some("beginning") => ReadFrom::Beginning,
                Some("end") => ReadFrom::End,
                Some(other) => {
                    return Err(c.err(
                        &["sources", name, "read_from"],
                        format!("{other:?} is not one of beginning, end"),
                    ))
                }
            };
            let max_line_bytes = s.max_line_bytes.map_or(1 << 20, |b| b.0 as usize);
            if max_line_bytes < 64 {
                return Err(c.err(
                    &["sources", name, "max_line_bytes"],
                    "must be at least 64 bytes",
                ));
            }
            if s.max_open_files == Some(0) {
                return Err(c.err(&["sources", name, "max_open_files"], "must be at least 1"));
            }
            Ok(SourceConfig::File(FileSourceConfig {
                max_open_files: s.max_open_files,
                close_inactive: s.close_inactive.map_or(Duration::from_secs(300), |d| {
                    d.0.max(Duration::from_millis(10))
                }),
                include,
                exclude: s.exclude.unwrap_or_default(),
                read_from,
                max_line_bytes,
                poll_interval: s.poll_interval.map_or(Duration::from_millis(250), |d| {
                    d.0.max(Duration::from_millis(10))
                }),
                partial_line_timeout: s
                    .partial_line_timeout
                    .map_or(Duration::from_secs(5), |d| d.0),
            }))
        }
        "http" => {
            refuse_keys(c, "sources", name, "http", &file_keys)?;
            let (address, path) = listen_at(
                name,
                s.address,
                s.path,
                "an http source needs `address`, like \"0.0.0.0:9880\"",
                c,
            )?;
            let auth = s.auth.map(|a| Auth {
                bearer_token: a.bearer_token,
                bearer_token_file: a.bearer_token_file,
            });
            Ok(SourceConfig::Http(HttpSourceConfig {
                address,
                path,
                max_body_bytes: s.max_body_bytes.map_or(10 << 20, |b| b.0 as usize),
                auth: auth.unwrap_or_default(),
            }))
        }
        "gapless" => {
            refuse_keys(c, "sources", name, "gapless", &file_keys)?;
            refuse_keys(c, "sources", name, "gapless", &syslog_keys[..3])?;
            refuse_keys(c, "sources", name, "gapless", &syslog_keys[4..])?;
            validate_gapless(name, s, c).map(SourceConfig::Gapless)
        }
        "journald" => {
            refuse_keys(c, "sources", name, "journald", &http_keys)?;
            refuse_keys(c, "sources", name, "journald", &file_keys[..2])?;
            refuse_keys(c, "sources", name, "journald", &file_keys[3..])?;
            validate_journald(name, s, c)
        }
        "syslog" => {
            refuse_keys(c, "sources", name, "syslog", &file_keys)?;
            refuse_keys(c, "sources", name, "syslog", &http_keys[1..])?;
            validate_syslog(name, s, c).map(SourceConfig::Syslog)
        }
        "stdin" => {
            refuse_keys(c, "sources", name, "stdin", &file_keys)?;
            refuse_keys(c, "sources", name, "stdin", &http_keys)?;
            Ok(SourceConfig::Stdin)
        }
        "heartbeat" => {
            refuse_keys(c, "sources", name, "heartbeat", &file_keys)?;
            refuse_keys(c, "sources", name, "heartbeat", &http_keys)?;
            let interval = s.interval.map_or(Duration::from_secs(60), |d| d.0);
            if interval < Duration::from_millis(100) {
                return Err(c.err(&["sources", name, "interval"], "must be at least 100ms"));
            }
            Ok(SourceConfig::Heartbeat { interval })
        }
        other => Err(c.err(
            &["sources", name, "type"],
            format!(
                "{other:?} is not a source type (file, http, stdin, heartbeat, journald, syslog)"
            ),
        )),
    }
}

fn validate_journald(
    name: &str,
    s: RawSource,
    c: &Checker<'_>,
) -> Result<SourceConfig, ConfigError> {
    let units = s.units.unwrap_or_default();
    if units.iter().any(|u| u.is_empty() || u.contains('\n')) {
        return Err(c.err(
            &["sources", name, "units"],
            "unit names must be non-empty, on one line",
        ));
    }
    let matches = s.matches.unwrap_or_default();
    for (field, values) in &matches {
        // journalctl takes FIELD=value only for names of A-Z, 0-9 and _ not starting with a digit.
        let ok = !field.is_empty()
            && !field.starts_with(|ch: char| ch.is_ascii_digit())
            && field
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(c.err(
                &["sources", name, "matches"],
                format!(
                    "{field:?} is not a journal field name (A-Z 0-9 _, not starting with a digit)"
                ),
            ));
        }
        if values.is_empty() || values.iter().any(|v| v.contains('\n')) {
            return Err(c.err(
                &["sources", name, "matches", field],
                "needs at least one value, each on one line",
            ));
        }
    }
    let read_from = match s.read_from.as_deref() {
        None | Some("beginning") => ReadFrom::Beginning,
        Some("end") => ReadFrom::End,
        Some(other) => {
            return Err(c.err(
                &["sources", name, "read_from"],
                format!("{other:?} is not one of beginning, end"),
            ))
        }
    };
    Ok(SourceConfig::Journald(JournaldSourceConfig {
        units,
        matches,
        read_from,
        journal_directory: s.journal_directory,
        journalctl_path: s
            .journalctl_path
            .unwrap_or_else(|| PathBuf::from("journalctl")),
    }))
}

fn validate_syslog(
    name: &str,
    s: RawSource,
    c: &Checker<'_>,
) -> Result<SyslogSourceConfig, ConfigError> {
    use crate::sources::syslog::Framing;
    let err = |k: &str, reason: String| c.err(&["sources", name, k], reason);
    let mode = match s.mode.as_deref() {
        None | Some("udp") => SyslogMode::Udp,
        Some("tcp") => SyslogMode::Tcp,
        Some("tls") => SyslogMode::Tls,
        Some(other) => {
            return Err(err(
                "mode",
                format!("{other:?} is not one of udp, tcp, tls"),
            ))
        }
    };
    let Some(address) = s.address else {
        return Err(c.err(
            &["sources", name],
            "a syslog source needs `address`, like \"0.0.0.0:514\" (tls: 6514)",
        ));
    };
    let address = address
        .parse()
        .map_err(|e| err("address", format!("{address:?} is not an address: {e}")))?;
    let framing = match s.framing.as_deref() {
        None | Some("auto") => Framing::Auto,
        Some("octet_counting") => Framing::OctetCounting,
        Some("newline") => Framing::Newline,
        Some(other) => {
            return Err(err(
                "framing",
                format!("{other:?} is not one of auto, octet_counting, newline"),
            ))
        }
    };
    if mode == SyslogMode::Udp && s.framing.is_some() {
        return Err(err(
            "framing",
            "does not apply to mode \"udp\" (one datagram is one message)".into(),
        ));
    }
    let max_message_bytes = s.max_message_bytes.map_or(64 << 10, |b| b.0);
    if !(64..=16 << 20).contains(&max_message_bytes) {
        return Err(err(
            "max_message_bytes",
            "must be between 64 bytes and 16MiB".into(),
        ));
    }
    let max_connections = s.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        return Err(err("max_connections", "must be at least 1".into()));
    }
    if mode == SyslogMode::Udp && s.max_connections.is_some() {
        return Err(err(
            "max_connections",
            "does not apply to mode \"udp\"".into(),
        ));
    }
    if mode != SyslogMode::Udp && s.receive_buffer_bytes.is_some() {
        return Err(err(
            "receive_buffer_bytes",
            "applies to mode \"udp\" only".into(),
        ));
    }
    let receive_buffer_bytes = s.receive_buffer_bytes.map_or(8 << 20, |b| b.0);
    if !(4096..=1 << 30).contains(&receive_buffer_bytes) {
        return Err(err(
            "receive_buffer_bytes",
            "must be between 4KiB and 1GiB".into(),
        ));
    }
    let tls = match (mode, s.tls) {
        (SyslogMode::Tls, None) => {
            return Err(c.err(
                &["sources", name],
                "mode \"tls\" needs `tls = { cert_file = …, key_file = … }`",
            ))
        }
        (SyslogMode::Tls, Some(t)) => {
            let (Some(cert_file), Some(key_file)) = (t.cert_file, t.key_file) else {
                return Err(err("tls", "needs cert_file and key_file".into()));
            };
            let tls = SyslogTls {
                cert_file,
                key_file,
                ca_file: t.ca_file,
            };
            crate::sources::syslog::server_config(&tls)
                .map_err(|e| c.err(&["sources", name, "tls", e.key], e.reason))?;
            Some(tls)
        }
        (_, Some(_)) => return Err(err("tls", "applies to mode \"tls\" only".into())),
        (_, None) => None,
    };
    Ok(SyslogSourceConfig {
        mode,
        address,
        framing,
        max_message_bytes: max_message_bytes as usize,
        tls,
        max_connections,
        receive_buffer_bytes: receive_buffer_bytes as usize,
    })
}

/// The `address` (required: `missing` says so) and `path` (default `/`) of an HTTP source.
fn listen_at(
    name: &str,
    address: Option<String>,
    path: Option<String>,
    missing: &str,
    c: &Checker<'_>,
) -> Result<(std::net::SocketAddr, String), ConfigError> {
    let Some(address) = address else {
        return Err(c.err(&["sources", name], missing));
    };
    let address = address.parse().map_err(|e| {
        c.err(
            &["sources", name, "address"],
            format!("{address:?} is not an address: {e}"),
        )
    })?;
    let path = path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(c.err(&["sources", name, "path"], "must start with /"));
    }
    Ok((address, path))
}

/// `type = "gapless"`: a relay's intake.
fn validate_gapless(
    name: &str,
    s: RawSource,
    c: &Checker<'_>,
) -> Result<GaplessSourceConfig, ConfigError> {
    let (address, path) = listen_at(
        name,
        s.address,
        s.path,
        "a gapless source needs `address`, like \"0.0.0.0:9443\"",
        c,
    )?;
    let tls = match s.tls {
        None => None,
        Some(t) => {
            let (Some(cert_file), Some(key_file)) = (t.cert_file, t.key_file) else {
                return Err(c.err(
                    &["sources", name, "tls"],
                    "needs cert_file and key_file (and ca_file to require client certificates)",
                ));
            };
            let tls = SyslogTls {
                cert_file,
                key_file,
                ca_file: t.ca_file,
            };
            crate::sources::syslog::server_config(&tls)
                .map_err(|e| c.err(&["sources", name, "tls", e.key], e.reason))?;
            Some(tls)
        }
    };
    let auth = s.auth.unwrap_or_default();
    let client_certs = tls.as_ref().is_some_and(|t| t.ca_file.is_some());
    if auth.bearer_token.is_none()
        && auth.bearer_token_file.is_none()
        && auth.agent_tokens_file.is_none()
        && !client_certs
    {
        return Err(c.err(
            &["sources", name, "auth"],
            "a relay takes requests only from authenticated agents: set auth.bearer_token_file (shared by all agents), auth.agent_tokens_file (one token per agent id) or tls.ca_file (client certificates)",
        ));
    }
    if auth
        .bearer_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(c.err(
            &["sources", name, "auth", "bearer_token"],
            "must not be empty",
        ));
    }
    let dedup_window = s
        .dedup_window
        .map_or(Duration::from_secs(24 * 3600), |d| d.0);
    if dedup_window < Duration::from_secs(60) {
        return Err(c.err(
            &["sources", name, "dedup_window"],
            "must be at least 1m (an agent may send a batch again minutes later)",
        ));
    }
    Ok(GaplessSourceConfig {
        address,
        path,
        max_body_bytes: s.max_body_bytes.map_or(10 << 20, |b| b.0 as usize),
        tls,
        auth: Auth {
            bearer_token: auth.bearer_token,
            bearer_token_file: auth.bearer_token_file,
        },
        agent_tokens_file: auth.agent_tokens_file,
        dedup_window,
    })
}
