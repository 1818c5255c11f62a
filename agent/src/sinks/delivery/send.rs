//! Delivering one batch: sending each of its requests until the platform answers for good
//! (retrying forever on transient failures, with backoff and `Retry-After`), splitting a
//! request on 413, resending only the items an answer asks to, and moving what is refused
//! for good to the dead-letter queue — with a notice downstream covering its seqs.
//!
//! The batch is done only when every item is delivered or stored as a dead letter and
//! announced; until then the cursor stays before it.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gapless_wal::Wal;
use tokio::sync::watch;

use super::client::error_chain;
use super::platform::{Answer, ItemAnswer, Outgoing, Platform, Rejection};
use super::prepare::{Encoder, KeyKind, Prepared, Request};
use super::Outcome;
use crate::config::{DeliveryConfig, Encoding};
use crate::error::{Error, Result};
use crate::event::Timestamp;
use crate::metrics::{Metrics, ReasonLabel, RequestLabel, SinkLabel};
use crate::sinks::batch::{reread, Batch};
use crate::sinks::dead_letter::{self, DeadLetterMeta};
use crate::sinks::encode::encode;
use crate::sinks::retry::RetryPolicy;

/// Everything the sender needs, shared by its in-flight requests.
pub(super) struct Sender<P> {
    pub name: String,
    pub cfg: DeliveryConfig,
    pub client: reqwest::Client,
    pub agent_id: String,
    pub wal_id: String,
    pub metrics: Arc<Metrics>,
    pub dead_letter_dir: std::path::PathBuf,
    pub shutdown: watch::Receiver<bool>,
    pub wal: Arc<Wal>,
    pub inputs: HashSet<String>,
    pub alert_after: Duration,
    pub platform: Arc<P>,
    pub encoder: Arc<Encoder<P>>,
}

/// How a request ended, once it is not retried as a whole.
enum Final {
    Delivered,
    TooLarge(Rejection),
    Rejected(Rejection),
    Items(Vec<ItemAnswer>),
}

/// What one request attempt got.
enum Attempt {
    Final(Final),
    Retry {
        wait: Option<Duration>,
        why: String,
        alarm: bool,
    },
}

