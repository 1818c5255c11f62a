//! The one TOML file that drives the agent: raw serde structs (unknown keys refused), then
//! [`Config::validate`] into typed settings. Every error names the key and the line.
//!
//! Defaults are in each field's doc; `packaging/gapless.toml` and README.md show them all.

mod env;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use units::{ByteSize, Dur};

/// A config problem: where (line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, when known.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`sinks.platform.uri`), when known.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn at(line: usize, key: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: Some(line),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error")?;
        if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ", key `{}`", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------
// Raw structs: exactly what the file may say.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    agent_id: Option<String>,
    shutdown_timeout: Option<Dur>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    wal: RawWal,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    sinks: BTreeMap<String, RawSink>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWal {
    max_bytes: Option<ByteSize>,
    segment_bytes: Option<ByteSize>,
    durability: Option<String>,
    sync_interval: Option<Dur>,
    when_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
}

/// All keys any source type takes; `validate` refuses those its type does not use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(rename = "type")]
    kind: String,
    // file
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    read_from: Option<String>,
    max_line_bytes: Option<ByteSize>,
    poll_interval: Option<Dur>,
    partial_line_timeout: Option<Dur>,
    // http
    address: Option<String>,
    path: Option<String>,
    max_body_bytes: Option<ByteSize>,
    auth: Option<RawAuth>,
    // heartbeat
    interval: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_events: Option<usize>,
    max_bytes: Option<ByteSize>,
    timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial_backoff: Option<Dur>,
    max_backoff: Option<Dur>,
}

/// All keys any sink type takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    #[serde(rename = "type")]
    kind: String,
    inputs: Option<Vec<String>>,
    // http
    uri: Option<String>,
    encoding: Option<String>,
    compression: Option<String>,
    batch: Option<RawBatch>,
    auth: Option<RawAuth>,
    headers: Option<BTreeMap<String, String>>,
    tls: Option<RawTls>,
    retry: Option<RawRetry>,
    request_timeout: Option<Dur>,
    concurrency: Option<usize>,
    seq_field: Option<String>,
    alert_after: Option<Dur>,
    alert_after_failed_requests: Option<u64>,
    stall_timeout: Option<Dur>,
}

// ---------------------------------------------------------------------------------------
// Typed settings.

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the WAL, cursors, checkpoints and dead letters live. Default `/var/lib/gapless`.
    pub data_dir: PathBuf,
    /// Overrides the agent id kept in `data_dir`. Default: none.
    pub agent_id: Option<String>,
    /// How long SIGTERM waits for in-flight requests. Default 10s.
    pub shutdown_timeout: Duration,
    /// The HTTP API.
    pub api: ApiConfig,
    /// The write-ahead log.
    pub wal: gapless_wal::WalOptions,
    /// Logging.
    pub log: LogConfig,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Sinks by name.
    pub sinks: BTreeMap<String, SinkConfig>,
}

/// `[api]`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Listen address. Default `127.0.0.1:8686`.
    pub address: SocketAddr,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub json: bool,
    /// A tracing filter such as `info` (default) or `gapless=debug`.
    pub level: String,
}

/// A bearer token, inline or from a file (re-read on reload).
#[derive(Clone, Default)]
pub struct Auth {
    /// The token itself.
    pub bearer_token: Option<String>,
    /// A file holding the token.
    pub bearer_token_file: Option<PathBuf>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("Auth")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("bearer_token_file", &self.bearer_token_file)
            .finish()
    }
}

impl Auth {
    /// The token to send or expect, reading the file if one is configured.
    pub fn token(&self) -> std::io::Result<Option<String>> {
        match (&self.bearer_token, &self.bearer_token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(p)) => std::fs::read_to_string(p).map(|s| Some(s.trim().to_string())),
            (None, None) => Ok(None),
        }
    }
}

/// One source.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Tail files.
    File(FileSourceConfig),
    /// Accept events over HTTP.
    Http(HttpSourceConfig),
    /// Read lines from standard input.
    Stdin,
    /// Write a heartbeat event every `interval` (default 60s).
    Heartbeat {
        /// Time between heartbeats.
        interval: Duration,
    },
}

/// Where to start in a file never seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// From its first byte (default).
    Beginning,
    /// From its current end.
    End,
}

