//! `azure_monitor_logs`: the Azure Monitor Logs Ingestion API, which feeds Log Analytics
//! workspaces and Microsoft Sentinel.
//!
//! - Request: `POST {endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream_name}?api-version=2023-01-01`
//!   with `Authorization: Bearer <Entra ID token>` ([`token`]), `Content-Type:
//!   application/json`, gzip, and an `x-ms-client-request-id`. Source: Microsoft's
//!   "Logs Ingestion API in Azure Monitor" and the 2023-01-01 REST specification.
//! - Body: a JSON array of objects matching the DCR's stream declaration: each event's
//!   fields, with the event time under `time_field` (`TimeGenerated`), the agent id under
//!   `agent_id` and the seq under the sink's `seq_field` (see `packaging/azure/`).
//! - Limits: 1 MB per call, compressed and uncompressed (413 `ContentLengthLimitExceeded`
//!   otherwise): requests are packed under 1,048,576 bytes before sending; an event larger
//!   than that alone goes to the dead letters.
//! - Answers (no per-row status: a call is all or nothing): 204 (any 2xx) delivered; 413
//!   split; 408, 429, 5xx retried after `Retry-After`; 401 a new token, then retried; 403
//!   (the app lacks "Monitoring Metrics Publisher" on the DCR) and 404 (a wrong DCR, stream
//!   or endpoint) retried with an error alarm — configuration to fix, never a reason to
//!   drop; any other 4xx refused for good.
//! - Long messages: Azure truncates a field value over 64 KB, so a `message` longer than
//!   60,000 bytes goes over several rows with the same seq, flagged `partial` (all but the
//!   last) and `continued` (all but the first), as the file source flags a line it splits.
//! - Time: Azure replaces a `TimeGenerated` older than two days by the time it received
//!   the row. An event over a day old when sent also gets `TimeOriginal` (its own time,
//!   kept whatever Azure does) and the sink warns, so an outage cannot silently rewrite
//!   timestamps; `timestamp` keeps the time as the source gave it.

pub mod token;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AzureMonitorLogsConfig;
use crate::error::{Error, Result};
use crate::event::{write_json_str, Timestamp};
use crate::reserved::{AGENT_ID, TIME_ORIGINAL};
use crate::sinks::delivery::{
    Answer, Framing, Item, ItemKind, NotReady, Outgoing, Platform, Rejection,
};
use crate::sinks::retry::retry_after;
use token::TokenSource;

/// The Logs Ingestion API's limit per call, compressed and uncompressed.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;

/// Events older than this get `TimeOriginal` and a warning (Azure rewrites at two days).
const OLD_EVENT: Duration = Duration::from_secs(24 * 3600);

/// Events further in the future than this get `TimeOriginal` and a warning (Azure rewrites
/// a `TimeGenerated` more than a day ahead; this leaves room for clock skew).
const FUTURE_EVENT: Duration = Duration::from_secs(12 * 3600);

/// The columns of the shipped DCR's stream (`packaging/azure/dcr.json`, checked by a test)
/// besides the agent's own field names ([`crate::reserved::AGENT_FIELDS`], all columns too):
/// fields with these names go at the top level. A client's other fields go under
/// [`ATTRIBUTES`], because Azure drops properties its stream does not declare.
pub const STREAM_COLUMNS: &[&str] = &[
    "TimeGenerated",
    TIME_ORIGINAL,
    crate::reserved::DEFAULT_SEQ_FIELD,
    ATTRIBUTES,
];

/// Azure truncates a field value over 64 KB; a longer `message` is sent over several rows
/// of at most this many bytes each.
const MESSAGE_PART_BYTES: usize = 60_000;

/// The `dynamic` column holding a client's fields that are not columns.
pub const ATTRIBUTES: &str = "attributes";

/// How often the warning about old events is repeated while they keep coming.
const OLD_EVENT_WARNING_EVERY: Duration = Duration::from_secs(300);

/// The platform of one `azure_monitor_logs` sink.
pub struct AzureMonitorLogs {
    name: String,
    url: reqwest::Url,
    token: TokenSource,
    /// `"TimeGenerated":"`.
    time_head: Vec<u8>,
    /// `,"agent_id":"…"`.
    agent_head: Vec<u8>,
    old_events: AtomicU64,
    old_warned: Mutex<Option<Instant>>,
    /// The sink's seq field and time field: columns too.
    own_columns: [String; 2],
}

