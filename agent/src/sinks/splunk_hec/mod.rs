//! `splunk_hec`: Splunk's HTTP Event Collector, after Splunk's "Format events for HTTP Event
//! Collector", "HTTP Event Collector REST API endpoints" and "About HTTP Event Collector
//! Indexer Acknowledgment".
//!
//! - Request: `POST {endpoint}/services/collector/event`, `Authorization: Splunk <token>`,
//!   gzip; concatenated event objects, one per line:
//!   `{"time":<epoch seconds.micros>,"host":…,"source":…,"sourcetype":…,"index":…,"event":{…},"fields":{"agent_id":…,"seq":"N"}}`.
//!   `event` is the event as the `http` sink sends it (seq included); `fields` are indexed
//!   fields, so a search can check continuity without parsing events.
//! - Answers: 200 code 0 accepted; 503 code 9 (busy) and other 5xx retried (`Retry-After`);
//!   400 code 6 with `invalid-event-number` N: event N refused for good (a dead letter),
//!   every other event of the request sent again (whether Splunk indexed those before N is
//!   not documented: sending them again can duplicate, never lose); 401/403 (codes 2, 3, 4)
//!   and 400 codes 7 (index not allowed), 10, 11 (channel) and 14 (acknowledgement disabled)
//!   retried with an alarm: configuration to fix; other 400 codes refused for good; 413 split.
//! - Indexer acknowledgement ([`ack`]): with it, accepted is not delivered — the request's
//!   `ackId` must be reported `true` by `/services/collector/ack` first. A 200 without
//!   `ackId` (the token has acknowledgement off) counts as delivered, with an error logged:
//!   sending it again would index it again, and Splunk offers nothing more to wait for.

pub mod ack;

use serde::Deserialize;

use crate::config::{Secret, SplunkHecConfig};
use crate::error::{Error, Result};
use crate::event::write_json_str;
use crate::reserved::AGENT_ID;
use crate::sinks::delivery::{
    Answer, Framing, Item, ItemAnswer, NotReady, Outgoing, Platform, Rejection,
};
use crate::sinks::retry::retry_after;
use ack::AckWaiter;

/// The platform of one `splunk_hec` sink.
pub struct SplunkHec {
    event_url: reqwest::Url,
    token: Secret,
    /// `,"host":"…"`.
    host: Vec<u8>,
    /// The configured `source`, escaped, if any.
    source: Option<Vec<u8>>,
    /// `,"sourcetype":…,"index":…` as configured.
    tail: Vec<u8>,
    /// `,"fields":{"agent_id":"…","seq":"`.
    fields_head: Vec<u8>,
    acks: Option<AckWaiter>,
}

impl SplunkHec {
    /// The platform of sink `name` for agent `agent_id`.
    pub fn new(name: &str, agent_id: &str, cfg: &SplunkHecConfig) -> Result<Self> {
        let base = cfg.endpoint.as_str().trim_end_matches('/');
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| Error::Client {
                sink: name.to_string(),
                reason: format!("endpoint: {e}"),
            })
        };
        let event_url = url("/services/collector/event")?;
        let acks = if cfg.indexer_acknowledgement {
            Some(AckWaiter::new(
                url("/services/collector/ack")?,
                cfg.token.clone(),
                cfg.ack_poll_interval,
                cfg.ack_timeout,
            ))
        } else {
            None
        };
        let mut host = b",\"host\":".to_vec();
        write_json_str(&mut host, &crate::event::hostname());
        let source = cfg.source.as_ref().map(|s| {
            let mut v = Vec::new();
            write_json_str(&mut v, s);
            v
        });
        let mut tail = Vec::new();
        for (k, v) in [("sourcetype", &cfg.sourcetype), ("index", &cfg.index)] {
            if let Some(v) = v {
                tail.push(b',');
                write_json_str(&mut tail, k);
                tail.push(b':');
                write_json_str(&mut tail, v);
            }
        }
        let mut fields_head = b",\"fields\":{".to_vec();
        write_json_str(&mut fields_head, AGENT_ID);
        fields_head.push(b':');
        write_json_str(&mut fields_head, agent_id);
        fields_head.extend_from_slice(b",\"seq\":\"");
        Ok(SplunkHec {
            event_url,
            token: cfg.token.clone(),
            host,
            source,
            tail,
            fields_head,
            acks,
        })
    }
}

/// A HEC answer: `{"text":"Success","code":0}`, with `ackId` under acknowledgement and
/// `invalid-event-number` for a code 6.
#[derive(Deserialize, Default)]
struct HecAnswer {
    #[serde(default)]
    text: String,
    code: Option<u64>,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event_number: Option<u64>,
}

