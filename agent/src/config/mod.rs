//! The one TOML file that drives the agent: raw serde structs (unknown keys refused), then
//! [`Config::validate`] into typed settings. Every error names the key and the line.
//!
//! Defaults are in each field's doc; `packaging/gapless.toml` and README.md show them all.

mod env;
mod error;
mod raw;
mod sinks;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use units::{ByteSize, Dur};

#[cfg(test)]
use error::key_path_at;
use error::toml_error;
use raw::RawConfig;
use validate::validate;

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
    /// A relay's intake: batches from other agents' `gapless` sinks.
    Gapless(GaplessSourceConfig),
    /// Receive syslog over UDP, TCP or TLS.
    Syslog(SyslogSourceConfig),
    /// Read lines from standard input.
    Stdin,
    /// Read the systemd journal through `journalctl`.
    Journald(JournaldSourceConfig),
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
    /// Most followed files holding an open descriptor at once; others wait for one (and
    /// are read when they get it). `None`: derived from the open-files limit at start
    /// (`descriptors::default_max_open_files`). Minimum 1.
    pub max_open_files: Option<usize>,
    /// A followed file that has not grown for this long, and is read to its end and
    /// durable, gives its descriptor back; it is reopened (and its identity checked) when
    /// it grows. Default 5m.
    pub close_inactive: Duration,
}

/// `type = "journald"`.
#[derive(Debug, Clone)]
pub struct JournaldSourceConfig {
    /// Only entries of these units (`_SYSTEMD_UNIT=`, any of them). Default: all.
    pub units: Vec<String>,
    /// Journal field matches: any value of a field, every field. Default: none.
    pub matches: BTreeMap<String, Vec<String>>,
    /// Where to start when there is no saved cursor yet. Default `beginning`.
    pub read_from: ReadFrom,
    /// Read journal files from this directory (`--directory`). Default: the system journal.
    pub journal_directory: Option<PathBuf>,
    /// The `journalctl` to run. Default `journalctl` (looked up in `PATH`).
    pub journalctl_path: PathBuf,
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

/// `type = "gapless"` (source): a relay taking the batches of other agents' `gapless`
/// sinks. See [`crate::sources::relay`].
#[derive(Debug, Clone)]
pub struct GaplessSourceConfig {
    /// Listen address (required).
    pub address: SocketAddr,
    /// URL path accepting POSTs. Default `/`.
    pub path: String,
    /// Larger bodies (plain or once gunzipped) get 413. Default 10MiB.
    pub max_body_bytes: usize,
    /// HTTPS: the relay's certificate and key; with `ca_file`, agents must present a
    /// certificate that CA signed, and its subjectAltName DNS names are the agent ids it
    /// may speak for. Default: plain HTTP.
    pub tls: Option<SyslogTls>,
    /// A bearer token every agent shares (any holder may claim any agent id). Default: none.
    pub auth: Auth,
    /// Per-agent tokens: lines `<agent id> <token>`; a token from it may speak only for its
    /// agent id. Re-read when it changes. Default: none.
    pub agent_tokens_file: Option<PathBuf>,
    /// How long the relay remembers which seqs an agent sent, after it was last heard
    /// from, to drop resent events. Default 24h.
    pub dedup_window: Duration,
}

/// The transport of a syslog source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogMode {
    /// One datagram, one message (RFC 5426).
    Udp,
    /// RFC 6587 over TCP.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

/// `tls` of a syslog source.
#[derive(Debug, Clone)]
pub struct SyslogTls {
    /// The server certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM.
    pub key_file: PathBuf,
    /// With it, clients must present a certificate this CA signed. Default: none.
    pub ca_file: Option<PathBuf>,
}

/// `type = "syslog"`.
#[derive(Debug, Clone)]
pub struct SyslogSourceConfig {
    /// `udp`, `tcp` or `tls`. Default `udp`.
    pub mode: SyslogMode,
    /// Listen address (required).
    pub address: SocketAddr,
    /// TCP/TLS framing. Default `auto`.
    pub framing: crate::sources::syslog::Framing,
    /// Longer messages are cut and flagged `"truncated": true`. Default 64KiB. Minimum 64
    /// bytes, maximum 16MiB.
    pub max_message_bytes: usize,
    /// Certificates for `mode = "tls"` (required there, refused elsewhere).
    pub tls: Option<SyslogTls>,
    /// Connections beyond this are closed at once. Default 1024. Minimum 1.
    pub max_connections: usize,
    /// UDP: the socket's SO_RCVBUF. Default 8MiB.
    pub receive_buffer_bytes: usize,
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
    /// Azure Monitor Logs Ingestion API (Microsoft Sentinel).
    AzureMonitorLogs(Box<AzureMonitorLogsConfig>),
    /// Splunk HTTP Event Collector.
    SplunkHec(Box<SplunkHecConfig>),
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch(Box<ElasticsearchConfig>),
    /// Another gapless agent's `gapless` source (a relay): the http sink's request, NDJSON
    /// with the seq field `seq`, which the relay takes as each event's origin seq.
    Gapless(Box<HttpSinkConfig>),
    /// NATS JetStream, published with acknowledgements.
    Nats(Box<NatsConfig>),
    /// NDJSON on stdout.
    Console,
}

impl SinkKind {
    /// The delivery settings of an uploading sink (every kind but `console`).
    pub fn delivery(&self) -> Option<&DeliveryConfig> {
        match self {
            SinkKind::Http(c) => Some(&c.delivery),
            SinkKind::AzureMonitorLogs(c) => Some(&c.delivery),
            SinkKind::SplunkHec(c) => Some(&c.delivery),
            SinkKind::Elasticsearch(c) => Some(&c.delivery),
            SinkKind::Gapless(c) => Some(&c.delivery),
            SinkKind::Nats(c) => Some(&c.delivery),
            SinkKind::Console => None,
        }
    }

