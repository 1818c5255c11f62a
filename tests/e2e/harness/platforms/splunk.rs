//! [`Hec`]: Splunk's HTTP Event Collector, played by a small HTTP/1.1 server on 127.0.0.1
//! that checks requests as HEC documents them, stores the events it "indexed" with their
//! indexed fields, and misbehaves on cue (busy, busy part-way through a request, internal
//! error, an event it calls malformed, acks late or never, ack queries busy, 413 over a
//! size limit).
//!
//! What it follows, and where from:
//! - `POST /services/collector/event`: concatenated JSON event objects, not an array,
//!   whitespace between them allowed; `time` (epoch seconds, fraction allowed, number or
//!   numeric string), `host`, `source`, `sourcetype`, `index`, `event`, `fields` (indexed
//!   fields). "Format events for HTTP Event Collector",
//!   <https://help.splunk.com/splunk-enterprise/get-data-in/collect-http-event-data/format-events-for-http-event-collector>.
//! - `Authorization: Splunk <token>`; `Content-Encoding: gzip` (Docker's `splunk-gzip`).
//! - Answers `{"text":…,"code":N}`: 0 Success (200); 2 Token is required, 3 Invalid
//!   authorization (401); 4 Invalid token (403); 5 No data, 6 Invalid data format, 7
//!   Incorrect index, 10 Data channel is missing, 11 Invalid data channel, 12 Event field is
//!   required, 13 Event field cannot be blank, 14 ACK is disabled, 15 Error in handling
//!   indexed fields (400); 8 Internal server error (500); 9 Server is busy (503). The codes
//!   as the platform notes list them, A4 (Vector's `HecStatusCode`, fluent/fluent-bit#12043
//!   for 2/3/4), with the texts of the SplunkAdmins app's
//!   `splunkadmins_hec_reply_code_lookup.csv` and of the OpenTelemetry `splunkhec`
//!   receiver. A rejection of one event carries `"invalid-event-number":N`, its 0-based
//!   place in the request (e.g. `{"text":"Incorrect index","code":7,"invalid-event-number":1}`
//!   in splunk/splunk-connect-for-kubernetes#565).
//! - Indexer acknowledgement, per token: a channel (`X-Splunk-Request-Channel` or
//!   `?channel=`, a GUID) is then required (400 code 10 without, 11 if not a GUID); success
//!   adds `"ackId":N`, numbered per channel from 0; `POST /services/collector/ack?channel=…`
//!   with `{"acks":[…]}` answers `{"acks":{"0":true,…}}`, and an id reported `true` is
//!   forgotten, so it reads `false` after ("read-once"); with acknowledgement off the ack
//!   endpoint answers 400 code 14. "About HTTP Event Collector Indexer Acknowledgment",
//!   <https://docs.splunk.com/Documentation/Splunk/8.2.5/Data/AboutHECIDXAck>.
//!
//! Not documented, so switchable ([`Partial`]): whether the events *before* a rejected one
//! were indexed. Splunk's docs say nothing. The maintainer of OpenTelemetry's splunkhec
//! exporter reads `invalid-event-number` as "when the payload processing stopped … we can
//! try resending by dropping the first 9 events"
//! (open-telemetry/opentelemetry-collector-contrib#36113), so the default is
//! [`Partial::Prefix`]: events before it are indexed, it and those after are not.
//! [`Partial::Nothing`] indexes none of the request.
//!
//! Events of a request with an ackId count as indexed once their ack is due (they are
//! still "in the pipeline" before, and lost if the ack never comes).

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::harness::http1::{read_request, RawRequest};

/// What the next `/event` request meets before its events are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cue {
    /// Checked and indexed as documented.
    Normal,
    /// 503 code 9 "Server is busy", with `Retry-After: <secs>` if given.
    Busy {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// 500 code 8 "Internal server error".
    InternalError,
    /// Indexes the first `events` events, then 503 code 9 with
    /// `"invalid-event-number":<events>`: busy part-way through the request, as
    /// open-telemetry/opentelemetry-collector-contrib#36113 quotes HEC.
    BusyAfter {
        /// How many events were indexed before it got busy.
        events: usize,
    },
}