/// `type = "file"`.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// Glob patterns of files to follow.
    pub include: Vec<String>,
    /// Glob patterns to leave out. Default: none.
    pub exclude: Vec<String>,
    /// Default `beginning`.
    pub read_from: ReadFrom,
    /// Longer lines are split into pieces flagged `"truncated": true`. Default 1MiB.
    pub max_line_bytes: usize,
    /// How often the globs are re-scanned and files polled. Default 250ms.
    pub poll_interval: Duration,
    /// A last line without newline is emitted after this long without growth. Default 5s.
    pub partial_line_timeout: Duration,
}

/// `type = "http"` (source).
#[derive(Debug, Clone)]
pub struct HttpSourceConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// URL path accepting POSTs. Default `/`.
    pub path: String,
    /// Larger bodies get 413. Default 10MiB.
    pub max_body_bytes: usize,
    /// Expected bearer token, if any. Default: none.
    pub auth: Auth,
}

/// One sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Sources whose events it takes (gap records and heartbeats always pass). Default:
    /// all sources.
    pub inputs: Vec<String>,
    /// What kind of sink.
    pub kind: SinkKind,
    /// The name of the field carrying each event's WAL sequence number; `None` leaves it
    /// out. Default `seq`.
    pub seq_field: Option<String>,
    /// Delivery health turns unhealthy when undelivered events are older than this, or
    /// the cursor has not advanced for this long while there is a backlog. Default 5m.
    pub alert_after: Duration,
    /// … or when this many requests in a row failed. Default 10.
    pub alert_after_failed_requests: u64,
    /// The watchdog restarts an uploader that made no progress for this long while data
    /// waits and no request is in flight or in backoff. Default 5m.
    pub stall_timeout: Duration,
}

/// The kinds of sink.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Upload over HTTP(S).
    Http(Box<HttpSinkConfig>),
    /// NDJSON on stdout.
    Console,
}

/// Request body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per line (default).
    Ndjson,
    /// One JSON array per request.
    Json,
}

/// TLS settings of an http sink.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// Extra CA certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    pub key_file: Option<PathBuf>,
    /// Turns certificate verification off. Default false; never do this in production.
    pub insecure_skip_verify: bool,
}

/// `type = "http"` (sink).
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// Where to POST.
    pub uri: reqwest::Url,
    /// Default `ndjson`.
    pub encoding: Encoding,
    /// `gzip` (default) or `none`.
    pub gzip: bool,
    /// Default 5000.
    pub batch_max_events: usize,
    /// Default 4MiB.
    pub batch_max_bytes: usize,
    /// Default 1s.
    pub batch_timeout: Duration,
    /// Bearer token. Default: none.
    pub auth: Auth,
    /// Extra request headers. Default: none.
    pub headers: BTreeMap<String, String>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Default 500ms.
    pub initial_backoff: Duration,
    /// Default 60s.
    pub max_backoff: Duration,
    /// Default 30s.
    pub request_timeout: Duration,
    /// Requests in flight. Default 1.
    pub concurrency: usize,
}

impl Config {
    /// Reads, substitutes and validates the config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: String::new(),
            reason: format!("cannot read the config file: {e}"),
        })?;
        Self::parse(&text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })
    }

    /// Substitutes and validates config text, taking variables from the environment.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, |k| std::env::var(k).ok())
    }

    /// Like [`Config::parse`] with variables from `lookup`.
    pub fn parse_with_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = env::substitute(text, lookup)?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| toml_error(&text, &e))?;
        validate(raw, &text)
    }
}

/// Turns a TOML/serde error into one naming the key and line.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let reason = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return ConfigError {
            file: None,
            line: None,
            key: String::new(),
            reason,
        };
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let table = table_at(text, line);
    // For an unknown field serde names it; the span may cover the whole table.
    let named = reason
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        .map(str::to_string);
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let (line, key) = match named {
        Some(field) => match locate_in_table(text, &table, &field, line) {
            Some(found) => (found, join(&table, &field)),
            None => {
                // Inside an inline table on the spanned line, e.g. `batch = { typo = 1 }`.
                let this_line = text[line_start..].lines().next().unwrap_or("");
                let at = this_line
                    .find(&format!("{field} "))
                    .or_else(|| this_line.find(&format!("{field}=")));
                let mut path = table.clone();
                if let Some(at) = at {
                    path.extend(
                        key_path_at(this_line, at)
                            .into_iter()
                            .filter(|k| k != &field),
                    );
                }
                (line, join(&path, &field))
            }
        },
        None => {
            let this_line = text[line_start..].lines().next().unwrap_or("");
            let col = span.start.saturating_sub(line_start);
            let mut path = table.clone();
            path.extend(key_path_at(this_line, col));
            (line, path.join("."))
        }
    };
    ConfigError {
        file: None,
        line: Some(line),
        key,
        reason,
    }
}

