//! `nats`: a NATS JetStream stream, through the official `async-nats` client, after the
//! JetStream documentation (publishing with acknowledgements, message de-duplication).
//! The platform sends its requests itself ([`Platform::publish`]); batching, retry,
//! per-item resend, dead letters, health and the cursor are the delivery mechanism's.
//!
//! - Body: the mechanism frames a request as lines (`Framing::Lines`, never gzip); each
//!   line is one item and becomes one message on `subject`. A message is the event's JSON
//!   object as the `http` sink writes it — its seq included — with `agent_id` first
//!   (heartbeats carry it themselves). Gap records and dead-letter notices are messages too.
//! - Headers: `Nats-Msg-Id: <agent id>-<seq>` (a replayed dead letter:
//!   `<agent id>-<seq>-replay`, with `Gapless-Replay: dead-letter`), `Gapless-Agent-Id`, and
//!   `Gapless-Prev-Seq`: the seq of the item before it in its batch, or the batch's first
//!   seq - 1 ([`Outgoing::prev_seq`]).
//!   Seqs strictly between the two were skipped by the sink's `inputs`: a consumer tells
//!   skips from loss.
//! - Pipelined: every message of a request is published before any acknowledgement is
//!   awaited, so a request costs about one round trip, not one per event.
//! - Delivered = a PubAck for every message of the request (one with `duplicate: true`
//!   too: the stream had it already). Only then may the cursor pass the batch.
//! - Exactly once into the stream within the stream's `duplicate_window` (default 2
//!   minutes): a message sent again under the same `Nats-Msg-Id` — after a lost PubAck, a
//!   reconnect, a crash of the agent — is dropped by the stream. A resend later than the
//!   window is stored again: a duplicate, never a loss.
//! - Answers: no stream takes the subject (no responders, 503) → retried with an alarm
//!   naming the subject; not connected, a timeout, a lost connection → retried; an error
//!   PubAck for some messages → only those are sent again; a message over the server's
//!   `max_payload` → refused for good (dead letter, with a notice), without being sent.

mod connect;

use async_nats::header::HeaderName;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, publish::PublishAck};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::VecDeque;

use tokio::time::Instant;

use crate::config::NatsConfig;
use crate::error::Result;
use crate::event::write_json_str;
use crate::reserved::AGENT_ID;
use crate::sinks::delivery::{
    Answer, Framing, Item, ItemAnswer, ItemKind, NotReady, Outgoing, Platform, Rejection,
};

const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
const AGENT_HEADER: HeaderName = HeaderName::from_static("Gapless-Agent-Id");
const PREV_SEQ: HeaderName = HeaderName::from_static("Gapless-Prev-Seq");
const REPLAY: HeaderName = HeaderName::from_static("Gapless-Replay");

/// The platform of one `nats` sink.
pub struct Nats {
    name: String,
    cfg: NatsConfig,
    /// `"agent_id":"…"`, spliced into every event object.
    agent_head: Vec<u8>,
    /// `cfg.subject`, shared by every message (a clone is a reference count).
    subject: async_nats::Subject,
    /// The client's JetStream context, once connected.
    context: tokio::sync::Mutex<Option<jetstream::Context>>,
}

impl Nats {
    /// The platform of sink `name` for agent `agent_id`; it connects at its first request.
    pub fn new(name: &str, agent_id: &str, cfg: &NatsConfig) -> Result<Self> {
        let mut agent_head = Vec::new();
        write_json_str(&mut agent_head, AGENT_ID);
        agent_head.push(b':');
        write_json_str(&mut agent_head, agent_id);
        Ok(Nats {
            name: name.to_string(),
            cfg: cfg.clone(),
            agent_head,
            subject: async_nats::Subject::from(cfg.subject.as_str()),
            context: tokio::sync::Mutex::new(None),
        })
    }

    /// The JetStream context, connecting first if there is none yet.
    async fn context(&self) -> std::result::Result<jetstream::Context, Answer> {
        let mut context = self.context.lock().await;
        if let Some(c) = context.as_ref() {
            return Ok(c.clone());
        }
        let c = connect::connect(&self.name, &self.cfg).await?;
        *context = Some(c.clone());
        Ok(c)
    }