/// `Authorization: Splunk <token>`, or why it cannot be made.
pub(crate) fn authorization(
    token: &Secret,
) -> std::result::Result<reqwest::header::HeaderValue, NotReady> {
    let token = token.read().map_err(|why| NotReady {
        why: format!("HEC token: {why}"),
    })?;
    let mut v =
        reqwest::header::HeaderValue::from_str(&format!("Splunk {token}")).map_err(|_| {
            NotReady {
                why: "the HEC token is not a valid header value".into(),
            }
        })?;
    v.set_sensitive(true);
    Ok(v)
}

impl Platform for SplunkHec {
    fn framing(&self) -> Framing {
        Framing::Lines
    }

    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
        let nanos = item.time();
        out.extend_from_slice(
            format!(
                "{{\"time\":{}.{:06}",
                nanos / 1_000_000_000,
                (nanos % 1_000_000_000) / 1000
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.host);
        out.extend_from_slice(b",\"source\":");
        match &self.source {
            Some(s) => out.extend_from_slice(s),
            None if item.source.is_empty() => out.extend_from_slice(b"\"gapless\""),
            None => write_json_str(out, item.source),
        }
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(b",\"event\":");
        item.write_object(out, b"");
        out.extend_from_slice(&self.fields_head);
        out.extend_from_slice(item.seq.to_string().as_bytes());
        out.extend_from_slice(b"\"}}");
    }

    async fn request(
        &self,
        client: &reqwest::Client,
        _outgoing: &Outgoing<'_>,
    ) -> std::result::Result<reqwest::RequestBuilder, NotReady> {
        let mut req = client
            .post(self.event_url.clone())
            .header(reqwest::header::AUTHORIZATION, authorization(&self.token)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(acks) = &self.acks {
            req = req.header("x-splunk-request-channel", acks.channel());
        }
        Ok(req)
    }

    async fn read(
        &self,
        client: &reqwest::Client,
        response: reqwest::Response,
        items: usize,
    ) -> Answer {
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = response.text().await.unwrap_or_default();
        let answer: HecAnswer = serde_json::from_str(&body).unwrap_or_default();
        let code = answer
            .code
            .map_or("no code".to_string(), |c| format!("code {c}"));
        let why = |what: &str| format!("HTTP {status} {code} {:?}: {what}", answer.text);
        if status.is_success() {
            return match (&self.acks, answer.ack_id) {
                (Some(acks), Some(id)) => acks.wait(client, id).await,
                // Splunk took the events but offers no acknowledgement (the token has it
                // off): delivered as without it — resending would index them again and again.
                (Some(acks), None) => {
                    acks.no_ack_id();
                    Answer::Delivered
                }
                (None, _) => Answer::Delivered,
            };
        }
        match (status.as_u16(), answer.code) {
            (400, Some(6)) => match answer.invalid_event_number {
                Some(n) if (n as usize) < items => Answer::Items(
                    (0..items)
                        .map(|i| {
                            if i == n as usize {
                                ItemAnswer::Rejected(Rejection {
                                    status: 400,
                                    error: "splunk code 6".into(),
                                    response: body.chars().take(2048).collect(),
                                })
                            } else {
                                ItemAnswer::Retry("another event of the request was invalid".into())
                            }
                        })
                        .collect(),
                ),
                _ => Answer::Rejected(Rejection {
                    status: 400,
                    error: "splunk code 6".into(),
                    response: body.chars().take(2048).collect(),
                }),
            },
            (400, Some(10 | 11 | 14)) => Answer::Retry {
                wait: retry_after,
                why: why("check indexer_acknowledgement against the token's settings"),
                alarm: true,
            },
            // The index is the sink's configuration, not the events' fault: every event
            // would be refused alike, so it waits for the fix instead of filling the
            // dead-letter queue.
            (400, Some(7)) => Answer::Retry {
                wait: retry_after,
                why: why("the token may not write to this index; check `index` and the token's allowed indexes"),
                alarm: true,
            },
            (401 | 403, _) => Answer::Retry {
                wait: retry_after,
                why: why("the HEC token is refused"),
                alarm: true,
            },
            (408 | 429 | 500..=599, _) => Answer::Retry {
                wait: retry_after,
                why: why("retrying"),
                alarm: false,
            },
            (413, c) => Answer::TooLarge(Rejection {
                status: 413,
                error: c.map_or(String::new(), |c| format!("splunk code {c}")),
                response: body.chars().take(2048).collect(),
            }),
            (300..=399, _) => Answer::Retry {
                wait: None,
                why: why("redirects are not followed; check the endpoint"),
                alarm: true,
            },
            (s, c) => Answer::Rejected(Rejection {
                status: s,
                error: c.map_or(String::new(), |c| format!("splunk code {c}")),
                response: body.chars().take(2048).collect(),
            }),
        }
    }
}