/// The key path that a value at column `col` of `line` belongs to, following inline tables:
/// for `batch = { max_events = "many" }` at the value, `["batch", "max_events"]`.
fn key_path_at(line: &str, col: usize) -> Vec<String> {
    let prefix = &line[..col.min(line.len())];
    let mut stack: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut pending: Option<String> = None;
    let mut in_string: Option<char> = None;
    for c in prefix.chars() {
        if let Some(q) = in_string {
            if c == q {
                in_string = None;
            }
            if pending.is_none() {
                token.push(c);
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                in_string = Some(c);
                if pending.is_none() {
                    token.push(c);
                }
            }
            '=' => {
                pending = Some(token.trim().trim_matches('"').to_string());
                token.clear();
            }
            '{' => {
                if let Some(k) = pending.take() {
                    stack.push(k);
                }
                token.clear();
            }
            '}' => {
                stack.pop();
                pending = None;
                token.clear();
            }
            ',' => {
                pending = None;
                token.clear();
            }
            _ if pending.is_none() => token.push(c),
            _ => {}
        }
    }
    if let Some(k) = pending {
        stack.push(k);
    } else if !token.trim().is_empty() && !prefix.contains('=') {
        stack.push(token.trim().trim_matches('"').to_string());
    }
    stack.into_iter().filter(|k| !k.is_empty()).collect()
}

fn join(table: &[String], key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{}.{}", table.join("."), key)
    }
}

/// The table header in force at `line`, as a path.
fn table_at(text: &str, line: usize) -> Vec<String> {
    let mut table = Vec::new();
    for l in text.lines().take(line) {
        if let Some(path) = header_path(l) {
            table = path;
        }
    }
    table
}

fn header_path(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim_start_matches('[');
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect(),
    )
}

fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

/// The line where `key` is set inside `table` (or, failing that, `fallback`).
fn locate_in_table(text: &str, table: &[String], key: &str, _fallback: usize) -> Option<usize> {
    let mut current: Vec<String> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(path) = header_path(l) {
            current = path;
            continue;
        }
        if current == table && key_on_line(text, i + 1).as_deref() == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

/// The line of a dotted key path, searching its table then its parents (for keys set in
/// inline tables such as `batch = { … }`).
fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    for cut in (1..=path.len()).rev() {
        let (table, key) = path[..cut].split_at(cut - 1);
        let table: Vec<String> = table.iter().map(|s| s.to_string()).collect();
        if let Some(l) = locate_in_table(text, &table, key[0], 0) {
            return Some(l);
        }
        // A whole table header, e.g. [sinks.platform].
        let header: Vec<String> = path[..cut].iter().map(|s| s.to_string()).collect();
        for (i, l) in text.lines().enumerate() {
            if header_path(l).as_ref() == Some(&header) {
                return Some(i + 1);
            }
        }
    }
    None
}

/// An error about a validated key: finds its line in the text.
struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    fn err(&self, path: &[&str], reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: line_of(self.text, path),
            key: path.join("."),
            reason: reason.into(),
        }
    }
}

