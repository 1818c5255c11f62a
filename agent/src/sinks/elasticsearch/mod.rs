//! `elasticsearch`: Elasticsearch or OpenSearch through `_bulk`, after Elasticsearch's
//! "Bulk API" reference and the data-stream documentation, with the per-item policy Beats
//! follows (`libbeat/outputs/elasticsearch`).
//!
//! - Request: `POST {endpoint}/_bulk`, `Content-Type: application/x-ndjson`, gzip,
//!   `Authorization: ApiKey <key>` or basic authentication. Endpoints are used in turn; one
//!   that did not answer is avoided for 30 seconds while another is left.
//! - Body: per event a `create` action with the index and a **deterministic `_id`** —
//!   `<agent id>-<seq>` (a dead-letter notice: `<agent id>-dead-letter-<first>-<last>`) —
//!   then the document: `@timestamp` (the event time), `agent_id`, the seq, the event's
//!   fields. `create` is what data streams accept, and with the `_id` a resend after a crash
//!   or a lost answer cannot index an event twice: Elasticsearch answers 409.
//! - The whole request: 2xx → read the items; 408, 429, 5xx retried (`Retry-After`); 413
//!   split; 401/403 retried with an alarm; other 4xx refused for good.
//! - Each item, in request order: status < 300 delivered; 409
//!   `version_conflict_engine_exception` delivered (it is already there); 429 and 5xx sent
//!   again (only those items); any other status (`mapper_parsing_exception`, …) refused for
//!   good: a dead letter, and a notice naming the error type.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{ElasticsearchAuth, ElasticsearchConfig};
use crate::error::{Error, Result};
use crate::event::{write_json_str, Timestamp};
use crate::reserved::{AGENT_ID, ES_TIMESTAMP};
use crate::sinks::delivery::{
    Answer, Framing, Item, ItemAnswer, ItemKind, NotReady, Outgoing, Platform, Rejection,
};
use crate::sinks::retry::retry_after;

/// How long an endpoint that did not answer is avoided.
const AVOID_FOR: Duration = Duration::from_secs(30);

/// The platform of one `elasticsearch` sink.
pub struct Elasticsearch {
    endpoints: Vec<reqwest::Url>,
    down: Mutex<Vec<Option<Instant>>>,
    next: AtomicUsize,
    auth: ElasticsearchAuth,
    /// `{"create":{"_index":"…","_id":"<agent id>-`, the agent id escaped for a JSON string.
    action_head: Vec<u8>,
    /// `"@timestamp":"`.
    time_head: Vec<u8>,
    /// `,"agent_id":"…"`.
    agent_head: Vec<u8>,
}

impl Elasticsearch {
    /// The platform of sink `name` for agent `agent_id`.
    pub fn new(name: &str, agent_id: &str, cfg: &ElasticsearchConfig) -> Result<Self> {
        let mut endpoints = Vec::with_capacity(cfg.endpoints.len());
        for e in &cfg.endpoints {
            let base = e.as_str().trim_end_matches('/');
            endpoints.push(
                reqwest::Url::parse(&format!("{base}/_bulk")).map_err(|err| Error::Client {
                    sink: name.to_string(),
                    reason: format!("endpoint {e}: {err}"),
                })?,
            );
        }
        let mut action_head = b"{\"create\":{\"_index\":".to_vec();
        write_json_str(&mut action_head, &cfg.index);
        action_head.extend_from_slice(b",\"_id\":");
        write_json_str(&mut action_head, agent_id);
        action_head.pop(); // the closing quote: the id goes on
        action_head.push(b'-');
        let mut time_head = Vec::new();
        write_json_str(&mut time_head, ES_TIMESTAMP);
        time_head.extend_from_slice(b":\"");
        let mut agent_head = b",".to_vec();
        write_json_str(&mut agent_head, AGENT_ID);
        agent_head.push(b':');
        write_json_str(&mut agent_head, agent_id);
        Ok(Elasticsearch {
            down: Mutex::new(vec![None; endpoints.len()]),
            endpoints,
            next: AtomicUsize::new(0),
            auth: cfg.auth.clone(),
            action_head,
            time_head,
            agent_head,
        })
    }

    /// The next endpoint in turn, skipping those that recently did not answer (unless all
    /// did).
    fn endpoint(&self) -> reqwest::Url {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(down) = self.down.lock() {
            for k in 0..n {
                let i = (start + k) % n;
                if down[i].is_none_or(|t| t.elapsed() >= AVOID_FOR) {
                    return self.endpoints[i].clone();
                }
            }
        }
        self.endpoints[start % n].clone()
    }
}

/// The part of a `_bulk` answer read first.
#[derive(Deserialize)]
struct BulkSummary {
    errors: bool,
}