impl AzureMonitorLogs {
    /// The platform of sink `name` for agent `agent_id`.
    pub fn new(
        name: &str,
        agent_id: &str,
        seq_field: Option<&str>,
        cfg: &AzureMonitorLogsConfig,
    ) -> Result<Self> {
        let err = |reason: String| Error::Client {
            sink: name.to_string(),
            reason,
        };
        let base = cfg.endpoint.as_str().trim_end_matches('/');
        let url = reqwest::Url::parse(&format!(
            "{base}/dataCollectionRules/{}/streams/{}?api-version=2023-01-01",
            cfg.dcr_immutable_id, cfg.stream_name
        ))
        .map_err(|e| err(format!("endpoint: {e}")))?;
        let token = TokenSource::new(
            &cfg.authority,
            &cfg.tenant_id,
            &cfg.client_id,
            cfg.client_secret.clone(),
            &cfg.scope,
        )
        .map_err(err)?;
        let mut time_head = Vec::new();
        write_json_str(&mut time_head, &cfg.time_field);
        time_head.extend_from_slice(b":\"");
        let mut agent_head = b",".to_vec();
        write_json_str(&mut agent_head, AGENT_ID);
        agent_head.push(b':');
        write_json_str(&mut agent_head, agent_id);
        Ok(AzureMonitorLogs {
            name: name.to_string(),
            url,
            token,
            time_head,
            agent_head,
            old_events: AtomicU64::new(0),
            old_warned: Mutex::new(None),
            own_columns: [
                seq_field.unwrap_or("seq").to_string(),
                cfg.time_field.clone(),
            ],
        })
    }

    /// A client's object with its fields that are not columns moved into one `attributes`
    /// object, in order (`None`: nothing to move, or not an object).
    fn group_attributes(&self, json: &[u8]) -> Option<Vec<u8>> {
        let object = crate::client_json::ClientObject::parse(std::str::from_utf8(json).ok()?)?;
        let is_column = |n: &Option<std::borrow::Cow<'_, str>>| {
            n.as_deref().is_some_and(|n| {
                n != ATTRIBUTES
                    && (crate::reserved::AGENT_FIELDS.contains(&n)
                        || STREAM_COLUMNS.contains(&n)
                        || self.own_columns.iter().any(|c| c == n))
            })
        };
        if object.entries().all(|(n, _, _)| is_column(&n)) {
            return None;
        }
        // The fields that are columns (`columns`) or the others, as `"k":v` pairs in order.
        let fields = |out: &mut Vec<u8>, columns: bool| {
            let mut first = true;
            for (_, k, v) in object.entries().filter(|(n, _, _)| is_column(n) == columns) {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(k.get().as_bytes());
                out.push(b':');
                out.extend_from_slice(v.get().as_bytes());
            }
            !first
        };
        let mut out = Vec::with_capacity(json.len() + 16);
        out.push(b'{');
        if fields(&mut out, true) {
            out.push(b',');
        }
        write_json_str(&mut out, ATTRIBUTES);
        out.extend_from_slice(b":{");
        fields(&mut out, false);
        out.extend_from_slice(b"}}");
        Some(out)
    }

    /// Counts an event old enough for Azure to rewrite soon, and warns now and then.
    fn old_event(&self, age: Duration) {
        let n = self.old_events.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut warned) = self.old_warned.lock() else {
            return;
        };
        if warned.is_none_or(|t| t.elapsed() >= OLD_EVENT_WARNING_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(sink = %self.name, off_by_hours = age.as_secs() / 3600, old_events = n, "sending events over a day old (or half a day ahead): Azure replaces a TimeGenerated older than two days or over a day ahead by the time it receives the row; their own time is kept in TimeOriginal");
        }
    }
}

