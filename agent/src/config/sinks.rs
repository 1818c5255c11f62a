//! Validating `[sinks.*]`: the keys every sink takes, the delivery keys every uploading
//! sink shares (`batch`, `compression`, `retry`, `tls`, `request_timeout`, `concurrency`),
//! then each type's own keys. A key of another type is refused, naming it.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{Checker, ConfigError};
use super::raw::{RawSink, RawSinkAuth};
use super::validate::refuse_keys;
use super::{
    Auth, AzureMonitorLogsConfig, DeliveryConfig, ElasticsearchAuth, ElasticsearchConfig, Encoding,
    HttpSinkConfig, NatsAuth, NatsConfig, Secret, SinkConfig, SinkKind, SplunkHecConfig, TlsConfig,
};

/// The sink types, for error messages.
const TYPES: &str = "http, azure_monitor_logs, splunk_hec, elasticsearch, nats, gapless, console";

pub(super) fn validate_sink(
    name: &str,
    s: RawSink,
    c: &Checker<'_>,
) -> Result<SinkConfig, ConfigError> {
    let inputs = s.inputs.clone().unwrap_or_default();
    let seq_field = match s.seq_field.clone() {
        None => Some("seq".to_string()),
        Some(f) if f.is_empty() => None,
        Some(f) if !plain_name(&f) => {
            return Err(c.err(
                &["sinks", name, "seq_field"],
                "must be a plain field name (or \"\" to leave it out)",
            ))
        }
        Some(f) if crate::reserved::AGENT_FIELDS.contains(&f.as_str()) => {
            return Err(c.err(
                &["sinks", name, "seq_field"],
                format!(
                "{f:?} is a field the agent writes itself ({}); the seq needs a name of its own",
                crate::reserved::AGENT_FIELDS.join(", ")
            ),
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
    let kind = match s.kind.as_str() {
        "console" => {
            refuse_keys(c, "sinks", name, "console", &delivery_keys(&s))?;
            refuse_keys(c, "sinks", name, "console", &platform_keys(&s, &[]))?;
            SinkKind::Console
        }
        "http" => SinkKind::Http(Box::new(http(name, "http", s, c)?)),
        "azure_monitor_logs" => SinkKind::AzureMonitorLogs(Box::new(azure(name, s, c)?)),
        "splunk_hec" => SinkKind::SplunkHec(Box::new(splunk(name, s, c)?)),
        "elasticsearch" => SinkKind::Elasticsearch(Box::new(elasticsearch(name, s, c)?)),
        "gapless" => {
            // The relay reads each event's origin seq from `seq`: the wire is fixed.
            if seq_field.as_deref() != Some(crate::reserved::DEFAULT_SEQ_FIELD) {
                return Err(c.err(
                    &["sinks", name, "seq_field"],
                    "a gapless sink always sends the seq as `seq` (the relay reads it); leave seq_field out",
                ));
            }
            refuse_keys(
                c,
                "sinks",
                name,
                "gapless",
                &[
                    ("encoding", s.encoding.is_some()),
                    ("headers", s.headers.is_some()),
                ],
            )?;
            SinkKind::Gapless(Box::new(http(name, "gapless", s, c)?))
        }
        "nats" => SinkKind::Nats(Box::new(nats(name, s, c)?)),
        other => {
            return Err(c.err(
                &["sinks", name, "type"],
                format!("{other:?} is not a sink type ({TYPES})"),
            ))
        }
    };
    if let Some(field) = &seq_field {
        if kind.added_fields().contains(field) {
            return Err(c.err(
                &["sinks", name, "seq_field"],
                format!("{field:?} is a field this sink writes itself"),
            ));
        }
    }
    Ok(SinkConfig {
        inputs,
        kind,
        seq_field,
        alert_after,
        alert_after_failed_requests,
        stall_timeout,
    })
}

/// A field name the agent can write without escaping: no quotes, backslashes, controls.
fn plain_name(f: &str) -> bool {
    !f.is_empty() && !f.contains('"') && !f.contains('\\') && !f.chars().any(char::is_control)
}

fn delivery_keys(s: &RawSink) -> [(&'static str, bool); 8] {
    [
        ("compression", s.compression.is_some()),
        ("batch", s.batch.is_some()),
        ("auth", s.auth.is_some()),
        ("tls", s.tls.is_some()),
        ("retry", s.retry.is_some()),
        ("request_timeout", s.request_timeout.is_some()),
        ("concurrency", s.concurrency.is_some()),
        ("headers", s.headers.is_some()),
    ]
}

/// The type-specific keys that are set, except those of `own`.
fn platform_keys(s: &RawSink, own: &[&str]) -> Vec<(&'static str, bool)> {
    [
        ("uri", s.uri.is_some()),
        ("encoding", s.encoding.is_some()),
        ("headers", s.headers.is_some()),
        ("endpoint", s.endpoint.is_some()),
        ("dcr_immutable_id", s.dcr_immutable_id.is_some()),
        ("stream_name", s.stream_name.is_some()),
        ("authority", s.authority.is_some()),
        ("scope", s.scope.is_some()),
        ("time_field", s.time_field.is_some()),
        ("token", s.token.is_some()),
        ("token_file", s.token_file.is_some()),
        ("index", s.index.is_some()),
        ("sourcetype", s.sourcetype.is_some()),
        ("source", s.source.is_some()),
        (
            "indexer_acknowledgement",
            s.indexer_acknowledgement.is_some(),
        ),
        ("ack_poll_interval", s.ack_poll_interval.is_some()),
        ("ack_timeout", s.ack_timeout.is_some()),
        ("endpoints", s.endpoints.is_some()),
        ("url", s.url.is_some()),
        ("subject", s.subject.is_some()),
    ]
    .into_iter()
    .filter(|(k, _)| !own.contains(k))
    .collect()
}

/// The `auth` keys that are set, except those of `own`.
fn auth_keys(a: &RawSinkAuth, own: &[&str]) -> Vec<(&'static str, bool)> {
    [
        ("bearer_token", a.bearer_token.is_some()),
        ("bearer_token_file", a.bearer_token_file.is_some()),
        ("tenant_id", a.tenant_id.is_some()),
        ("client_id", a.client_id.is_some()),
        ("client_secret", a.client_secret.is_some()),
        ("client_secret_file", a.client_secret_file.is_some()),
        ("api_key", a.api_key.is_some()),
        ("api_key_file", a.api_key_file.is_some()),
        ("username", a.username.is_some()),
        ("password", a.password.is_some()),
        ("password_file", a.password_file.is_some()),
        ("credentials_file", a.credentials_file.is_some()),
        ("token_file", a.token_file.is_some()),
    ]
    .into_iter()
    .filter(|(k, _)| !own.contains(k))
    .collect()
}

/// Refuses `auth` keys of other types, naming them.
fn refuse_auth_keys(
    c: &Checker<'_>,
    name: &str,
    kind: &str,
    auth: &RawSinkAuth,
    own: &[&str],
) -> Result<(), ConfigError> {
    for (key, set) in auth_keys(auth, own) {
        if set {
            return Err(c.err(
                &["sinks", name, "auth", key],
                format!("`auth.{key}` does not apply to type {kind:?}"),
            ));
        }
    }
    Ok(())
}

/// A secret given inline (`key`) or in a file (`key_file`): exactly one of them.
fn secret(
    c: &Checker<'_>,
    path: &[&str],
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            let mut p = path.to_vec();
            p.push(key);
            Err(c.err(&p, format!("give `{key}` or `{key}_file`, not both")))
        }
        (Some(s), None) if s.trim().is_empty() => {
            let mut p = path.to_vec();
            p.push(key);
            Err(c.err(&p, "must not be empty"))
        }
        (Some(s), None) => Ok(Some(Secret::Inline(s))),
        (None, Some(f)) => Ok(Some(Secret::File(f))),
        (None, None) => Ok(None),
    }
}

/// An `http`/`https` URL.
fn url(c: &Checker<'_>, path: &[&str], value: &str) -> Result<reqwest::Url, ConfigError> {
    let u = reqwest::Url::parse(value)
        .map_err(|e| c.err(path, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(c.err(path, "the scheme must be http or https"));
    }
    Ok(u)
}

/// A required string key.
fn required(
    c: &Checker<'_>,
    name: &str,
    kind: &str,
    key: &str,
    value: Option<String>,
) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(c.err(&["sinks", name, key], "must not be empty")),
        None => Err(c.err(&["sinks", name], format!("a {kind} sink needs `{key}`"))),
    }
}

/// `batch`, `compression`, `retry`, `tls`, `request_timeout`, `concurrency`.
fn delivery(name: &str, s: &mut RawSink, c: &Checker<'_>) -> Result<DeliveryConfig, ConfigError> {
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
    let batch = s.batch.take().unwrap_or_default();
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
    let retry = s.retry.take().unwrap_or_default();
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
    let tls = s.tls.take().unwrap_or_default();
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(c.err(
            &["sinks", name, "tls"],
            "cert_file and key_file go together",
        ));
    }
    Ok(DeliveryConfig {
        gzip,
        batch_max_events,
        batch_max_bytes,
        batch_timeout: batch.timeout.map_or(Duration::from_secs(1), |d| d.0),
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
    })
}

fn http(
    name: &str,
    kind: &str,
    mut s: RawSink,
    c: &Checker<'_>,
) -> Result<HttpSinkConfig, ConfigError> {
    refuse_keys(
        c,
        "sinks",
        name,
        kind,
        &platform_keys(&s, &["uri", "encoding", "headers"]),
    )?;
    let Some(uri) = s.uri.take() else {
        return Err(c.err(&["sinks", name], format!("a {kind} sink needs `uri`")));
    };
    let uri = url(c, &["sinks", name, "uri"], &uri)?;
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
    let headers = s.headers.take().unwrap_or_default();
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
    let auth = s.auth.take().unwrap_or_default();
    refuse_auth_keys(c, name, kind, &auth, &["bearer_token", "bearer_token_file"])?;
    let delivery = delivery(name, &mut s, c)?;
    Ok(HttpSinkConfig {
        uri,
        encoding,
        auth: Auth {
            bearer_token: auth.bearer_token,
            bearer_token_file: auth.bearer_token_file,
        },
        headers,
        delivery,
    })
}

fn azure(
    name: &str,
    mut s: RawSink,
    c: &Checker<'_>,
) -> Result<AzureMonitorLogsConfig, ConfigError> {
    const KIND: &str = "azure_monitor_logs";
    refuse_keys(
        c,
        "sinks",
        name,
        KIND,
        &platform_keys(
            &s,
            &[
                "endpoint",
                "dcr_immutable_id",
                "stream_name",
                "authority",
                "scope",
                "time_field",
            ],
        ),
    )?;
    let endpoint = required(c, name, KIND, "endpoint", s.endpoint.take())?;
    let endpoint = url(c, &["sinks", name, "endpoint"], &endpoint)?;
    let dcr_immutable_id = required(c, name, KIND, "dcr_immutable_id", s.dcr_immutable_id.take())?;
    if !dcr_immutable_id.starts_with("dcr-") || !url_segment(&dcr_immutable_id) {
        return Err(c.err(
            &["sinks", name, "dcr_immutable_id"],
            "must be the DCR's immutable id, like dcr-0123456789abcdef0123456789abcdef",
        ));
    }
    let stream_name = required(c, name, KIND, "stream_name", s.stream_name.take())?;
    if !url_segment(&stream_name) {
        return Err(c.err(
            &["sinks", name, "stream_name"],
            "must be a stream name of the DCR, like Custom-MyTable_CL",
        ));
    }
    let authority = s
        .authority
        .take()
        .unwrap_or_else(|| "https://login.microsoftonline.com".into());
    let authority = url(c, &["sinks", name, "authority"], &authority)?;
    let scope = s
        .scope
        .take()
        .unwrap_or_else(|| "https://monitor.azure.com/.default".into());
    let time_field = s
        .time_field
        .take()
        .unwrap_or_else(|| "TimeGenerated".into());
    if !plain_name(&time_field) || crate::reserved::AGENT_FIELDS.contains(&time_field.as_str()) {
        return Err(c.err(
            &["sinks", name, "time_field"],
            format!(
                "must be a plain column name other than the agent's own fields ({})",
                crate::reserved::AGENT_FIELDS.join(", ")
            ),
        ));
    }
    let Some(auth) = s.auth.take() else {
        return Err(c.err(
            &["sinks", name],
            "an azure_monitor_logs sink needs `auth = { tenant_id, client_id, client_secret_file }`",
        ));
    };
    refuse_auth_keys(
        c,
        name,
        KIND,
        &auth,
        &[
            "tenant_id",
            "client_id",
            "client_secret",
            "client_secret_file",
        ],
    )?;
    let auth_path = ["sinks", name, "auth"];
    let tenant_id = auth
        .tenant_id
        .filter(|t| url_segment(t))
        .ok_or_else(|| c.err(&auth_path, "needs `tenant_id` (the Entra ID tenant)"))?;
    let client_id = auth
        .client_id
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| c.err(&auth_path, "needs `client_id` (the app's id)"))?;
    let client_secret = secret(
        c,
        &auth_path,
        "client_secret",
        auth.client_secret,
        auth.client_secret_file,
    )?
    .ok_or_else(|| c.err(&auth_path, "needs `client_secret_file` or `client_secret`"))?;
    let delivery = delivery(name, &mut s, c)?;
    Ok(AzureMonitorLogsConfig {
        endpoint,
        dcr_immutable_id,
        stream_name,
        tenant_id,
        client_id,
        client_secret,
        authority,
        scope,
        time_field,
        delivery,
    })
}