    /// Top-level fields the sink writes into every event object besides its seq field
    /// (`TimeGenerated`, `@timestamp`, `agent_id`, …): reserved like the seq field, so that
    /// a client's field of that name cannot shadow the agent's.
    pub fn added_fields(&self) -> Vec<String> {
        match self {
            SinkKind::AzureMonitorLogs(c) => vec![
                c.time_field.clone(),
                crate::reserved::TIME_ORIGINAL.into(),
                crate::reserved::AGENT_ID.into(),
            ],
            SinkKind::Elasticsearch(_) => vec![
                crate::reserved::ES_TIMESTAMP.into(),
                crate::reserved::AGENT_ID.into(),
            ],
            SinkKind::Nats(_) => vec![crate::reserved::AGENT_ID.into()],
            SinkKind::Http(_)
            | SinkKind::SplunkHec(_)
            | SinkKind::Gapless(_)
            | SinkKind::Console => Vec::new(),
        }
    }

    /// Files the sink reads (credentials, TLS), by key, for `gapless validate`.
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        fn secret<'a>(out: &mut Vec<(&'static str, &'a Path)>, key: &'static str, s: &'a Secret) {
            if let Secret::File(p) = s {
                out.push((key, p.as_path()));
            }
        }
        let mut out = Vec::new();
        if let Some(d) = self.delivery() {
            for (key, p) in [
                ("tls.ca_file", &d.tls.ca_file),
                ("tls.cert_file", &d.tls.cert_file),
                ("tls.key_file", &d.tls.key_file),
            ] {
                if let Some(p) = p {
                    out.push((key, p.as_path()));
                }
            }
        }
        match self {
            SinkKind::Http(h) | SinkKind::Gapless(h) => {
                if let Some(p) = &h.auth.bearer_token_file {
                    out.push(("auth.bearer_token_file", p.as_path()));
                }
            }
            SinkKind::AzureMonitorLogs(a) => {
                secret(&mut out, "auth.client_secret_file", &a.client_secret)
            }
            SinkKind::SplunkHec(s) => secret(&mut out, "token_file", &s.token),
            SinkKind::Elasticsearch(e) => match &e.auth {
                ElasticsearchAuth::ApiKey(k) => secret(&mut out, "auth.api_key_file", k),
                ElasticsearchAuth::Basic { password, .. } => {
                    secret(&mut out, "auth.password_file", password)
                }
                ElasticsearchAuth::None => {}
            },
            SinkKind::Nats(n) => {
                if let Some(p) = &n.auth.credentials_file {
                    out.push(("auth.credentials_file", p.as_path()));
                }
                if let Some(p) = &n.auth.token_file {
                    out.push(("auth.token_file", p.as_path()));
                }
            }
            SinkKind::Console => {}
        }
        out
    }
}