fn validate(raw: RawConfig, text: &str) -> Result<Config, ConfigError> {
    let c = Checker { text };
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/gapless"));
    let api_address = raw.api.address.as_deref().unwrap_or("127.0.0.1:8686");
    let api = ApiConfig {
        address: api_address.parse().map_err(|e| {
            c.err(
                &["api", "address"],
                format!("{api_address:?} is not an address like 127.0.0.1:8686: {e}"),
            )
        })?,
    };
    let wal = validate_wal(&raw.wal, &c)?;
    let log = LogConfig {
        json: match raw.log.format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(c.err(
                    &["log", "format"],
                    format!("{other:?} is not one of text, json"),
                ))
            }
        },
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };
    if let Some(id) = &raw.agent_id {
        if id.trim().is_empty() {
            return Err(c.err(&["agent_id"], "must not be empty"));
        }
    }
    let mut sources = BTreeMap::new();
    for (name, s) in raw.sources {
        check_name(&c, "sources", &name)?;
        sources.insert(name.clone(), validate_source(&name, s, &c)?);
    }
    let mut sinks = BTreeMap::new();
    for (name, s) in raw.sinks {
        check_name(&c, "sinks", &name)?;
        let sink = validate_sink(&name, s, &c)?;
        for input in &sink.inputs {
            if !sources.contains_key(input) {
                return Err(c.err(
                    &["sinks", &name, "inputs"],
                    format!(
                        "no source named {input:?} (sources: {})",
                        sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        sinks.insert(name, sink);
    }
    if sources.is_empty() {
        return Err(c.err(&["sources"], "at least one source is needed"));
    }
    if sinks.is_empty() {
        return Err(c.err(&["sinks"], "at least one sink is needed"));
    }
    let stdin = sources
        .values()
        .filter(|s| matches!(s, SourceConfig::Stdin))
        .count();
    if stdin > 1 {
        return Err(c.err(&["sources"], "only one stdin source is possible"));
    }
    Ok(Config {
        data_dir,
        agent_id: raw.agent_id,
        shutdown_timeout: raw
            .shutdown_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        api,
        wal,
        log,
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

fn refuse_keys(
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
            Ok(SourceConfig::File(FileSourceConfig {
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
            let Some(address) = s.address else {
                return Err(c.err(
                    &["sources", name],
                    "an http source needs `address`, like \"0.0.0.0:9880\"",
                ));
            };
            let address = address.parse().map_err(|e| {
                c.err(
                    &["sources", name, "address"],
                    format!("{address:?} is not an address: {e}"),
                )
            })?;
            let path = s.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(c.err(&["sources", name, "path"], "must start with /"));
            }
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
            format!("{other:?} is not a source type (file, http, stdin, heartbeat)"),
        )),
    }
}

fn validate_sink(name: &str, s: RawSink, c: &Checker<'_>) -> Result<SinkConfig, ConfigError> {
    let inputs = s.inputs.clone().unwrap_or_default();
    let seq_field = match s.seq_field.clone() {
        None => Some("seq".to_string()),
        Some(f) if f.is_empty() => None,
        Some(f) if f.contains('"') || f.contains('\\') || f.chars().any(char::is_control) => {
            return Err(c.err(
                &["sinks", name, "seq_field"],
                "must be a plain field name (or \"\" to leave it out)",
            ))
        }
        Some(f) => Some(f),
    };
    let alert_after = s.alert_after.map_or(Duration::from_secs(300), |d| d.0);
    let alert_after_failed_requests = s.alert_after_failed_requests.unwrap_or(10).max(1);
    let stall_timeout = s.stall_timeout.map_or(Duration::from_secs(300), |d| d.0);
    if stall_timeout < Duration::from_secs(1) {
        return Err(c.err(&["sinks", name, "stall_timeout"], "must be at least 1s"));
    }
    let sink = |kind| SinkConfig {
        inputs: inputs.clone(),
        kind,
        seq_field: seq_field.clone(),
        alert_after,
        alert_after_failed_requests,
        stall_timeout,
    };
    match s.kind.as_str() {
        "console" => {
            let http_keys = [
                ("uri", s.uri.is_some()),
                ("encoding", s.encoding.is_some()),
                ("compression", s.compression.is_some()),
                ("batch", s.batch.is_some()),
                ("auth", s.auth.is_some()),
                ("headers", s.headers.is_some()),
                ("tls", s.tls.is_some()),
                ("retry", s.retry.is_some()),
                ("request_timeout", s.request_timeout.is_some()),
                ("concurrency", s.concurrency.is_some()),
            ];
            refuse_keys(c, "sinks", name, "console", &http_keys)?;
            Ok(sink(SinkKind::Console))
        }
        "http" => {
            let Some(uri) = s.uri else {
                return Err(c.err(&["sinks", name], "an http sink needs `uri`"));
            };
            let uri = reqwest::Url::parse(&uri).map_err(|e| {
                c.err(
                    &["sinks", name, "uri"],
                    format!("{uri:?} is not a URL: {e}"),
                )
            })?;
            if !matches!(uri.scheme(), "http" | "https") {
                return Err(c.err(&["sinks", name, "uri"], "the scheme must be http or https"));
            }
            let encoding = match s.encoding.as_deref() {
                None | Some("ndjson") => Encoding::Ndjson,
                Some("json") => Encoding::Json,
                Some(other) => {
                    return Err(c.err(
                        &["sinks", name, "encoding"],
                        format!("{other:?} is not one of ndjson, json"),
                    ))
                }
            };
            let gzip = match s.compression.as_deref() {
                None | Some("gzip") => true,
                Some("none") => false,
                Some(other) => {
                    return Err(c.err(
                        &["sinks", name, "compression"],
                        format!("{other:?} is not one of gzip, none"),
                    ))
                }
            };
            let batch = s.batch.unwrap_or_default();
            let batch_max_events = batch.max_events.unwrap_or(5000);
            if batch_max_events == 0 {
                return Err(c.err(
                    &["sinks", name, "batch", "max_events"],
                    "must be at least 1",
                ));
            }
            let batch_max_bytes = batch.max_bytes.map_or(4 << 20, |b| b.0 as usize);
            if batch_max_bytes < 1024 {
                return Err(c.err(
                    &["sinks", name, "batch", "max_bytes"],
                    "must be at least 1KiB",
                ));
            }
            let retry = s.retry.unwrap_or_default();
            let initial_backoff = retry
                .initial_backoff
                .map_or(Duration::from_millis(500), |d| d.0);
            let max_backoff = retry.max_backoff.map_or(Duration::from_secs(60), |d| d.0);
            if max_backoff < initial_backoff {
                return Err(c.err(
                    &["sinks", name, "retry", "max_backoff"],
                    "must not be below initial_backoff",
                ));
            }
            let concurrency = s.concurrency.unwrap_or(1);
            if !(1..=64).contains(&concurrency) {
                return Err(c.err(&["sinks", name, "concurrency"], "must be between 1 and 64"));
            }
            let tls = s.tls.unwrap_or_default();
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(c.err(
                    &["sinks", name, "tls"],
                    "cert_file and key_file go together",
                ));
            }
            let headers = s.headers.unwrap_or_default();
            for (k, v) in &headers {
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    c.err(
                        &["sinks", name, "headers"],
                        format!("{k:?} is not a valid header name"),
                    )
                })?;
                reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                    c.err(
                        &["sinks", name, "headers"],
                        format!("the value of {k:?} is not a valid header value"),
                    )
                })?;
            }
            let auth = s.auth.map(|a| Auth {
                bearer_token: a.bearer_token,
                bearer_token_file: a.bearer_token_file,
            });
            Ok(sink(SinkKind::Http(Box::new(HttpSinkConfig {
                uri,
                encoding,
                gzip,
                batch_max_events,
                batch_max_bytes,
                batch_timeout: batch.timeout.map_or(Duration::from_secs(1), |d| d.0),
                auth: auth.unwrap_or_default(),
                headers,
                tls: TlsConfig {
                    ca_file: tls.ca_file,
                    cert_file: tls.cert_file,
                    key_file: tls.key_file,
                    insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
                },
                initial_backoff,
                max_backoff,
                request_timeout: s.request_timeout.map_or(Duration::from_secs(30), |d| d.0),
                concurrency,
            }))))
        }
        other => Err(c.err(
            &["sinks", name, "type"],
            format!("{other:?} is not a sink type (http, console)"),
        )),
    }
}

/// Checks what parsing cannot: that the data directory is writable, that files named by
/// the config are readable. Returns every problem found.
pub fn check_paths(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = &config.data_dir;
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| {
        let probe = dir.join(".gapless-write-test");
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }) {
        problems.push(format!("data_dir {} is not writable: {e}", dir.display()));
    }
    let readable = |what: &str, p: &Path, problems: &mut Vec<String>| {
        if let Err(e) = std::fs::File::open(p) {
            problems.push(format!("{what} {} is not readable: {e}", p.display()));
        }
    };
    for (name, s) in &config.sources {
        if let SourceConfig::Http(h) = s {
            if let Some(p) = &h.auth.bearer_token_file {
                readable(
                    &format!("sources.{name}.auth.bearer_token_file"),
                    p,
                    &mut problems,
                );
            }
        }
    }
    for (name, s) in &config.sinks {
        if let SinkKind::Http(h) = &s.kind {
            for (key, p) in [
                ("tls.ca_file", &h.tls.ca_file),
                ("tls.cert_file", &h.tls.cert_file),
                ("tls.key_file", &h.tls.key_file),
                ("auth.bearer_token_file", &h.auth.bearer_token_file),
            ] {
                if let Some(p) = p {
                    readable(&format!("sinks.{name}.{key}"), p, &mut problems);
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