/// Whether `s` can stand as one URL path segment as it is.
fn url_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn splunk(name: &str, mut s: RawSink, c: &Checker<'_>) -> Result<SplunkHecConfig, ConfigError> {
    const KIND: &str = "splunk_hec";
    refuse_keys(
        c,
        "sinks",
        name,
        KIND,
        &platform_keys(
            &s,
            &[
                "endpoint",
                "token",
                "token_file",
                "index",
                "sourcetype",
                "source",
                "indexer_acknowledgement",
                "ack_poll_interval",
                "ack_timeout",
            ],
        ),
    )?;
    if s.auth.is_some() {
        return Err(c.err(
            &["sinks", name, "auth"],
            "a splunk_hec sink takes `token_file` (or `token`), not `auth`",
        ));
    }
    let endpoint = required(c, name, KIND, "endpoint", s.endpoint.take())?;
    let endpoint = url(c, &["sinks", name, "endpoint"], &endpoint)?;
    let token = secret(
        c,
        &["sinks", name],
        "token",
        s.token.take(),
        s.token_file.take(),
    )?
    .ok_or_else(|| {
        c.err(
            &["sinks", name],
            "a splunk_hec sink needs `token_file` (or `token`): the HEC token",
        )
    })?;
    let indexer_acknowledgement = s.indexer_acknowledgement.unwrap_or(false);
    if !indexer_acknowledgement {
        refuse_keys(
            c,
            "sinks",
            name,
            "splunk_hec without indexer_acknowledgement",
            &[
                ("ack_poll_interval", s.ack_poll_interval.is_some()),
                ("ack_timeout", s.ack_timeout.is_some()),
            ],
        )?;
    }
    let ack_poll_interval = s.ack_poll_interval.map_or(Duration::from_secs(1), |d| d.0);
    let ack_timeout = s.ack_timeout.map_or(Duration::from_secs(300), |d| d.0);
    if ack_poll_interval < Duration::from_millis(10) || ack_timeout < ack_poll_interval {
        return Err(c.err(
            &["sinks", name, "ack_timeout"],
            "ack_poll_interval must be at least 10ms and ack_timeout at least ack_poll_interval",
        ));
    }
    let delivery = delivery(name, &mut s, c)?;
    Ok(SplunkHecConfig {
        endpoint,
        token,
        index: s.index.take(),
        sourcetype: s.sourcetype.take(),
        source: s.source.take(),
        indexer_acknowledgement,
        ack_poll_interval,
        ack_timeout,
        delivery,
    })
}