/// A credential, inline in the config or in a file read at each use (so that a rotated
/// secret takes effect without a restart). Never printed: `Debug` shows only where it is.
#[derive(Clone)]
pub enum Secret {
    /// The secret itself.
    Inline(String),
    /// A file holding it (surrounding whitespace is trimmed).
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
            Secret::File(p) => write!(f, "Secret(file {})", p.display()),
        }
    }
}

impl Secret {
    /// The secret, reading the file if it is in one. The error names the file, never the
    /// secret.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    }
}

/// Request body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per line (default).
    Ndjson,
    /// One JSON array per request.
    Json,
}

/// TLS settings of an uploading sink.
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

/// What every uploading sink shares: batching, compression, retry, TLS, timeouts and
/// concurrency (keys `batch`, `compression`, `retry`, `tls`, `request_timeout`,
/// `concurrency`).
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// `gzip` (default) or `none`.
    pub gzip: bool,
    /// Default 5000.
    pub batch_max_events: usize,
    /// Default 4MiB.
    pub batch_max_bytes: usize,
    /// Default 1s.
    pub batch_timeout: Duration,
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

/// `type = "http"` (sink).
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// Where to POST.
    pub uri: reqwest::Url,
    /// Default `ndjson`.
    pub encoding: Encoding,
    /// Bearer token. Default: none.
    pub auth: Auth,
    /// Extra request headers. Default: none.
    pub headers: BTreeMap<String, String>,
    /// Batching, retry, TLS.
    pub delivery: DeliveryConfig,
}

/// `type = "azure_monitor_logs"`: the Logs Ingestion API of Azure Monitor (what feeds
/// Microsoft Sentinel), with an Entra ID app's client credentials.
#[derive(Debug, Clone)]
pub struct AzureMonitorLogsConfig {
    /// The DCE or DCR logs-ingestion endpoint (`https://….ingest.monitor.azure.com`).
    pub endpoint: reqwest::Url,
    /// `dcr-…`: the data collection rule's immutable id.
    pub dcr_immutable_id: String,
    /// The DCR's input stream (`Custom-…`).
    pub stream_name: String,
    /// Entra ID tenant.
    pub tenant_id: String,
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret (`auth.client_secret` or `auth.client_secret_file`).
    pub client_secret: Secret,
    /// Default `https://login.microsoftonline.com`.
    pub authority: reqwest::Url,
    /// Default `https://monitor.azure.com/.default`.
    pub scope: String,
    /// Where the event time goes. Default `TimeGenerated`.
    pub time_field: String,
    /// Batching, retry, TLS.
    pub delivery: DeliveryConfig,
}

/// `type = "splunk_hec"`: Splunk's HTTP Event Collector, `/services/collector/event`.
#[derive(Debug, Clone)]
pub struct SplunkHecConfig {
    /// `https://splunk.example.com:8088`.
    pub endpoint: reqwest::Url,
    /// The HEC token (`token` or `token_file`).
    pub token: Secret,
    /// Default: the token's default index.
    pub index: Option<String>,
    /// Default: none (the token's).
    pub sourcetype: Option<String>,
    /// Default: the gapless source's name.
    pub source: Option<String>,
    /// Wait for indexer acknowledgement before a batch counts as delivered. Default false.
    pub indexer_acknowledgement: bool,
    /// How often pending acks are queried. Default 1s.
    pub ack_poll_interval: Duration,
    /// A batch not acknowledged within this is sent again. Default 5m.
    pub ack_timeout: Duration,
    /// Batching, retry, TLS.
    pub delivery: DeliveryConfig,
}

/// Credentials of an Elasticsearch sink.
#[derive(Debug, Clone)]
pub enum ElasticsearchAuth {
    /// None.
    None,
    /// `Authorization: ApiKey <key>` (the encoded key Elasticsearch returns).
    ApiKey(Secret),
    /// HTTP basic authentication.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: Secret,
    },
}