/// When an accepted request's ackId turns true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAfter {
    /// This long after the request was accepted.
    Delay(Duration),
    /// Never: the events were lost in the pipeline.
    Never,
}

/// Whether the events before the one a request is rejected for were indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// Events before the rejected one were indexed (the default; see the module doc).
    Prefix,
    /// Nothing of the request was indexed.
    Nothing,
}

/// One indexed event with its metadata.
#[derive(Debug, Clone)]
pub struct Indexed {
    /// `time`, epoch seconds.
    pub time: Option<f64>,
    /// `host`, `source`, `sourcetype`, `index`, as sent.
    pub host: Option<String>,
    /// See `host`.
    pub source: Option<String>,
    /// See `host`.
    pub sourcetype: Option<String>,
    /// See `host`.
    pub index: Option<String>,
    /// `event`.
    pub event: Value,
    /// `fields`, the indexed fields.
    pub fields: Map<String, Value>,
    /// The request's channel, if it had one.
    pub channel: Option<String>,
}

/// One request as the collector saw it and answered it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived.
    pub arrived: Instant,
    /// The request target, query included.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The answer's body.
    pub answer: Value,
}

impl Request {
    /// The HEC `code` of the answer.
    pub fn code(&self) -> Option<u64> {
        self.answer["code"].as_u64()
    }

    /// Whether it went to the event endpoint.
    pub fn is_event(&self) -> bool {
        self.path.starts_with("/services/collector/event")
    }
}

/// A batch of events waiting for its ack (or indexed without one).
struct Batch {
    events: Vec<Indexed>,
    /// `None`: never.
    due: Option<Instant>,
}

#[derive(Default)]
struct Channel {
    next_ack: u64,
    /// Acks not yet reported true.
    pending: BTreeMap<u64, usize>,
}

struct State {
    token: String,
    ack_enabled: bool,
    allowed_indexes: Option<Vec<String>>,
    partial: Partial,
    max_content_length: Option<usize>,
    cue: Cue,
    script: VecDeque<Cue>,
    ack_after: AckAfter,
    /// An event whose `event.message` contains this is answered code 6, as if malformed.
    poison: Option<String>,
    /// Ack queries are answered 503 code 9.
    ack_busy: bool,
    batches: Vec<Batch>,
    channels: BTreeMap<String, Channel>,
    requests: Vec<Request>,
}

/// The collector. Stops when dropped.
pub struct Hec {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// Settings fixed when the collector starts.
pub struct HecBuilder {
    token: String,
    ack_enabled: bool,
    allowed_indexes: Option<Vec<String>>,
    partial: Partial,
    max_content_length: Option<usize>,
}

impl HecBuilder {
    /// Turns indexer acknowledgement on for the token. By default, off.
    pub fn indexer_acknowledgement(mut self, on: bool) -> Self {
        self.ack_enabled = on;
        self
    }

    /// Only these indexes may be named (code 7 otherwise). By default, any.
    pub fn allowed_indexes(mut self, indexes: &[&str]) -> Self {
        self.allowed_indexes = Some(indexes.iter().map(|s| s.to_string()).collect());
        self
    }

    /// What happens to the events before a rejected one. By default, [`Partial::Prefix`].
    pub fn partial(mut self, partial: Partial) -> Self {
        self.partial = partial;
        self
    }

    /// Requests with a body (as sent) over `bytes` are answered 413 (the server's
    /// `max_content_length`; its answer's text is not documented). By default, no limit.
    pub fn max_content_length(mut self, bytes: usize) -> Self {
        self.max_content_length = Some(bytes);
        self
    }

