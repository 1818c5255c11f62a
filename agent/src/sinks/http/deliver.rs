//! Delivering one batch: sending it until the receiver takes it (retrying forever on
//! transient failures, with backoff and `Retry-After`), splitting it on 413, and moving it
//! to the dead-letter queue — with a gap event downstream — when it is rejected for good.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use tokio::sync::watch;

use super::client::error_chain;
use super::{prepare, Outcome, Prepared};
use crate::config::{Encoding, HttpSinkConfig};
use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::metrics::{Metrics, ReasonLabel, RequestLabel, SinkLabel};
use crate::sinks::batch::{reread, Batch};
use crate::sinks::dead_letter::{self, DeadLetterMeta};
use crate::sinks::encode::{encode, gzip};
use crate::sinks::retry::{parse_retry_after, RetryPolicy};

/// Everything the sender needs, shared by its in-flight requests.
pub(super) struct Sender {
    pub(super) name: String,
    pub(super) cfg: HttpSinkConfig,
    pub(super) client: reqwest::Client,
    pub(super) headers: HeaderMap,
    pub(super) host: String,
    pub(super) agent_id: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) dead_letter_dir: std::path::PathBuf,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) wal: Arc<gapless_wal::Wal>,
    pub(super) inputs: std::collections::HashSet<String>,
    pub(super) seq_field: Option<String>,
    pub(super) alert_after: Duration,
}

/// How a request ended, once it is not retried.
enum Final {
    Delivered,
    TooLarge,
    Rejected { status: StatusCode, body: String },
}

/// What one request attempt got.
enum Attempt {
    Final(Final),
    Retry { wait: Option<Duration>, why: String },
}

