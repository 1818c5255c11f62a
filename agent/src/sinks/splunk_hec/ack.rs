//! Indexer acknowledgement: a request accepted with an `ackId` counts as delivered only
//! once `POST /services/collector/ack?channel=<GUID>` with `{"acks":[id]}` answers
//! `{"acks":{"<id>":true}}`. Acks are read-once (after `true`, the same id reads `false`),
//! so each waiting request queries its own id only. No `true` within `ack_timeout`: the
//! request is sent again (Splunk may then hold it twice; never zero times). The channel is
//! one GUID per sink, made when it starts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::Secret;
use crate::sinks::delivery::{error_chain, Answer};

/// Waits for the acknowledgements of one sink's channel.
pub struct AckWaiter {
    no_ack_warned: std::sync::atomic::AtomicBool,
    url: reqwest::Url,
    channel: String,
    token: Secret,
    interval: Duration,
    timeout: Duration,
}

#[derive(Deserialize)]
struct AckAnswer {
    acks: HashMap<String, bool>,
}

impl AckWaiter {
    /// A waiter querying `url` (`…/services/collector/ack`) on a new channel.
    pub fn new(url: reqwest::Url, token: Secret, interval: Duration, timeout: Duration) -> Self {
        AckWaiter {
            no_ack_warned: std::sync::atomic::AtomicBool::new(false),
            url,
            channel: uuid::Uuid::new_v4().to_string(),
            token,
            interval,
            timeout,
        }
    }

    /// Splunk accepted a request without an `ackId`: says so once.
    pub fn no_ack_id(&self) {
        if !self
            .no_ack_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                "indexer_acknowledgement is on but Splunk answers without an ackId: the HEC token has acknowledgement disabled; events count as delivered when accepted, as without acknowledgement"
            );
        }
    }

    /// The channel GUID (`X-Splunk-Request-Channel`).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Queries `id` every interval until it is `true` (delivered) or the timeout passes
    /// (send again).
    pub async fn wait(&self, client: &reqwest::Client, id: u64) -> Answer {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::from("not acknowledged yet");
        while Instant::now() < deadline {
            tokio::time::sleep(self.interval.min(deadline - Instant::now())).await;
            match self.query(client, id).await {
                Ok(true) => return Answer::Delivered,
                Ok(false) => {}
                Err(Query::Disabled(why)) => {
                    return Answer::Retry {
                        wait: None,
                        why,
                        alarm: true,
                    }
                }
                Err(Query::Failed(why)) => last = why,
            }
        }
        Answer::Retry {
            wait: Some(Duration::ZERO),
            why: format!(
                "ackId {id} not acknowledged within {}s ({last}); sending the request again",
                self.timeout.as_secs()
            ),
            alarm: false,
        }
    }

    async fn query(&self, client: &reqwest::Client, id: u64) -> Result<bool, Query> {
        let auth = super::authorization(&self.token).map_err(|e| Query::Failed(e.why))?;
        let response = client
            .post(self.url.clone())
            .query(&[("channel", self.channel.as_str())])
            .header(reqwest::header::AUTHORIZATION, auth)
            .header("x-splunk-request-channel", self.channel.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(format!("{{\"acks\":[{id}]}}"))
            .send()
            .await
            .map_err(|e| Query::Failed(format!("ack query failed: {}", error_chain(&e))))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            let answer: AckAnswer = serde_json::from_str(&body)
                .map_err(|e| Query::Failed(format!("ack answer does not parse: {e}")))?;
            return Ok(answer.acks.get(&id.to_string()).copied().unwrap_or(false));
        }
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_u64());
        let why = format!("ack query: HTTP {status} code {code:?}");
        match (status.as_u16(), code) {
            (400, Some(14)) | (400, Some(10 | 11)) | (401 | 403, _) => Err(Query::Disabled(
                format!("{why}: check indexer_acknowledgement against the token's settings"),
            )),
            _ => Err(Query::Failed(why)),
        }
    }
}

enum Query {
    /// Acknowledgement cannot work as configured.
    Disabled(String),
    /// This query failed; the next may not.
    Failed(String),
}
