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
use crate::sinks::retry::parse_retry_after;
use token::TokenSource;

/// The Logs Ingestion API's limit per call, compressed and uncompressed.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;

/// Events older than this get `TimeOriginal` and a warning (Azure rewrites at two days).
const OLD_EVENT: Duration = Duration::from_secs(24 * 3600);

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
}

impl AzureMonitorLogs {
    /// The platform of sink `name` for agent `agent_id`.
    pub fn new(name: &str, agent_id: &str, cfg: &AzureMonitorLogsConfig) -> Result<Self> {
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
        })
    }

    /// Counts an event old enough for Azure to rewrite soon, and warns now and then.
    fn old_event(&self, age: Duration) {
        let n = self.old_events.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut warned) = self.old_warned.lock() else {
            return;
        };
        if warned.is_none_or(|t| t.elapsed() >= OLD_EVENT_WARNING_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(sink = %self.name, age_hours = age.as_secs() / 3600, old_events = n, "sending events over a day old: Azure replaces a TimeGenerated older than two days by the time it receives the row; their own time is kept in TimeOriginal");
        }
    }
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
        let age = Duration::from_nanos(crate::event::unix_nanos_now().saturating_sub(time));
        if age >= OLD_EVENT && !matches!(item.kind, ItemKind::Notice { .. }) {
            head.push(b',');
            write_json_str(&mut head, TIME_ORIGINAL);
            head.extend_from_slice(b":\"");
            head.extend_from_slice(ts.as_str().as_bytes());
            head.push(b'"');
            self.old_event(age);
        }
        // Heartbeats carry the agent id themselves.
        if item.kind != ItemKind::Heartbeat {
            head.extend_from_slice(&self.agent_head);
        }
        item.write_object(out, &head);
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
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
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
            413 => Answer::TooLarge,
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
    }
}