impl<P: Platform> Sender<P> {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.cfg.initial_backoff,
            max: self.cfg.max_backoff,
        }
    }

    /// Delivers one prepared batch: every item delivered, or refused for good and then
    /// stored and announced. `Aborted` on shutdown or when the WAL cannot give records back.
    pub async fn deliver(self: Arc<Self>, batch: Prepared) -> Outcome {
        let (first_seq, last_seq) = (batch.first_seq, batch.last_seq);
        let order = batch.order;
        let mut rejected: BTreeMap<u64, Rejection> = BTreeMap::new();
        for (seq, bytes) in batch.oversized {
            rejected.insert(seq, self.oversized(bytes));
        }
        let mut queue: VecDeque<Request> = batch.requests.into();
        let mut item_rounds = 0u32;
        loop {
            let mut again: BTreeSet<u64> = BTreeSet::new();
            let mut why = String::new();
            while let Some(request) = queue.pop_front() {
                let Some(done) = self.send(&request, (&order, first_seq)).await else {
                    return Outcome::Aborted;
                };
                match done {
                    Final::Delivered => self.delivered(&request, None),
                    Final::TooLarge(_) if request.seqs.len() > 1 => {
                        tracing::info!(sink = %self.name, events = request.seqs.len(), "413 from the platform: splitting the request");
                        let halves = match self
                            .reread(&request.seqs, request.first_seq, request.last_seq)
                            .await
                        {
                            Ok(b) => b.split(),
                            Err(e) => return self.unreadable(&e, first_seq, last_seq),
                        };
                        let subset = request.key.contains("-items-");
                        let kind = if subset {
                            KeyKind::Items
                        } else {
                            KeyKind::Range
                        };
                        let (a, b) = self.prepare_pair(halves, kind).await;
                        for (seq, bytes) in a.oversized.iter().chain(&b.oversized) {
                            rejected.insert(*seq, self.oversized(*bytes));
                        }
                        for r in b
                            .requests
                            .into_iter()
                            .rev()
                            .chain(a.requests.into_iter().rev())
                        {
                            queue.push_front(r);
                        }
                    }
                    Final::TooLarge(r) => {
                        rejected.extend(request.seqs.iter().map(|s| (*s, r.clone())));
                    }
                    Final::Rejected(r) => {
                        rejected.extend(request.seqs.iter().map(|s| (*s, r.clone())));
                    }
                    Final::Items(answers) if answers.len() != request.seqs.len() => {
                        tracing::warn!(sink = %self.name, items = request.seqs.len(), answers = answers.len(), "the platform answered for another number of items than sent; sending the request again");
                        why = "answer for the wrong number of items".into();
                        again.extend(request.seqs.iter().copied());
                    }
                    Final::Items(answers) => {
                        let mut ok = Vec::with_capacity(answers.len());
                        for (seq, answer) in request.seqs.iter().zip(answers) {
                            match answer {
                                ItemAnswer::Delivered => ok.push(*seq),
                                ItemAnswer::Retry(w) => {
                                    why = w;
                                    again.insert(*seq);
                                }
                                ItemAnswer::Rejected(r) => {
                                    rejected.insert(*seq, r);
                                }
                            }
                        }
                        self.delivered(&request, Some(&ok));
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            // Only the items the platform asked for go again, after a backoff.
            let wait = self.policy().backoff(item_rounds);
            self.failed(
                item_rounds,
                &format!("{} items to send again: {why}", again.len()),
                wait,
                false,
            );
            item_rounds = item_rounds.saturating_add(1);
            if !self.pause(wait).await {
                return Outcome::Aborted;
            }
            let batch = match self.reread(&again, first_seq, last_seq).await {
                Ok(b) => b,
                Err(e) => return self.unreadable(&e, first_seq, last_seq),
            };
            let prepared = self.prepare(batch, KeyKind::Items).await;
            for (seq, bytes) in prepared.oversized {
                rejected.insert(seq, self.oversized(bytes));
            }
            queue = prepared.requests.into();
        }
        if !rejected.is_empty() {
            if let Err(e) = self
                .dead_letter(&order, &rejected, first_seq, last_seq)
                .await
            {
                return match e {
                    Stop::Shutdown => Outcome::Aborted,
                    Stop::Wal(e) => self.unreadable(&e, first_seq, last_seq),
                };
            }
        }
        Outcome::Done { last_seq }
    }

    fn oversized(&self, bytes: usize) -> Rejection {
        Rejection {
            status: 413,
            error: "event too large for one request".into(),
            response: format!(
                "{bytes} bytes; the platform takes at most {} per request",
                self.platform.max_request_bytes().unwrap_or(usize::MAX)
            ),
        }
    }

    fn unreadable(&self, e: &Error, first_seq: u64, last_seq: u64) -> Outcome {
        // The WAL could not give the batch back: leave it there, undelivered.
        tracing::error!(sink = %self.name, error = %e, first_seq, last_seq, "cannot read the batch again from the WAL; it stays there");
        Outcome::Aborted
    }

    /// Sleeps `wait`; `false` when shutdown came first.
    async fn pause(&self, wait: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = shutdown.changed() => false,
        }
    }

    /// The records of `seqs` (within `first..=last`), read again from the WAL.
    async fn reread<'s>(
        &self,
        seqs: impl IntoIterator<Item = &'s u64>,
        first: u64,
        last: u64,
    ) -> Result<Batch> {
        let keep: HashSet<u64> = seqs.into_iter().copied().collect();
        let wal = self.wal.clone();
        let inputs = self.inputs.clone();
        let mut batch = tokio::task::spawn_blocking(move || reread(&wal, &inputs, first, last))
            .await
            .map_err(|e| Error::io("read WAL", "batch", std::io::Error::other(e.to_string())))?
            .map_err(Error::from)?;
        batch.records.retain(|r| keep.contains(&r.seq));
        batch.bytes = batch.records.iter().map(|r| r.payload.len()).sum();
        Ok(batch)
    }

    async fn prepare(&self, batch: Batch, key: KeyKind) -> Prepared {
        let enc = self.encoder.clone();
        tokio::task::spawn_blocking(move || enc.prepare(&batch, key))
            .await
            .unwrap_or_else(|e| panic!("encoding a batch panicked: {e}"))
    }

    async fn prepare_pair(&self, (a, b): (Batch, Batch), key: KeyKind) -> (Prepared, Prepared) {
        let enc = self.encoder.clone();
        tokio::task::spawn_blocking(move || (enc.prepare(&a, key), enc.prepare(&b, key)))
            .await
            .unwrap_or_else(|e| panic!("encoding a batch panicked: {e}"))
    }

    /// Sends a request until the platform answers for good. `None` on shutdown. `batch`:
    /// the items of its batch in order and the first seq the batch covers.
    async fn send(&self, request: &Request, batch: (&[u64], u64)) -> Option<Final> {
        let policy = self.policy();
        let mut attempt = 0u32;
        loop {
            self.metrics.sink_state(&self.name, |s| {
                s.in_flight_since = Some(std::time::Instant::now());
                s.backoff_until = None;
            });
            let result = self.attempt(request, batch).await;
            self.metrics
                .sink_state(&self.name, |s| s.in_flight_since = None);
            match result {
                Attempt::Retry { wait, why, alarm } => {
                    if *self.shutdown.borrow() {
                        return None;
                    }
                    let backoff = wait.unwrap_or_else(|| policy.backoff(attempt));
                    self.failed(attempt, &why, backoff, alarm);
                    self.metrics.sink_retries.get_or_create(&self.label()).inc();
                    attempt = attempt.saturating_add(1);
                    if !self.pause(backoff).await {
                        return None;
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

    fn label(&self) -> SinkLabel {
        SinkLabel {
            sink: self.name.clone(),
        }
    }

    /// Records a failed attempt: health state, and a log line — a warning at the first
    /// failure, an error for an `alarm` (credentials, configuration) at once, and an error
    /// again every `alert_after` while the sink stays down.
    fn failed(&self, attempt: u32, why: &str, backoff: Duration, alarm: bool) {
        let now = Timestamp::now().as_str().to_string();
        let alert_after = self.alert_after;
        let mut alert = false;
        self.metrics.sink_state(&self.name, |s| {
            s.consecutive_failures += 1;
            s.last_error = Some(why.to_string());
            s.last_error_at = Some(now);
            s.backoff_until = Some(std::time::Instant::now() + backoff);
            let due = s.last_alert_log.is_none_or(|t| t.elapsed() >= alert_after);
            let down_long = s.last_progress.is_some_and(|t| t.elapsed() >= alert_after);
            if (attempt > 0 && due && down_long) || (alarm && due) {
                s.last_alert_log = Some(std::time::Instant::now());
                alert = true;
            }
        });
        let retry_in_ms = backoff.as_millis() as u64;
        if alarm && alert {
            tracing::error!(sink = %self.name, error = why, retry_in_ms, "the platform refuses this sink's requests until someone fixes the cause; retrying (nothing is dropped)");
        } else if attempt == 0 {
            tracing::warn!(sink = %self.name, error = why, retry_in_ms, "sink failing; events wait in the WAL and are retried with backoff");
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

    /// Counts what the platform took of `request`: every item, or those in `only`.
    fn delivered(&self, request: &Request, only: Option<&[u64]>) {
        let events = only.map_or(request.seqs.len(), <[u64]>::len) as u64;
        let label = self.label();
        self.metrics
            .sink_events_sent
            .get_or_create(&label)
            .inc_by(events);
        self.metrics
            .sink_bytes_sent
            .get_or_create(&label)
            .inc_by(request.body.len() as u64);
        for (seq, reason) in &request.gaps {
            if only.is_none_or(|o| o.binary_search(seq).is_ok()) {
                self.metrics
                    .gap_records
                    .get_or_create(&ReasonLabel {
                        reason: (*reason).into(),
                    })
                    .inc();
            }
        }
        let now = Timestamp::now().as_str().to_string();
        self.metrics.sink_state(&self.name, |s| {
            s.delivered_events += events;
            s.consecutive_failures = 0;
            s.last_error = None;
            s.last_success_at = Some(now);
        });
    }

    async fn attempt(&self, request: &Request, batch: (&[u64], u64)) -> Attempt {
        let outgoing = outgoing(request, batch, &self.agent_id, self.cfg.gzip, false);
        let status_label = |s: &str| RequestLabel {
            sink: self.name.clone(),
            status: s.to_string(),
        };
        // A platform of its own protocol sends the request itself.
        if let Some(publish) = self.platform.publish(&outgoing) {
            let answer = publish.await;
            self.metrics
                .sink_requests
                .get_or_create(&status_label(answer.label()))
                .inc();
            return Attempt::from(answer);
        }
        let builder = match self.platform.request(&self.client, &outgoing).await {
            Ok(b) => b,
            Err(not_ready) => {
                return Attempt::Retry {
                    wait: None,
                    why: not_ready.why,
                    alarm: true,
                }
            }
        };
        let builder = with_body(
            builder,
            request,
            (&self.agent_id, &self.wal_id),
            self.cfg.gzip,
        );
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .sink_requests
                    .get_or_create(&status_label("error"))
                    .inc();
                if let Some(url) = e.url() {
                    self.platform.unreachable(url);
                }
                let why = if e.is_timeout() {
                    "request timed out".to_string()
                } else {
                    format!("request failed: {}", error_chain(&e))
                };
                return Attempt::Retry {
                    wait: None,
                    why,
                    alarm: false,
                };
            }
        };
        self.metrics
            .sink_requests
            .get_or_create(&status_label(response.status().as_str()))
            .inc();
        Attempt::from(
            self.platform
                .read(&self.client, response, request.seqs.len())
                .await,
        )
    }

    /// Moves the refused items of a batch to the dead-letter queue and announces them: one
    /// file and one notice per run of refused items (items in between delivered end a run;
    /// records the sink skips do not), each covering the seqs from after the delivered item
    /// before it to before the one after it, so that deliveries and notices together cover
    /// the batch's range. Only once stored and announced may the cursor pass them.
    async fn dead_letter(
        &self,
        order: &[u64],
        rejected: &BTreeMap<u64, Rejection>,
        first_seq: u64,
        last_seq: u64,
    ) -> std::result::Result<(), Stop> {
        let mut runs: Vec<(u64, u64, Vec<u64>)> = Vec::new();
        let mut open: Option<(u64, Vec<u64>)> = None;
        for (i, seq) in order.iter().enumerate() {
            if rejected.contains_key(seq) {
                let start = if i == 0 { first_seq } else { order[i - 1] + 1 };
                open.get_or_insert_with(|| (start, Vec::new())).1.push(*seq);
            } else if let Some((start, seqs)) = open.take() {
                runs.push((start, seq - 1, seqs));
            }
        }
        if let Some((start, seqs)) = open {
            runs.push((start, last_seq, seqs));
        }
        let mut notices = Vec::with_capacity(runs.len());
        for (first, last, seqs) in runs {
            let batch = self.reread(&seqs, first, last).await.map_err(Stop::Wal)?;
            // The first refusal of the run speaks for it (platforms refuse a run for one cause).
            let why = seqs
                .first()
                .and_then(|s| rejected.get(s))
                .cloned()
                .unwrap_or_default();
            let path = self.store(&batch, &why).await?;
            notices.push((first, last, self.notice(&batch, &why, &path)));
        }
        self.announce(&notices).await
    }

    /// Stores one run as a dead letter, trying again (with backoff, the batch held in the
    /// WAL, the sink saying why) until that works.
    async fn store(
        &self,
        b: &Batch,
        why: &Rejection,
    ) -> std::result::Result<std::path::PathBuf, Stop> {
        let meta = DeadLetterMeta {
            sink: self.name.clone(),
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            events: b.records.len(),
            status: why.status,
            error: why.error.clone(),
            response: why.response.clone(),
            at: Timestamp::now().as_str().to_string(),
        };
        let ndjson = encode(
            &b.records,
            Encoding::Ndjson,
            &self.encoder.host,
            self.encoder.fields.as_ref().and_then(|f| f.seq()),
        );
        let mut attempt = 0u32;
        let path = loop {
            match dead_letter::store(&self.dead_letter_dir, &meta, &ndjson) {
                Ok(path) => break path,
                Err(e) => {
                    let backoff = self.policy().backoff(attempt);
                    if attempt == 0 {
                        tracing::error!(sink = %self.name, error = %e, first_seq = b.first_seq, last_seq = b.last_seq, retry_in_ms = backoff.as_millis() as u64, "could not write the dead-letter file; the batch stays in the WAL and is stored once that works");
                    }
                    self.failed(attempt, &format!("dead-letter queue: {e}"), backoff, false);
                    attempt = attempt.saturating_add(1);
                    if !self.pause(backoff).await {
                        return Err(Stop::Shutdown);
                    }
                }
            }
        };
        tracing::error!(sink = %self.name, status = why.status, error = %why.error, events = b.records.len(), first_seq = b.first_seq, last_seq = b.last_seq, path = %path.display(), "events refused for good by the platform; moved to the dead-letter queue");
        let n = b.records.len() as u64;
        self.metrics
            .sink_dead_letter_events
            .get_or_create(&self.label())
            .inc_by(n);
        self.metrics
            .dropped_events
            .get_or_create(&ReasonLabel {
                reason: "dead_letter".into(),
            })
            .inc_by(n);
        self.metrics
            .sink_state(&self.name, |s| s.dead_lettered_events += n);
        Ok(path)
    }

    /// The notice about a stored run: a gap event with reason `dead_letter` covering its
    /// range, naming the file and the platform's reason; its seq is the run's last.
    fn notice(&self, b: &Batch, why: &Rejection, path: &std::path::Path) -> Vec<u8> {
        let mut event = Vec::new();
        event.push(b'{');
        if let Some(field) = self.encoder.fields.as_ref().and_then(|f| f.seq()) {
            crate::event::write_json_str(&mut event, field);
            event.extend_from_slice(format!(":{},", b.last_seq).as_bytes());
        }
        let mut notice = serde_json::json!({
            "gapless": "gap",
            "reason": "dead_letter",
            "first_seq": b.first_seq,
            "last_seq": b.last_seq,
            "events": b.records.len(),
            "dead_letter_file": path.display().to_string(),
            "status": why.status,
            "host": self.encoder.host,
            "timestamp": Timestamp::now().as_str(),
        });
        if !why.error.is_empty() {
            notice["error"] = why.error.clone().into();
        }
        let notice = notice.to_string();
        event.extend_from_slice(&notice.as_bytes()[1..]);
        event
    }

    /// Sends notices until the platform takes them: they are what keeps the stream free of
    /// silent holes, so a refusal holds the sink back, visibly, and is retried.
    async fn announce(&self, notices: &[(u64, u64, Vec<u8>)]) -> std::result::Result<(), Stop> {
        let enc = self.encoder.clone();
        let owned = notices.to_vec();
        let prepared = tokio::task::spawn_blocking(move || enc.prepare_notices(&owned))
            .await
            .unwrap_or_else(|e| panic!("encoding notices panicked: {e}"));
        let mut refusals = 0u32;
        for request in &prepared.requests {
            loop {
                let done = self
                    .send(request, (&request.seqs, request.first_seq))
                    .await
                    .ok_or(Stop::Shutdown)?;
                let taken = match &done {
                    Final::Delivered => true,
                    Final::Items(a) => a.iter().all(|a| matches!(a, ItemAnswer::Delivered)),
                    Final::TooLarge(_) | Final::Rejected(_) => false,
                };
                if taken {
                    self.delivered(request, None);
                    break;
                }
                let wait = self.policy().backoff(refusals);
                let why = match &done {
                    Final::Rejected(r) => format!("HTTP {} {} {}", r.status, r.error, r.response),
                    Final::TooLarge(r) => format!("HTTP 413 {}", r.error),
                    Final::Items(_) => "some notices refused".to_string(),
                    Final::Delivered => String::new(),
                };
                let why: String = why.chars().take(300).collect();
                tracing::error!(sink = %self.name, first_seq = request.first_seq, last_seq = request.last_seq, error = %why, retry_in_ms = wait.as_millis() as u64, "the platform refused the dead-letter notice; retrying (the events themselves are in the dead-letter queue)");
                // Visible in /status and /health/delivery: the sink is held by this notice.
                self.failed(
                    refusals,
                    &format!(
                        "dead-letter notice for seqs {}..={} refused: {why}",
                        request.first_seq, request.last_seq
                    ),
                    wait,
                    false,
                );
                refusals = refusals.saturating_add(1);
                if !self.pause(wait).await {
                    return Err(Stop::Shutdown);
                }
            }
        }
        if !prepared.oversized.is_empty() {
            tracing::error!(sink = %self.name, "a dead-letter notice is larger than the platform takes; it is not sent (the events are in the dead-letter queue)");
        }
        Ok(())
    }
}

impl From<Answer> for Attempt {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Delivered => Attempt::Final(Final::Delivered),
            Answer::Retry { wait, why, alarm } => Attempt::Retry { wait, why, alarm },
            Answer::TooLarge(r) => Attempt::Final(Final::TooLarge(r)),
            Answer::Rejected(r) => Attempt::Final(Final::Rejected(r)),
            Answer::Items(items) => Attempt::Final(Final::Items(items)),
        }
    }
}

impl Answer {
    /// The `status` label of `gapless_sink_requests_total` for an answer a platform read
    /// itself ([`Platform::publish`]): there is no HTTP status to name.
    fn label(&self) -> &'static str {
        match self {
            Answer::Delivered => "delivered",
            Answer::Items(_) => "items",
            Answer::Retry { .. } => "error",
            Answer::TooLarge(_) | Answer::Rejected(_) => "rejected",
        }
    }
}

/// What the platform is told about `request`; `batch`: the items of its batch in order and
/// the first seq the batch covers.
pub(super) fn outgoing<'a>(
    request: &'a Request,
    batch: (&'a [u64], u64),
    agent_id: &'a str,
    gzip: bool,
    replay: bool,
) -> Outgoing<'a> {
    Outgoing {
        body: &request.body,
        gzip,
        items: request.seqs.len(),
        seqs: &request.seqs,
        first_seq: request.first_seq,
        last_seq: request.last_seq,
        agent_id,
        replay,
        batch,
    }
}

/// `builder` with the request's body and the headers every request carries: the
/// idempotency key, the agent id, the continuity headers and `Content-Encoding`.
pub(super) fn with_body(
    builder: reqwest::RequestBuilder,
    request: &Request,
    (agent_id, wal_id): (&str, &str),
    gzip: bool,
) -> reqwest::RequestBuilder {
    let builder = if wal_id.is_empty() {
        builder
    } else {
        builder.header("gapless-wal-id", wal_id)
    };
    let builder = builder
        .header("idempotency-key", request.key.as_str())
        .header("gapless-agent-id", agent_id)
        .header(
            "gapless-seq-range",
            format!("{}-{}", request.first_seq, request.last_seq),
        )
        .header(
            "gapless-prev-seq",
            request.first_seq.saturating_sub(1).to_string(),
        )
        .body(request.body.clone());
    if gzip {
        builder.header(reqwest::header::CONTENT_ENCODING, "gzip")
    } else {
        builder
    }
}

/// Why dead-lettering stopped before it was done.
enum Stop {
    Shutdown,
    Wal(Error),
}
