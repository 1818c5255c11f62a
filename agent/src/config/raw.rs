//! The raw serde structs: exactly the keys the file may contain (unknown keys are refused
//! by `deny_unknown_fields`). `validate.rs` turns them into the typed settings of `mod.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::units::{ByteSize, Dur};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) agent_id: Option<String>,
    pub(super) shutdown_timeout: Option<Dur>,
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default)]
    pub(super) wal: RawWal,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub(super) sinks: BTreeMap<String, RawSink>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWal {
    pub(super) max_bytes: Option<ByteSize>,
    pub(super) segment_bytes: Option<ByteSize>,
    pub(super) durability: Option<String>,
    pub(super) sync_interval: Option<Dur>,
    pub(super) when_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) bearer_token: Option<String>,
    pub(super) bearer_token_file: Option<PathBuf>,
    // gapless (relay) source
    pub(super) agent_tokens_file: Option<PathBuf>,
}

/// `auth` of a sink: all keys any sink type takes; `validate` refuses those its type does
/// not use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSinkAuth {
    // http
    pub(super) bearer_token: Option<String>,
    pub(super) bearer_token_file: Option<PathBuf>,
    // azure_monitor_logs
    pub(super) tenant_id: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    // elasticsearch
    pub(super) api_key: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    // nats
    pub(super) credentials_file: Option<PathBuf>,
    pub(super) token_file: Option<PathBuf>,
}

/// All keys any source type takes; `validate` refuses those its type does not use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    #[serde(rename = "type")]
    pub(super) kind: String,
    // file
    pub(super) include: Option<Vec<String>>,
    pub(super) exclude: Option<Vec<String>>,
    pub(super) read_from: Option<String>,
    pub(super) max_line_bytes: Option<ByteSize>,
    pub(super) poll_interval: Option<Dur>,
    pub(super) partial_line_timeout: Option<Dur>,
    pub(super) max_open_files: Option<usize>,
    pub(super) close_inactive: Option<Dur>,
    // http
    pub(super) address: Option<String>,
    pub(super) path: Option<String>,
    pub(super) max_body_bytes: Option<ByteSize>,
    pub(super) auth: Option<RawAuth>,
    // gapless (relay) source (and address, path, max_body_bytes, auth, tls)
    pub(super) dedup_window: Option<Dur>,
    // syslog (and address)
    pub(super) mode: Option<String>,
    pub(super) framing: Option<String>,
    pub(super) max_message_bytes: Option<ByteSize>,
    pub(super) tls: Option<RawSyslogTls>,
    pub(super) max_connections: Option<usize>,
    pub(super) receive_buffer_bytes: Option<ByteSize>,
    // heartbeat
    pub(super) interval: Option<Dur>,
    // journald
    pub(super) units: Option<Vec<String>>,
    pub(super) matches: Option<BTreeMap<String, Vec<String>>>,
    pub(super) journal_directory: Option<PathBuf>,
    pub(super) journalctl_path: Option<PathBuf>,
}

/// `tls` of a syslog source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSyslogTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    pub(super) max_events: Option<usize>,
    pub(super) max_bytes: Option<ByteSize>,
    pub(super) timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) initial_backoff: Option<Dur>,
    pub(super) max_backoff: Option<Dur>,
}

/// All keys any sink type takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) inputs: Option<Vec<String>>,
    // http
    pub(super) uri: Option<String>,
    pub(super) encoding: Option<String>,
    pub(super) compression: Option<String>,
    pub(super) batch: Option<RawBatch>,
    pub(super) auth: Option<RawSinkAuth>,
    pub(super) headers: Option<BTreeMap<String, String>>,
    pub(super) tls: Option<RawTls>,
    pub(super) retry: Option<RawRetry>,
    pub(super) request_timeout: Option<Dur>,
    pub(super) concurrency: Option<usize>,
    pub(super) seq_field: Option<String>,
    pub(super) alert_after: Option<Dur>,
    pub(super) alert_after_failed_requests: Option<u64>,
    pub(super) stall_timeout: Option<Dur>,
    // azure_monitor_logs (and splunk_hec: endpoint)
    pub(super) endpoint: Option<String>,
    pub(super) dcr_immutable_id: Option<String>,
    pub(super) stream_name: Option<String>,
    pub(super) authority: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) time_field: Option<String>,
    // splunk_hec
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) index: Option<String>,
    pub(super) sourcetype: Option<String>,
    pub(super) source: Option<String>,
    pub(super) indexer_acknowledgement: Option<bool>,
    pub(super) ack_poll_interval: Option<Dur>,
    pub(super) ack_timeout: Option<Dur>,
    // elasticsearch (and index)
    pub(super) endpoints: Option<Vec<String>>,
    // nats
    pub(super) url: Option<String>,
    pub(super) subject: Option<String>,
}