    /// Publishes every item of `outgoing`, then awaits every acknowledgement; the answer
    /// for the request as a whole, or item by item.
    async fn publish_all(&self, outgoing: &Outgoing<'_>) -> Answer {
        let payloads = lines(outgoing.body);
        if payloads.len() != outgoing.items {
            // The mechanism frames one item per line and an item has no raw newline.
            return Answer::Retry {
                wait: None,
                why: format!(
                    "a body of {} lines for {} items: not sent",
                    payloads.len(),
                    outgoing.items
                ),
                alarm: true,
            };
        }
        let context = match self.context().await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        if context.client().connection_state() != async_nats::connection::State::Connected {
            return Answer::Retry {
                wait: None,
                why: format!("not connected to NATS ({})", self.cfg.urls.join(",")),
                alarm: false,
            };
        }
        let agent = async_nats::HeaderValue::from(outgoing.agent_id);
        let suffix = if outgoing.replay { "-replay" } else { "" };
        let depth = connect::pipeline_depth(&self.cfg);
        let mut got: Vec<Option<Got>> = vec![None; payloads.len()];
        // PubAcks come back in publish order (one stream): awaiting them one after the
        // other costs one poll each, where a set of futures would be woken for each.
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        let mut failed: Option<Got> = None;
        for (i, payload) in payloads.into_iter().enumerate() {
            if let Some(f) = &failed {
                got[i] = Some(f.clone());
                continue;
            }
            if pending.len() >= depth {
                if let Some((j, ack)) = pending.pop_front() {
                    let deadline = Instant::now() + self.cfg.delivery.request_timeout;
                    got[j] = Some(self.read_ack(ack_by(ack, deadline).await));
                }
            }
            let seq = outgoing.seqs[i];
            let mut headers = HeaderMap::new();
            headers.insert(
                MSG_ID,
                format!("{}-{seq}{suffix}", outgoing.agent_id).as_str(),
            );
            headers.insert(AGENT_HEADER, agent.clone());
            headers.insert(PREV_SEQ, outgoing.prev_seq(i).to_string().as_str());
            if outgoing.replay {
                headers.insert(REPLAY, "dead-letter");
            }
            match context
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await
            {
                Ok(ack) => pending.push_back((i, ack)),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    got[i] = Some(Got::Rejected(Rejection {
                        status: 413,
                        error: "max_payload exceeded".into(),
                        response: e.to_string(),
                    }));
                }
                Err(e) => {
                    // Not handed to the connection: the rest would not be either.
                    let g = self.read_ack(Err(e));
                    got[i] = Some(g.clone());
                    failed = Some(g);
                }
            }
        }
        // One deadline for them all: once it has passed, an ack not yet in is not waited
        // for again, message after message.
        let deadline = Instant::now() + self.cfg.delivery.request_timeout;
        for (j, ack) in pending {
            got[j] = Some(self.read_ack(ack_by(ack, deadline).await));
        }
        answer(got.into_iter().flatten().collect())
    }

    /// What one acknowledgement (or its absence) says about its message.
    fn read_ack(&self, ack: std::result::Result<PublishAck, PublishError>) -> Got {
        match ack {
            // A duplicate is a message the stream already has.
            Ok(_) => Got::Delivered,
            Err(e) => match e.kind() {
                PublishErrorKind::StreamNotFound => Got::Retry {
                    why: format!(
                        "no JetStream stream takes subject {:?} (no responders): create one, \
                         e.g. nats stream add --subjects {:?}",
                        self.cfg.subject, self.cfg.subject
                    ),
                    no_stream: true,
                },
                PublishErrorKind::TimedOut => Got::Retry {
                    why: format!(
                        "no PubAck within {:?} on subject {:?}",
                        self.cfg.delivery.request_timeout, self.cfg.subject
                    ),
                    no_stream: false,
                },
                PublishErrorKind::MaxPayloadExceeded => Got::Rejected(Rejection {
                    status: 413,
                    error: "max_payload exceeded".into(),
                    response: e.to_string(),
                }),
                _ => Got::Retry {
                    why: format!("publish on subject {:?}: {e}", self.cfg.subject),
                    no_stream: false,
                },
            },
        }
    }
}

type PublishError = async_nats::jetstream::context::PublishError;

/// One acknowledgement, if it is in by `deadline` (one already in is taken even after it).
async fn ack_by(
    ack: PublishAckFuture,
    deadline: Instant,
) -> std::result::Result<PublishAck, PublishError> {
    tokio::time::timeout_at(deadline, std::future::IntoFuture::into_future(ack))
        .await
        .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut)))
}