    /// Binds 127.0.0.1 on a free port and serves.
    pub async fn start(self) -> Hec {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the HEC");
        let addr = listener.local_addr().expect("the HEC's address");
        let state = Arc::new(Mutex::new(State {
            token: self.token,
            ack_enabled: self.ack_enabled,
            allowed_indexes: self.allowed_indexes,
            partial: self.partial,
            max_content_length: self.max_content_length,
            cue: Cue::Normal,
            script: VecDeque::new(),
            ack_after: AckAfter::Delay(Duration::ZERO),
            poison: None,
            ack_busy: false,
            batches: Vec::new(),
            channels: BTreeMap::new(),
            requests: Vec::new(),
        }));
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Hec { addr, state, task }
    }
}

impl Hec {
    /// A collector taking `token`.
    pub fn builder(token: &str) -> HecBuilder {
        HecBuilder {
            token: token.to_string(),
            ack_enabled: false,
            allowed_indexes: None,
            partial: Partial::Prefix,
            max_content_length: None,
        }
    }

    /// The sink's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How `/event` requests are met from now on (after any scripted cues).
    pub fn set_cue(&self, cue: Cue) {
        self.state.lock().unwrap().cue = cue;
    }

    /// The next `/event` requests meet these cues, one each, before the current one applies
    /// again.
    pub fn script(&self, cues: impl IntoIterator<Item = Cue>) {
        self.state.lock().unwrap().script.extend(cues);
    }

    /// When the acks of requests accepted from now on turn true. By default, at once.
    pub fn set_ack_after(&self, after: AckAfter) {
        self.state.lock().unwrap().ack_after = after;
    }

    /// Events whose `event.message` contains `marker` are rejected as malformed (code 6),
    /// from now on; `None` stops it.
    pub fn set_poison(&self, marker: Option<&str>) {
        self.state.lock().unwrap().poison = marker.map(str::to_string);
    }

    /// Ack queries are answered 503 code 9 "Server is busy" while `busy`. By default, not.
    pub fn set_ack_busy(&self, busy: bool) {
        self.state.lock().unwrap().ack_busy = busy;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every event indexed so far (its ack due, if it has one), duplicates included, in
    /// arrival order.
    pub fn indexed(&self) -> Vec<Indexed> {
        let now = Instant::now();
        self.state
            .lock()
            .unwrap()
            .batches
            .iter()
            .filter(|b| b.due.is_some_and(|due| due <= now))
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }

    /// The `event` objects of [`Hec::indexed`].
    pub fn events(&self) -> Vec<Value> {
        self.indexed().into_iter().map(|i| i.event).collect()
    }

    /// Requests so far, by status and code, for failure messages.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.requests() {
            let what = format!("{} {} code {:?}", r.status, r.path, r.code());
            *counts.entry(what).or_default() += 1;
        }
        format!("{counts:?}")
    }
}