/// `type = "elasticsearch"`: Elasticsearch or OpenSearch `_bulk` with `create`.
#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    /// Nodes, used round-robin; a failed request goes to the next.
    pub endpoints: Vec<reqwest::Url>,
    /// The index or data stream. Default `logs-gapless-default`.
    pub index: String,
    /// Credentials. Default none.
    pub auth: ElasticsearchAuth,
    /// Batching, retry, TLS.
    pub delivery: DeliveryConfig,
}

/// Credentials of a NATS sink, both read again at each connect.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file (the user JWT and its NKey seed, as `nsc` writes it). Default none.
    pub credentials_file: Option<PathBuf>,
    /// A file holding the server's authorization token. Default none.
    pub token_file: Option<PathBuf>,
}

/// `type = "nats"`: a NATS JetStream stream, every event one message published with an
/// acknowledgement.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The servers (`url`, comma separated: `nats://…` or `tls://…`), in the order tried
    /// first; the client learns the rest of a cluster from them.
    pub urls: Vec<String>,
    /// The subject every message is published on; a stream must take it. No wildcards.
    pub subject: String,
    /// Credentials. Default none.
    pub auth: NatsAuth,
    /// Batching, retry, TLS (`compression` is always none: a message is one event).
    pub delivery: DeliveryConfig,
}

impl Config {
    /// Reads, substitutes and validates the config file. The first problem, if any (see
    /// [`Config::load_all`] for every one).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_all(path).map_err(first)
    }

    /// Reads, substitutes and validates the config file, reporting every problem found.
    pub fn load_all(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                file: Some(path.to_path_buf()),
                line: None,
                key: String::new(),
                reason: format!("cannot read the config file: {e}"),
            }]
        })?;
        Self::parse_all_with_env(&text, |k| std::env::var(k).ok()).map_err(|errors| {
            errors
                .into_iter()
                .map(|mut e| {
                    e.file = Some(path.to_path_buf());
                    e
                })
                .collect()
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
        Self::parse_all_with_env(text, lookup).map_err(first)
    }

    /// Like [`Config::parse_with_env`], reporting every problem found.
    pub fn parse_all_with_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let text = env::substitute(text, lookup).map_err(|e| vec![e])?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| vec![toml_error(&text, &e)])?;
        validate(raw, &text)
    }
}

/// Whether this user could write into `dir`, or create it (its nearest existing ancestor
/// is writable), asked of the kernel without touching anything.
fn can_write_dir(dir: &Path) -> Result<(), String> {
    use rustix::fs::{access, Access};
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if !m.is_dir() => return Err(format!("{} is not a directory", at.display())),
            Ok(_) => {
                return access(at, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
                    if at == dir {
                        format!("is not writable by this user: {e}")
                    } else {
                        format!(
                            "does not exist and cannot be created in {}: {e}",
                            at.display()
                        )
                    }
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) => at = parent,
                None => return Err("no existing parent directory".into()),
            },
            Err(e) => return Err(format!("cannot be checked: {e}")),
        }
    }
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        ConfigError {
            file: None,
            line: None,
            key: String::new(),
            reason: "invalid config".into(),
        }
    } else {
        errors.swap_remove(0)
    }
}

/// Checks what parsing cannot: that the data directory is writable (or can be created),
/// that files named by the config are readable. Returns every problem found. Changes
/// nothing on the system: no directory is created, no file written.
pub fn check_paths(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(why) = can_write_dir(&config.data_dir) {
        problems.push(format!("data_dir {}: {why}", config.data_dir.display()));
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
        if let SourceConfig::Gapless(g) = s {
            for (key, p) in [
                ("auth.bearer_token_file", &g.auth.bearer_token_file),
                ("auth.agent_tokens_file", &g.agent_tokens_file),
            ] {
                if let Some(p) = p {
                    readable(&format!("sources.{name}.{key}"), p, &mut problems);
                }
            }
        }
    }
    for (name, s) in &config.sinks {
        for (key, p) in s.kind.files() {
            readable(&format!("sinks.{name}.{key}"), p, &mut problems);
        }
    }
    problems
}

#[cfg(test)]
mod tests;
