//! `gapless dead-letter replay`: a stored dead letter sent once more, through its sink's
//! platform (same encoding, limits, credentials and reading of answers as delivery), with
//! `Gapless-Replay: dead-letter`. One try per request: the operator runs it again.

use std::sync::Arc;

use super::platform::{Answer, ItemAnswer, Outgoing, Platform};
use super::prepare::Encoder;
use super::send::{outgoing, with_body};
use crate::config::DeliveryConfig;
use crate::error::Result;
use crate::sinks::dead_letter::DeadLetterMeta;
use crate::sinks::encode::SinkFields;

/// Sends dead letters of one sink again.
pub struct Replay<P> {
    encoder: Encoder<P>,
    client: reqwest::Client,
    agent_id: String,
    seq_field: Option<String>,
}

impl<P: Platform> Replay<P> {
    /// A replay of sink `name`'s dead letters to `platform`.
    pub fn new(
        name: &str,
        agent_id: &str,
        cfg: &DeliveryConfig,
        platform: P,
        seq_field: Option<&str>,
        added_fields: &[String],
    ) -> Result<Self> {
        Ok(Replay {
            client: super::build_client(name, cfg)?,
            encoder: Encoder {
                platform: Arc::new(platform),
                host: crate::event::hostname(),
                fields: SinkFields::new(None, added_fields),
                agent_sources: Default::default(),
                // A stored line may be a client's object: the platform treats it as one.
                client_sources: Default::default(),
                line_sources: Default::default(),
                gzip: cfg.gzip,
                key_prefix: format!("{agent_id}-{name}"),
            },
            agent_id: agent_id.to_string(),
            seq_field: seq_field.map(str::to_string),
        })
    }

    /// Sends one dead letter (`ndjson`, as stored). `Err` says why the platform did not
    /// take all of it; the caller keeps the file then.
    pub async fn send(
        &self,
        meta: &DeadLetterMeta,
        ndjson: &[u8],
    ) -> std::result::Result<(), String> {
        let mut objects = Vec::new();
        for (i, line) in ndjson
            .split(|b| *b == b'\n')
            .filter(|l| !l.trim_ascii().is_empty())
            .enumerate()
        {
            // The stored line already carries the seq under the sink's seq field.
            let seq = self
                .seq_field
                .as_deref()
                .and_then(|f| {
                    serde_json::from_slice::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get(f).and_then(serde_json::Value::as_u64))
                })
                .unwrap_or(meta.first_seq + i as u64);
            objects.push((seq, line));
        }
        let prepared = self
            .encoder
            .prepare_stored(&objects, meta.first_seq, meta.last_seq);
        if let Some((seq, bytes)) = prepared.oversized.first() {
            return Err(format!(
                "event {seq} ({bytes} bytes) is larger than the platform takes in one request"
            ));
        }
        let platform = &self.encoder.platform;
        for request in &prepared.requests {
            let outgoing = outgoing(
                request,
                (&request.seqs, request.first_seq),
                &self.agent_id,
                self.encoder.gzip,
                true,
            );
            let answer = match platform.publish(&outgoing) {
                Some(publish) => publish.await,
                None => self.over_http(&outgoing, request).await?,
            };
            match answer {
                Answer::Delivered => {}
                Answer::Items(items)
                    if items.iter().all(|i| matches!(i, ItemAnswer::Delivered)) => {}
                Answer::Items(items) => {
                    let refused = items
                        .iter()
                        .filter(|i| !matches!(i, ItemAnswer::Delivered))
                        .count();
                    return Err(format!("{refused} of {} events not taken", items.len()));
                }
                Answer::Retry { why, .. } => return Err(why),
                Answer::TooLarge(r) => return Err(format!("HTTP 413 {}: {}", r.error, r.response)),
                Answer::Rejected(r) => {
                    return Err(format!("HTTP {} {}: {}", r.status, r.error, r.response))
                }
            }
        }
        Ok(())
    }

    /// Sends one request over HTTP and reads the answer.
    async fn over_http(
        &self,
        outgoing: &Outgoing<'_>,
        request: &super::prepare::Request,
    ) -> std::result::Result<Answer, String> {
        let platform = &self.encoder.platform;
        let builder = platform
            .request(&self.client, outgoing)
            .await
            .map_err(|e| e.why)?;
        // No Gapless-Wal-Id: a replay is not part of the WAL's stream.
        let builder = with_body(builder, request, (&self.agent_id, ""), self.encoder.gzip)
            .header("gapless-replay", "dead-letter");
        let response = builder
            .send()
            .await
            .map_err(|e| format!("request failed: {}", super::error_chain(&e)))?;
        Ok(platform
            .read(&self.client, response, request.seqs.len())
            .await)
    }
}