impl Drop for Hec {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    connections.spawn(serve(tcp, state.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(tcp: TcpStream, state: Arc<Mutex<State>>) {
    let mut conn = BufReader::new(tcp);
    while let Ok(Some(request)) = read_request(&mut conn).await {
        let (status, retry_after, answer) = {
            let mut state = state.lock().unwrap();
            let answer = handle(&mut state, &request);
            state.requests.push(Request {
                arrived: Instant::now(),
                path: request.path,
                headers: request.headers,
                status: answer.0,
                answer: answer.2.clone(),
            });
            answer
        };
        if write_json(conn.get_mut(), status, retry_after, &answer)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// An answer: status, `Retry-After`, body.
type Answer = (u16, Option<u64>, Value);

fn hec(status: u16, code: u64, text: &str) -> Answer {
    (status, None, json!({"text": text, "code": code}))
}

/// A rejection of the event at `number` (0-based in the request).
fn bad_event(code: u64, text: &str, number: usize) -> Answer {
    (
        400,
        None,
        json!({"text": text, "code": code, "invalid-event-number": number}),
    )
}

/// Checks endpoint, token, channel, size, then the body, and answers.
fn handle(state: &mut State, request: &RawRequest) -> Answer {
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let is_event = matches!(path, "/services/collector/event" | "/services/collector");
    let is_ack = path == "/services/collector/ack";
    if request.method != "POST" || !(is_event || is_ack) {
        return hec(404, 404, "The requested URL was not found on this server.");
    }
    match request.headers.get("authorization") {
        None => return hec(401, 2, "Token is required"),
        Some(auth) if auth.trim() == "Splunk" => return hec(401, 2, "Token is required"),
        Some(auth) => match auth.strip_prefix("Splunk ") {
            None => return hec(401, 3, "Invalid authorization"),
            Some(token) if token.trim() != state.token => return hec(403, 4, "Invalid token"),
            Some(_) => {}
        },
    }
    let channel = request
        .headers
        .get("x-splunk-request-channel")
        .cloned()
        .or_else(|| query_value(query, "channel"));
    if let Some(c) = &channel {
        if uuid::Uuid::parse_str(c).is_err() {
            return hec(400, 11, "Invalid data channel");
        }
    }
    if state
        .max_content_length
        .is_some_and(|max| request.body.len() > max)
    {
        return (413, None, json!({"text": "Content too large"}));
    }
    let body = match gunzip(&request.headers, &request.body) {
        Ok(body) => body,
        Err(_) => return hec(400, 6, "Invalid data format"),
    };
    if is_ack {
        if !state.ack_enabled {
            return hec(400, 14, "ACK is disabled");
        }
        let Some(channel) = channel else {
            return hec(400, 10, "Data channel is missing");
        };
        if state.ack_busy {
            return hec(503, 9, "Server is busy");
        }
        return ack_query(state, &channel, &body);
    }
    if state.ack_enabled && channel.is_none() {
        return hec(400, 10, "Data channel is missing");
    }
    let cue = state
        .script
        .pop_front()
        .unwrap_or_else(|| state.cue.clone());
    let busy_after = match cue {
        Cue::Normal => None,
        Cue::Busy { retry_after_secs } => {
            let (status, _, body) = hec(503, 9, "Server is busy");
            return (status, retry_after_secs, body);
        }
        Cue::InternalError => return hec(500, 8, "Internal server error"),
        Cue::BusyAfter { events } => Some(events),
    };
    index_events(state, channel, &body, busy_after)
}

/// Reads the concatenated event objects one by one; the first bad one ends the request, as
/// does getting busy after `busy_after` events.
fn index_events(
    state: &mut State,
    channel: Option<String>,
    body: &[u8],
    busy_after: Option<usize>,
) -> Answer {
    if body.trim_ascii().is_empty() {
        return hec(400, 5, "No data");
    }
    let mut events = Vec::new();
    let mut rejection = None;
    for (number, item) in serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
    {
        if busy_after == Some(number) {
            state.batches.push(Batch {
                events,
                due: Some(Instant::now()),
            });
            let busy = json!({"text": "Server is busy", "code": 9, "invalid-event-number": number});
            return (503, None, busy);
        }
        match item
            .map_err(|_| bad_event(6, "Invalid data format", number))
            .and_then(|v| check_event(state, v, number, channel.clone()))
        {
            Ok(event) => events.push(event),
            Err(answer) => {
                rejection = Some(answer);
                break;
            }
        }
    }
    if let Some(answer) = rejection {
        if state.partial == Partial::Prefix && !events.is_empty() {
            state.batches.push(Batch {
                events,
                due: Some(Instant::now()),
            });
        }
        return answer;
    }
    if !state.ack_enabled {
        state.batches.push(Batch {
            events,
            due: Some(Instant::now()),
        });
        return hec(200, 0, "Success");
    }
    let channel = channel.expect("checked above: acknowledgement needs a channel");
    let due = match state.ack_after {
        AckAfter::Delay(d) => Some(Instant::now() + d),
        AckAfter::Never => None,
    };
    state.batches.push(Batch { events, due });
    let batch = state.batches.len() - 1;
    let ch = state.channels.entry(channel).or_default();
    let ack_id = ch.next_ack;
    ch.next_ack += 1;
    ch.pending.insert(ack_id, batch);
    (
        200,
        None,
        json!({"text": "Success", "code": 0, "ackId": ack_id}),
    )
}

/// Checks one event object as HEC does and returns it as indexed.
fn check_event(
    state: &State,
    value: Value,
    number: usize,
    channel: Option<String>,
) -> Result<Indexed, Answer> {
    let Value::Object(mut object) = value else {
        return Err(bad_event(6, "Invalid data format", number));
    };
    let event = match object.remove("event") {
        None => return Err(bad_event(12, "Event field is required", number)),
        Some(Value::Null) => return Err(bad_event(13, "Event field cannot be blank", number)),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(bad_event(13, "Event field cannot be blank", number))
        }
        Some(event) => event,
    };
    if let (Some(marker), Some(message)) = (&state.poison, event["message"].as_str()) {
        if message.contains(marker.as_str()) {
            return Err(bad_event(6, "Invalid data format", number));
        }
    }
    let time = match object.remove("time") {
        None => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => match s.parse::<f64>() {
            Ok(t) => Some(t),
            Err(_) => return Err(bad_event(6, "Invalid data format", number)),
        },
        Some(_) => return Err(bad_event(6, "Invalid data format", number)),
    };
    let mut text = |key: &str| -> Result<Option<String>, Answer> {
        match object.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad_event(6, "Invalid data format", number)),
        }
    };
    let host = text("host")?;
    let source = text("source")?;
    let sourcetype = text("sourcetype")?;
    let index = text("index")?;
    if let (Some(index), Some(allowed)) = (&index, &state.allowed_indexes) {
        if !allowed.contains(index) {
            return Err(bad_event(7, "Incorrect index", number));
        }
    }
    let fields = match object.remove("fields") {
        None => Map::new(),
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(bad_event(15, "Error in handling indexed fields", number)),
    };
    // Indexed fields are flat: a value is a scalar or an array of scalars.
    let nested = |v: &Value| {
        v.is_object()
            || v.as_array()
                .is_some_and(|a| a.iter().any(|x| x.is_object() || x.is_array()))
    };
    if fields.values().any(nested) {
        return Err(bad_event(15, "Error in handling indexed fields", number));
    }
    Ok(Indexed {
        time,
        host,
        source,
        sourcetype,
        index,
        event,
        fields,
        channel,
    })
}

/// `{"acks":[ids]}` → `{"acks":{"id":bool}}`; an id reported true is forgotten.
fn ack_query(state: &mut State, channel: &str, body: &[u8]) -> Answer {
    let ids: Vec<u64> = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v["acks"].as_array() {
            Some(ids) if ids.iter().all(Value::is_u64) => {
                ids.iter().filter_map(Value::as_u64).collect()
            }
            _ => return hec(400, 6, "Invalid data format"),
        },
        Err(_) => return hec(400, 6, "Invalid data format"),
    };
    let now = Instant::now();
    let mut acks = Map::new();
    for id in ids {
        let batch = state
            .channels
            .get(channel)
            .and_then(|c| c.pending.get(&id).copied());
        let done = batch.is_some_and(|b| state.batches[b].due.is_some_and(|due| due <= now));
        if done {
            if let Some(c) = state.channels.get_mut(channel) {
                c.pending.remove(&id);
            }
        }
        acks.insert(id.to_string(), Value::Bool(done));
    }
    (200, None, json!({ "acks": acks }))
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn gunzip(headers: &BTreeMap<String, String>, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

async fn write_json<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    retry_after: Option<u64>,
    body: &Value,
) -> std::io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} HEC\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}