/// Elasticsearch's rules for an index or data stream name (its "Create index API"
/// reference): lowercase; none of `\ / * ? " < > | , # :` or a space; not starting with
/// `-`, `_` or `+`; not `.` or `..`; at most 255 bytes. A name it refuses would refuse
/// every event at run time, so it is refused here.
fn es_index_name(index: &str) -> Result<(), String> {
    let problem = if index.is_empty() {
        Some("is empty")
    } else if index.len() > 255 {
        Some("is longer than 255 bytes")
    } else if index.chars().any(char::is_uppercase) {
        Some("has uppercase letters (Elasticsearch takes lowercase names only)")
    } else if index.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        Some("contains one of \\ / * ? \" < > | , # : or a space")
    } else if index.starts_with(['-', '_', '+']) {
        Some("starts with -, _ or +")
    } else if index == "." || index == ".." {
        Some("is . or ..")
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!(
            "{index:?} {p}: Elasticsearch would refuse every event (invalid_index_name_exception)"
        )),
        None => Ok(()),
    }
}

fn elasticsearch(
    name: &str,
    mut s: RawSink,
    c: &Checker<'_>,
) -> Result<ElasticsearchConfig, ConfigError> {
    const KIND: &str = "elasticsearch";
    refuse_keys(
        c,
        "sinks",
        name,
        KIND,
        &platform_keys(&s, &["endpoints", "index"]),
    )?;
    let Some(list) = s.endpoints.take().filter(|l| !l.is_empty()) else {
        return Err(c.err(
            &["sinks", name],
            "an elasticsearch sink needs `endpoints = [\"https://es1:9200\", …]`",
        ));
    };
    let mut endpoints = Vec::with_capacity(list.len());
    for e in &list {
        endpoints.push(url(c, &["sinks", name, "endpoints"], e)?);
    }
    let index = s
        .index
        .take()
        .unwrap_or_else(|| "logs-gapless-default".into());
    if let Err(why) = es_index_name(&index) {
        return Err(c.err(&["sinks", name, "index"], why));
    }
    let auth = s.auth.take().unwrap_or_default();
    refuse_auth_keys(
        c,
        name,
        KIND,
        &auth,
        &[
            "api_key",
            "api_key_file",
            "username",
            "password",
            "password_file",
        ],
    )?;
    let auth_path = ["sinks", name, "auth"];
    let api_key = secret(c, &auth_path, "api_key", auth.api_key, auth.api_key_file)?;
    let password = secret(c, &auth_path, "password", auth.password, auth.password_file)?;
    let auth = match (api_key, auth.username, password) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(c.err(
                &auth_path,
                "give an api key or a username and password, not both",
            ))
        }
        (Some(k), None, None) => ElasticsearchAuth::ApiKey(k),
        (None, Some(username), Some(password)) => ElasticsearchAuth::Basic { username, password },
        (None, Some(_), None) | (None, None, Some(_)) => {
            return Err(c.err(&auth_path, "username and password go together"))
        }
        (None, None, None) => ElasticsearchAuth::None,
    };
    let delivery = delivery(name, &mut s, c)?;
    Ok(ElasticsearchConfig {
        endpoints,
        index,
        auth,
        delivery,
    })
}