/// An object whose `message` is longer than [`MESSAGE_PART_BYTES`] as several objects (rows
/// of the JSON array, comma-separated), each with a part of it and the row's other fields:
/// `"partial":true` on all but the last, `"continued":true` on all but the first — the
/// flags of a line the file source sends in pieces. `None` when the message is short or the
/// object is not one.
fn split_message(json: &[u8]) -> Option<Vec<u8>> {
    let object = crate::client_json::ClientObject::parse(std::str::from_utf8(json).ok()?)?;
    let message: String = serde_json::from_str(object.get("message")?.get()).ok()?;
    // The line's own flags hold for its first and last parts.
    let flag = |name| object.get(name).is_some_and(|v| v.get() == "true");
    let (was_partial, was_continued) = (flag("partial"), flag("continued"));
    if message.len() <= MESSAGE_PART_BYTES {
        return None;
    }
    let mut parts = Vec::new();
    let mut rest = message.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(MESSAGE_PART_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let mut out = Vec::with_capacity(json.len() + parts.len() * 64);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let mut first = true;
        for (name, k, v) in object.entries() {
            let name = name.as_deref().unwrap_or("");
            if matches!(name, "partial" | "continued") {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(k.get().as_bytes());
            out.push(b':');
            if name == "message" {
                write_json_str(&mut out, part);
            } else {
                out.extend_from_slice(v.get().as_bytes());
            }
        }
        if i + 1 < parts.len() || was_partial {
            out.extend_from_slice(b",\"partial\":true");
        }
        if i > 0 || was_continued {
            out.extend_from_slice(b",\"continued\":true");
        }
        out.push(b'}');
    }
    Some(out)
}

impl Platform for AzureMonitorLogs {
    fn framing(&self) -> Framing {
        Framing::JsonArray
    }

    fn max_request_bytes(&self) -> Option<usize> {
        Some(MAX_REQUEST_BYTES)
    }

    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
        let time = item.time();
        let ts = Timestamp::from_unix_nanos(time);
        let mut head = Vec::with_capacity(96);
        head.extend_from_slice(&self.time_head);
        head.extend_from_slice(ts.as_str().as_bytes());
        head.push(b'"');
        let now = crate::event::unix_nanos_now();
        let age = Duration::from_nanos(now.saturating_sub(time));
        let ahead = Duration::from_nanos(time.saturating_sub(now));
        if (age >= OLD_EVENT || ahead >= FUTURE_EVENT)
            && !matches!(item.kind, ItemKind::Notice { .. })
        {
            head.push(b',');
            write_json_str(&mut head, TIME_ORIGINAL);
            head.extend_from_slice(b":\"");
            head.extend_from_slice(ts.as_str().as_bytes());
            head.push(b'"');
            self.old_event(age.max(ahead));
        }
        // Heartbeats carry the agent id themselves.
        if item.kind != ItemKind::Heartbeat {
            head.extend_from_slice(&self.agent_head);
        }
        let start = out.len();
        if item.kind == ItemKind::ClientEvent {
            let mut whole = Vec::new();
            item.write_object(&mut whole, &head);
            match self.group_attributes(&whole) {
                Some(grouped) => out.extend_from_slice(&grouped),
                None => out.extend_from_slice(&whole),
            }
        } else {
            item.write_object(out, &head);
        }
        if out.len() - start > MESSAGE_PART_BYTES {
            if let Some(rows) = split_message(&out[start..]) {
                out.truncate(start);
                out.extend_from_slice(&rows);
            }
        }
    }

    async fn request(
        &self,
        client: &reqwest::Client,
        _outgoing: &Outgoing<'_>,
    ) -> std::result::Result<reqwest::RequestBuilder, NotReady> {
        let token = self.token.get(client).await?;
        Ok(client
            .post(self.url.clone())
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string()))
    }

    async fn read(
        &self,
        _client: &reqwest::Client,
        response: reqwest::Response,
        _items: usize,
    ) -> Answer {
        let status = response.status();
        if status.is_success() {
            return Answer::Delivered;
        }
        let retry_after = retry_after(&response);
        let header_code = response
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .or(header_code)
            .unwrap_or_default();
        let body: String = body.chars().take(2048).collect();
        let why = |what: &str| format!("HTTP {status} {code}: {what}");
        match status.as_u16() {
            401 => {
                self.token.invalidate().await;
                Answer::Retry {
                    wait: None,
                    why: why("token refused; fetching a new one"),
                    alarm: false,
                }
            }
            403 => Answer::Retry {
                wait: retry_after,
                why: why("the app lacks the Monitoring Metrics Publisher role on the DCR"),
                alarm: true,
            },
            404 => Answer::Retry {
                wait: retry_after,
                why: why("no such DCR, stream or endpoint; check dcr_immutable_id, stream_name and endpoint"),
                alarm: true,
            },
            408 | 429 | 500..=599 => Answer::Retry {
                wait: retry_after,
                why: why("retrying"),
                alarm: false,
            },
            413 => Answer::TooLarge(Rejection {
                status: 413,
                error: code,
                response: body,
            }),
            300..=399 => Answer::Retry {
                wait: None,
                why: why("redirects are not followed; check the endpoint"),
                alarm: true,
            },
            s => Answer::Rejected(Rejection {
                status: s,
                error: code,
                response: body,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The shipped DCR declares a column for every top-level field gapless writes, so
    /// that none is silently dropped by Azure (which ignores undeclared properties).
    #[test]
    fn the_shipped_dcr_declares_every_field_the_agent_writes() {
        let dcr: serde_json::Value =
            serde_json::from_str(include_str!("../../../../packaging/azure/dcr.json"))
                .unwrap_or_default();
        let columns: Vec<&str> = dcr["properties"]["streamDeclarations"]["Custom-GaplessLogs_CL"]
            ["columns"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let written = crate::reserved::AGENT_FIELDS.iter().copied().chain([
            "TimeGenerated",
            crate::reserved::TIME_ORIGINAL,
            crate::reserved::AGENT_ID,
            crate::reserved::DEFAULT_SEQ_FIELD,
            crate::reserved::CLIENT_FIELDS,
        ]);
        for field in written {
            assert!(columns.contains(&field), "{field} is not a DCR column");
        }
        // The sink's idea of the columns is the DCR's.
        let mut shipped: Vec<&str> = columns.clone();
        let mut known: Vec<&str> = crate::reserved::AGENT_FIELDS
            .iter()
            .chain(super::STREAM_COLUMNS)
            .copied()
            .collect();
        shipped.sort_unstable();
        known.sort_unstable();
        assert_eq!(shipped, known);
    }
}

#[cfg(test)]
mod attribute_tests {
    use super::*;

    fn sink() -> AzureMonitorLogs {
        let cfg = crate::config::Config::parse(
            r#"[sources.a]
type = "stdin"
[sinks.s]
type = "azure_monitor_logs"
endpoint = "https://x.invalid"
dcr_immutable_id = "dcr-1"
stream_name = "Custom-A"
auth = { tenant_id = "t", client_id = "c", client_secret = "s" }"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::SinkKind::AzureMonitorLogs(c) = &cfg.sinks["s"].kind else {
            panic!("not azure")
        };
        AzureMonitorLogs::new("s", "a1", Some("seq"), c).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_clients_own_fields_go_under_attributes_in_order_and_columns_stay_on_top() {
        let s = sink();
        let grouped = s
            .group_attributes(br#"{"TimeGenerated":"t","seq":3,"message":"login","user":"alice","level":"warn","n":{"a":1}}"#)
            .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&grouped),
            r#"{"TimeGenerated":"t","seq":3,"message":"login","attributes":{"user":"alice","level":"warn","n":{"a":1}}}"#
        );
        assert!(s
            .group_attributes(br#"{"seq":3,"message":"only columns"}"#)
            .is_none());
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn a_long_message_goes_over_rows_flagged_partial_and_continued() {
        let message = "é".repeat(MESSAGE_PART_BYTES); // two bytes each: three rows
        let json = format!(r#"{{"seq":9,"message":"{message}","partial":true,"host":"h"}}"#);
        let rows = split_message(json.as_bytes()).unwrap_or_default();
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&[b"[".as_slice(), &rows, b"]"].concat()).unwrap_or_default();
        assert_eq!(rows.len(), 2);
        let joined: String = rows.iter().filter_map(|r| r["message"].as_str()).collect();
        assert_eq!(joined, message);
        assert_eq!(rows[0]["partial"], true);
        assert_eq!(rows[0].get("continued"), None);
        assert_eq!(rows[1]["continued"], true);
        // The line was partial itself: its last part still says so.
        assert_eq!(rows[1]["partial"], true);
        assert!(rows.iter().all(|r| r["seq"] == 9 && r["host"] == "h"));
        assert!(split_message(br#"{"message":"short"}"#).is_none());
    }
}