/// A `_bulk` answer with errors: one `{"<action>": {…}}` per item.
#[derive(Deserialize)]
struct BulkAnswer {
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// `type` and `reason` of an `error` object (or the string itself).
fn error_parts(error: Option<&serde_json::Value>) -> (String, String) {
    match error {
        Some(serde_json::Value::Object(o)) => (
            o.get("type")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .to_string(),
            o.get("reason")
                .and_then(|t| t.as_str())
                .unwrap_or("")
                .chars()
                .take(1024)
                .collect(),
        ),
        Some(serde_json::Value::String(s)) => (s.chars().take(200).collect(), String::new()),
        _ => (String::new(), String::new()),
    }
}

fn item_answer(item: &BulkItem) -> ItemAnswer {
    match item.status {
        0..=299 | 409 => ItemAnswer::Delivered,
        s @ (429 | 500..=599) => {
            let (kind, _) = error_parts(item.error.as_ref());
            ItemAnswer::Retry(format!("item {s} {kind}"))
        }
        s => {
            let (kind, reason) = error_parts(item.error.as_ref());
            ItemAnswer::Rejected(Rejection {
                status: s,
                error: kind,
                response: reason,
            })
        }
    }
}

/// What a 2xx `_bulk` answer says, item by item.
fn read_bulk(body: &[u8], items: usize) -> Answer {
    match serde_json::from_slice::<BulkSummary>(body) {
        Ok(BulkSummary { errors: false }) => Answer::Delivered,
        Ok(BulkSummary { errors: true }) => match serde_json::from_slice::<BulkAnswer>(body) {
            Ok(answer) => Answer::Items(
                answer
                    .items
                    .iter()
                    .map(|i| match i.values().next() {
                        Some(item) => item_answer(item),
                        None => ItemAnswer::Retry("an empty item in the answer".into()),
                    })
                    .collect(),
            ),
            Err(e) => Answer::Retry {
                wait: None,
                why: format!("a _bulk answer with errors that does not parse: {e}"),
                alarm: false,
            },
        },
        // Resending is safe (the ids make it idempotent); guessing is not.
        Err(e) => Answer::Retry {
            wait: None,
            why: format!("not a _bulk answer ({items} items sent): {e}"),
            alarm: false,
        },
    }
}

impl Platform for Elasticsearch {
    fn framing(&self) -> Framing {
        Framing::Lines
    }

    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.action_head);
        match item.kind {
            ItemKind::Notice {
                first_seq,
                last_seq,
            } => out.extend_from_slice(format!("dead-letter-{first_seq}-{last_seq}").as_bytes()),
            _ => out.extend_from_slice(item.seq.to_string().as_bytes()),
        }
        out.extend_from_slice(b"\"}}\n");
        let mut head = Vec::with_capacity(96);
        head.extend_from_slice(&self.time_head);
        head.extend_from_slice(Timestamp::from_unix_nanos(item.time()).as_str().as_bytes());
        head.push(b'"');
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
        let req = client
            .post(self.endpoint())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        Ok(match &self.auth {
            ElasticsearchAuth::None => req,
            ElasticsearchAuth::ApiKey(key) => {
                let key = key.read().map_err(|why| NotReady {
                    why: format!("api key: {why}"),
                })?;
                let mut v = reqwest::header::HeaderValue::from_str(&format!("ApiKey {key}"))
                    .map_err(|_| NotReady {
                        why: "the api key is not a valid header value".into(),
                    })?;
                v.set_sensitive(true);
                req.header(reqwest::header::AUTHORIZATION, v)
            }
            ElasticsearchAuth::Basic { username, password } => {
                let password = password.read().map_err(|why| NotReady {
                    why: format!("password: {why}"),
                })?;
                req.basic_auth(username, Some(password))
            }
        })
    }

    fn unreachable(&self, url: &reqwest::Url) {
        if self.endpoints.len() < 2 {
            return;
        }
        if let (Some(i), Ok(mut down)) = (
            self.endpoints.iter().position(|e| e == url),
            self.down.lock(),
        ) {
            down[i] = Some(Instant::now());
        }
    }

    async fn read(
        &self,
        _client: &reqwest::Client,
        response: reqwest::Response,
        items: usize,
    ) -> Answer {
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Answer::Retry {
                    wait: None,
                    why: format!(
                        "reading the answer: {}",
                        crate::sinks::delivery::error_chain(&e)
                    ),
                    alarm: false,
                }
            }
        };
        if status.is_success() {
            return read_bulk(&body, items);
        }
        let error = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let (kind, reason) = error_parts(error.as_ref().and_then(|v| v.get("error")));
        let why = |what: &str| format!("HTTP {status} {kind}: {what}");
        match status.as_u16() {
            401 | 403 => Answer::Retry {
                wait: retry_after,
                why: why("credentials refused"),
                alarm: true,
            },
            408 | 429 | 500..=599 => Answer::Retry {
                wait: retry_after,
                why: why("retrying"),
                alarm: false,
            },
            413 => Answer::TooLarge(Rejection {
                status: 413,
                error: kind,
                response: String::from_utf8_lossy(&body).chars().take(2048).collect(),
            }),
            300..=399 => Answer::Retry {
                wait: None,
                why: why("redirects are not followed; check the endpoints"),
                alarm: true,
            },
            s => Answer::Rejected(Rejection {
                status: s,
                error: kind,
                response: if reason.is_empty() {
                    String::from_utf8_lossy(&body).chars().take(2048).collect()
                } else {
                    reason
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_delivered_retried_or_refused_as_beats_does() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a-1","status":201}},
            {"create":{"_index":"i","_id":"a-2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"i","_id":"a-3","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"i","_id":"a-4","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"_index":"i","_id":"a-5","status":503,"error":{"type":"unavailable_shards_exception","reason":"x"}}}]}"#;
        let Answer::Items(items) = read_bulk(body, 5) else {
            panic!("expected items");
        };
        assert!(matches!(items[0], ItemAnswer::Delivered));
        assert!(matches!(items[1], ItemAnswer::Delivered));
        assert!(matches!(items[2], ItemAnswer::Retry(_)));
        match &items[3] {
            ItemAnswer::Rejected(r) => {
                assert_eq!(r.status, 400);
                assert_eq!(r.error, "mapper_parsing_exception");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert!(matches!(items[4], ItemAnswer::Retry(_)));
    }

    #[test]
    fn an_answer_without_errors_delivers_all_and_garbage_is_retried() {
        assert!(matches!(
            read_bulk(br#"{"took":1,"errors":false,"items":[]}"#, 3),
            Answer::Delivered
        ));
        assert!(matches!(read_bulk(b"<html>", 3), Answer::Retry { .. }));
    }
}