/// The word on one message.
#[derive(Debug, Clone)]
enum Got {
    Delivered,
    Retry { why: String, no_stream: bool },
    Rejected(Rejection),
}

/// The answer for a request from the word on each of its messages: all delivered; or
/// none taken and none refused — the request as a whole is retried (with an alarm when no
/// stream takes the subject); else item by item.
fn answer(got: Vec<Got>) -> Answer {
    if got.iter().all(|g| matches!(g, Got::Delivered)) {
        return Answer::Delivered;
    }
    if got.iter().all(|g| matches!(g, Got::Retry { .. })) {
        let no_stream = got.iter().find(|g| {
            matches!(
                g,
                Got::Retry {
                    no_stream: true,
                    ..
                }
            )
        });
        if let Some(Got::Retry { why, .. }) = no_stream.or(got.first()) {
            return Answer::Retry {
                wait: None,
                why: why.clone(),
                alarm: no_stream.is_some(),
            };
        }
    }
    Answer::Items(
        got.into_iter()
            .map(|g| match g {
                Got::Delivered => ItemAnswer::Delivered,
                Got::Retry { why, .. } => ItemAnswer::Retry(why),
                Got::Rejected(r) => ItemAnswer::Rejected(r),
            })
            .collect(),
    )
}

/// The lines of a body, each a payload sharing the body's memory.
fn lines(body: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', body) {
        out.push(body.slice(start..end));
        start = end + 1;
    }
    if start < body.len() {
        out.push(body.slice(start..));
    }
    out
}

impl Platform for Nats {
    fn framing(&self) -> Framing {
        Framing::Lines
    }

    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
        let head: &[u8] = if item.kind == ItemKind::Heartbeat {
            b""
        } else {
            &self.agent_head
        };
        item.write_object(out, head);
    }

    fn publish(
        &self,
        outgoing: &Outgoing<'_>,
    ) -> Option<impl std::future::Future<Output = Answer> + Send> {
        Some(self.publish_all(outgoing))
    }

    /// Never called: [`Platform::publish`] sends every request.
    async fn request(
        &self,
        _client: &reqwest::Client,
        _outgoing: &Outgoing<'_>,
    ) -> std::result::Result<reqwest::RequestBuilder, NotReady> {
        Err(NotReady {
            why: "a nats sink does not send over HTTP".into(),
        })
    }

    /// Never called: [`Platform::publish`] reads every answer.
    async fn read(
        &self,
        _client: &reqwest::Client,
        _response: reqwest::Response,
        _items: usize,
    ) -> Answer {
        Answer::Retry {
            wait: None,
            why: "a nats sink does not send over HTTP".into(),
            alarm: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(no_stream: bool) -> Got {
        Got::Retry {
            why: if no_stream { "no stream" } else { "timeout" }.into(),
            no_stream,
        }
    }

    #[test]
    fn a_body_splits_into_one_payload_per_line() {
        let body = Bytes::from_static(b"{\"seq\":1}\n{\"seq\":2}\n");
        assert_eq!(
            lines(&body),
            vec![
                Bytes::from_static(b"{\"seq\":1}"),
                Bytes::from_static(b"{\"seq\":2}")
            ]
        );
    }

    #[test]
    fn no_stream_for_every_message_is_retried_with_an_alarm() {
        match answer(vec![retry(true), retry(true)]) {
            Answer::Retry { alarm, why, .. } => {
                assert!(alarm);
                assert_eq!(why, "no stream");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(vec![retry(false), retry(false)]),
            Answer::Retry { alarm: false, .. }
        ));
    }

    #[test]
    fn some_messages_refused_or_unacknowledged_are_answered_item_by_item() {
        let Answer::Items(items) = answer(vec![
            Got::Delivered,
            retry(false),
            Got::Rejected(Rejection::default()),
        ]) else {
            panic!("expected items");
        };
        assert!(matches!(items[0], ItemAnswer::Delivered));
        assert!(matches!(items[1], ItemAnswer::Retry(_)));
        assert!(matches!(items[2], ItemAnswer::Rejected(_)));
        assert!(matches!(
            answer(vec![Got::Delivered, Got::Delivered]),
            Answer::Delivered
        ));
    }
}