/// A NATS subject one publishes on: dot-separated tokens, none empty, no whitespace, and
/// no wildcards (`*`, `>`: they are for subscribing).
fn nats_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!("{subject:?} contains whitespace"));
    }
    if subject.contains(['*', '>']) {
        return Err(format!(
            "{subject:?} has a wildcard (* or >): messages are published on one subject"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "{subject:?} has an empty token (a leading, trailing or double dot)"
        ));
    }
    Ok(())
}

fn nats(name: &str, mut s: RawSink, c: &Checker<'_>) -> Result<NatsConfig, ConfigError> {
    const KIND: &str = "nats";
    refuse_keys(
        c,
        "sinks",
        name,
        KIND,
        &platform_keys(&s, &["url", "subject"]),
    )?;
    let urls = required(c, name, KIND, "url", s.url.take())?;
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_string()).collect();
    for u in &urls {
        let scheme_ok = u.starts_with("nats://") || u.starts_with("tls://");
        let parsed = u.parse::<async_nats::ServerAddr>();
        if parsed
            .as_ref()
            .is_ok_and(async_nats::ServerAddr::has_user_pass)
            || reqwest::Url::parse(u).is_ok_and(|u| !u.username().is_empty())
        {
            return Err(c.err(
                &["sinks", name, "url"],
                "credentials do not go in the URL (it is shown in logs and /status): use auth.token_file or auth.credentials_file",
            ));
        }
        if !scheme_ok || parsed.is_err() {
            return Err(c.err(
                &["sinks", name, "url"],
                format!("{u:?} is not a NATS server URL like nats://127.0.0.1:4222 or tls://host:4222 (several: comma separated)"),
            ));
        }
    }
    let subject = required(c, name, KIND, "subject", s.subject.take())?;
    if let Err(why) = nats_subject(&subject) {
        return Err(c.err(&["sinks", name, "subject"], why));
    }
    // A message is one event: there is nothing to compress together.
    if s.compression.as_deref() == Some("gzip") {
        return Err(c.err(
            &["sinks", name, "compression"],
            "a nats sink publishes one event per message, uncompressed: leave `compression` out (or \"none\")",
        ));
    }
    if s.tls
        .as_ref()
        .is_some_and(|t| t.insecure_skip_verify == Some(true))
    {
        return Err(c.err(
            &["sinks", name, "tls", "insecure_skip_verify"],
            "is not available for a nats sink: give the server's CA in `tls.ca_file`",
        ));
    }
    let auth = s.auth.take().unwrap_or_default();
    refuse_auth_keys(c, name, KIND, &auth, &["credentials_file", "token_file"])?;
    if auth.credentials_file.is_some() && auth.token_file.is_some() {
        return Err(c.err(
            &["sinks", name, "auth"],
            "give `credentials_file` or `token_file`, not both",
        ));
    }
    let mut delivery = delivery(name, &mut s, c)?;
    delivery.gzip = false;
    Ok(NatsConfig {
        urls,
        subject,
        auth: NatsAuth {
            credentials_file: auth.credentials_file,
            token_file: auth.token_file,
        },
        delivery,
    })
}