impl Sender {
    /// Delivers one prepared batch, retrying forever; splits on 413; dead-letters a
    /// permanent rejection.
    pub(super) async fn deliver(self: Arc<Self>, first: Prepared) -> Outcome {
        let last_seq = first.last_seq;
        let mut parts: VecDeque<Prepared> = VecDeque::from([first]);
        while let Some(part) = parts.pop_front() {
            let result = match self.deliver_part(&part).await {
                Some(Final::Delivered) => Ok(None),
                Some(Final::TooLarge) if part.events > 1 => match self.reread(&part).await {
                    Ok(batch) => {
                        tracing::info!(sink = %self.name, events = part.events, "413 from the receiver: splitting the batch");
                        let (a, b) = batch.split();
                        let pa = prepare(a, self.clone()).await;
                        let pb = prepare(b, self.clone()).await;
                        parts.push_front(pb);
                        parts.push_front(pa);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                },
                Some(Final::TooLarge) => {
                    match self
                        .dead_letter(&part, StatusCode::PAYLOAD_TOO_LARGE, String::new())
                        .await
                    {
                        Some(stored) => stored.map(Some),
                        None => return Outcome::Aborted,
                    }
                }
                Some(Final::Rejected { status, body }) => {
                    match self.dead_letter(&part, status, body).await {
                        Some(stored) => stored.map(Some),
                        None => return Outcome::Aborted,
                    }
                }
                None => return Outcome::Aborted,
            };
            let result = match result {
                Ok(Some(path)) => match self.send_dead_letter_notice(&part, &path).await {
                    Some(()) => Ok(()),
                    None => return Outcome::Aborted,
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                // The WAL could not give the batch back: leave it there, undelivered.
                tracing::error!(sink = %self.name, error = %e, first_seq = part.first_seq, last_seq = part.last_seq, "cannot read the batch again from the WAL; it stays there");
                return Outcome::Aborted;
            }
        }
        Outcome::Done { last_seq }
    }

    /// The records of a batch in flight, read again from the WAL.
    async fn reread(&self, part: &Prepared) -> Result<Batch> {
        let wal = self.wal.clone();
        let inputs = self.inputs.clone();
        let (first, last) = (part.first_seq, part.last_seq);
        tokio::task::spawn_blocking(move || reread(&wal, &inputs, first, last))
            .await
            .map_err(|e| Error::io("read WAL", "batch", std::io::Error::other(e.to_string())))?
            .map_err(Error::from)
    }

    /// Sends until the part is delivered, too large or rejected. `None` on shutdown.
    async fn deliver_part(&self, part: &Prepared) -> Option<Final> {
        let policy = RetryPolicy {
            initial: self.cfg.initial_backoff,
            max: self.cfg.max_backoff,
        };
        let label = SinkLabel {
            sink: self.name.clone(),
        };
        let mut attempt = 0u32;
        let mut shutdown = self.shutdown.clone();
        loop {
            self.metrics.sink_state(&self.name, |s| {
                s.in_flight_since = Some(std::time::Instant::now());
                s.backoff_until = None;
            });
            let result = self.attempt(part).await;
            self.metrics
                .sink_state(&self.name, |s| s.in_flight_since = None);
            match result {
                Attempt::Retry { wait, why } => {
                    if *shutdown.borrow() {
                        return None;
                    }
                    let backoff = wait.unwrap_or_else(|| policy.backoff(attempt));
                    self.metrics.sink_state(&self.name, |s| {
                        s.backoff_until = Some(std::time::Instant::now() + backoff);
                    });
                    self.failed(attempt, &why, backoff);
                    self.metrics.sink_retries.get_or_create(&label).inc();
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
                Attempt::Final(done) => {
                    if attempt > 0 {
                        let (backlog, age) = self.backlog();
                        tracing::info!(sink = %self.name, attempts = attempt + 1, backlog_events = backlog, oldest_undelivered_age_s = age, "sink recovered: delivering again");
                    }
                    return Some(done);
                }
            }
        }
    }

    fn failed(&self, attempt: u32, why: &str, backoff: Duration) {
        let now = Timestamp::now().as_str().to_string();
        let alert_after = self.alert_after;
        let mut alert = false;
        self.metrics.sink_state(&self.name, |s| {
            s.consecutive_failures += 1;
            s.last_error = Some(why.to_string());
            s.last_error_at = Some(now);
            let due = s.last_alert_log.is_none_or(|t| t.elapsed() >= alert_after);
            let down_long = s.last_progress.is_some_and(|t| t.elapsed() >= alert_after);
            if attempt > 0 && due && down_long {
                s.last_alert_log = Some(std::time::Instant::now());
                alert = true;
            }
        });
        if attempt == 0 {
            tracing::warn!(sink = %self.name, error = why, retry_in_ms = backoff.as_millis() as u64, "sink failing; events wait in the WAL and are retried with backoff");
        } else if alert {
            let (backlog, age) = self.backlog();
            tracing::error!(sink = %self.name, error = why, attempts = attempt + 1, backlog_events = backlog, oldest_undelivered_age_s = age, "sink still down; nothing is lost, delivery resumes when it recovers");
        }
    }

    /// The sink's backlog (events) and the age of its oldest undelivered event (seconds).
    fn backlog(&self) -> (u64, f64) {
        let now = crate::event::unix_nanos_now();
        self.wal
            .stats()
            .ok()
            .and_then(|s| s.cursors.into_iter().find(|c| c.name == self.name))
            .map_or((0, 0.0), |c| {
                let age = c
                    .oldest_unacked
                    .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1e9);
                (c.backlog_records, age)
            })
    }

    async fn attempt(&self, part: &Prepared) -> Attempt {
        let b = part;
        let mut req = self
            .client
            .post(self.cfg.uri.clone())
            .headers(self.headers.clone())
            .header(
                "idempotency-key",
                format!(
                    "{}-{}-{}-{}{}",
                    self.agent_id, self.name, b.first_seq, b.last_seq, b.key_suffix
                ),
            )
            .header(
                "gapless-seq-range",
                format!("{}-{}", b.first_seq, b.last_seq),
            )
            .header(
                "gapless-prev-seq",
                b.first_seq.saturating_sub(1).to_string(),
            )
            .body(part.body.clone());
        if let (None, Some(auth_file)) = (
            &self.cfg.auth.bearer_token,
            &self.cfg.auth.bearer_token_file,
        ) {
            match std::fs::read_to_string(auth_file) {
                Ok(t) => req = req.bearer_auth(t.trim()),
                Err(e) => {
                    tracing::error!(sink = %self.name, path = %auth_file.display(), error = %e, "cannot read the bearer token file")
                }
            }
        }
        let status_label = |s: &str| RequestLabel {
            sink: self.name.clone(),
            status: s.to_string(),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .sink_requests
                    .get_or_create(&status_label("error"))
                    .inc();
                let why = if e.is_timeout() {
                    "request timed out".to_string()
                } else {
                    format!("request failed: {}", error_chain(&e))
                };
                return Attempt::Retry { wait: None, why };
            }
        };
        let status = resp.status();
        self.metrics
            .sink_requests
            .get_or_create(&status_label(status.as_str()))
            .inc();
        if status.is_success() {
            let events = b.events as u64;
            let label = SinkLabel {
                sink: self.name.clone(),
            };
            self.metrics
                .sink_events_sent
                .get_or_create(&label)
                .inc_by(events);
            self.metrics
                .sink_bytes_sent
                .get_or_create(&label)
                .inc_by(part.body.len() as u64);
            for reason in &b.gap_reasons {
                self.metrics
                    .gap_records
                    .get_or_create(&ReasonLabel {
                        reason: (*reason).into(),
                    })
                    .inc();
            }
            let now = Timestamp::now().as_str().to_string();
            self.metrics.sink_state(&self.name, |s| {
                s.delivered_events += events;
                s.consecutive_failures = 0;
                s.last_error = None;
                s.last_success_at = Some(now);
            });
            return Attempt::Final(Final::Delivered);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(2048).collect();
        match status.as_u16() {
            408 | 429 | 500..=599 => Attempt::Retry {
                wait: retry_after,
                why: format!("HTTP {status}"),
            },
            401 | 403 => {
                tracing::error!(sink = %self.name, status = status.as_u16(), "the receiver refuses our credentials; retrying until they are fixed (nothing is dropped)");
                Attempt::Retry {
                    wait: retry_after,
                    why: format!("HTTP {status}: credentials refused"),
                }
            }
            413 => Attempt::Final(Final::TooLarge),
            300..=399 => Attempt::Retry {
                wait: None,
                why: format!("HTTP {status}: redirects are not followed; check the sink's uri"),
            },
            _ => Attempt::Final(Final::Rejected { status, body }),
        }
    }

    /// Moves a rejected batch to the dead-letter queue. Only once it is stored may the
    /// cursor pass it: a store that fails (a full disk) is tried again with backoff while
    /// the batch stays in the WAL, and the sink says why it is held. `None` on shutdown (the
    /// batch stays undelivered in the WAL).
    async fn dead_letter(
        &self,
        part: &Prepared,
        status: StatusCode,
        response: String,
    ) -> Option<Result<std::path::PathBuf>> {
        let b = match self.reread(part).await {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        let meta = DeadLetterMeta {
            sink: self.name.clone(),
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            events: b.records.len(),
            status: status.as_u16(),
            response,
            at: Timestamp::now().as_str().to_string(),
        };
        let ndjson = encode(
            &b.records,
            Encoding::Ndjson,
            &self.host,
            self.seq_field.as_deref(),
        );
        let policy = RetryPolicy {
            initial: self.cfg.initial_backoff,
            max: self.cfg.max_backoff,
        };
        let mut attempt = 0u32;
        let mut shutdown = self.shutdown.clone();
        let path = loop {
            match dead_letter::store(&self.dead_letter_dir, &meta, &ndjson) {
                Ok(path) => break path,
                Err(e) => {
                    let backoff = policy.backoff(attempt);
                    if attempt == 0 {
                        tracing::error!(sink = %self.name, error = %e, first_seq = b.first_seq, last_seq = b.last_seq, retry_in_ms = backoff.as_millis() as u64, "could not write the dead-letter file; the batch stays in the WAL and is stored once that works");
                    }
                    self.failed(attempt, &format!("dead-letter queue: {e}"), backoff);
                    self.metrics.sink_state(&self.name, |s| {
                        s.backoff_until = Some(std::time::Instant::now() + backoff);
                    });
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            }
        };
        tracing::error!(sink = %self.name, status = status.as_u16(), events = b.records.len(), first_seq = b.first_seq, last_seq = b.last_seq, path = %path.display(), "batch rejected permanently; moved to the dead-letter queue");
        let label = SinkLabel {
            sink: self.name.clone(),
        };
        let n = b.records.len() as u64;
        self.metrics
            .sink_dead_letter_events
            .get_or_create(&label)
            .inc_by(n);
        self.metrics
            .dropped_events
            .get_or_create(&ReasonLabel {
                reason: "dead_letter".into(),
            })
            .inc_by(n);
        self.metrics
            .sink_state(&self.name, |s| s.dead_lettered_events += n);
        Some(Ok(path))
    }

    /// Tells the platform, in the stream, that a batch went to the dead-letter queue: a
    /// gap event with reason `dead_letter` covering the batch's range and naming the file.
    /// `None` on shutdown.
    async fn send_dead_letter_notice(&self, part: &Prepared, path: &std::path::Path) -> Option<()> {
        let mut event = Vec::new();
        event.push(b'{');
        if let Some(field) = &self.seq_field {
            crate::event::write_json_str(&mut event, field);
            event.extend_from_slice(format!(":{},", part.last_seq).as_bytes());
        }
        let notice = serde_json::json!({
            "gapless": "gap",
            "reason": "dead_letter",
            "first_seq": part.first_seq,
            "last_seq": part.last_seq,
            "events": part.events,
            "dead_letter_file": path.display().to_string(),
            "host": self.host,
            "timestamp": Timestamp::now().as_str(),
        })
        .to_string();
        event.extend_from_slice(&notice.as_bytes()[1..]);
        let raw = match self.cfg.encoding {
            Encoding::Ndjson => [event, b"\n".to_vec()].concat(),
            Encoding::Json => [b"[".to_vec(), event, b"]".to_vec()].concat(),
        };
        let body = if self.cfg.gzip { gzip(&raw) } else { raw };
        let notice = Prepared {
            first_seq: part.first_seq,
            last_seq: part.last_seq,
            events: 1,
            gap_reasons: vec!["dead_letter"],
            body: Bytes::from(body),
            key_suffix: "-dead-letter",
        };
        // The notice is what keeps the stream free of silent holes: it is retried, with
        // backoff, until the receiver takes it (a refusal holds the sink back, visibly).
        let mut refusals = 0u32;
        loop {
            if let Final::Delivered = self.deliver_part(&notice).await? {
                return Some(());
            }
            let wait = RetryPolicy {
                initial: self.cfg.initial_backoff,
                max: self.cfg.max_backoff,
            }
            .backoff(refusals);
            tracing::error!(sink = %self.name, first_seq = part.first_seq, last_seq = part.last_seq, retry_in_ms = wait.as_millis() as u64, "the receiver refused the dead-letter notice; retrying (the batch itself is in the dead-letter queue)");
            refusals = refusals.saturating_add(1);
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}
