//! [`Azure`]: Azure Monitor's Logs Ingestion API (what feeds Microsoft Sentinel) and the
//! Microsoft Entra ID token endpoint in front of it, each on its own 127.0.0.1 port, played
//! as their documentation describes them and misbehaving on cue.
//!
//! Ingestion, `POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`:
//! - checked in this order: the route (else 404), `Authorization: Bearer <token>` issued
//!   here and not expired (else 401, `TokenExpired` when expired), the DCR immutable id and
//!   stream (else 404), the app's *Monitoring Metrics Publisher* role (else 403
//!   `OperationFailed`, switchable with [`Azure::set_role`]), `api-version` (else 400), the
//!   size of the body as sent and after `Content-Encoding: gzip` (over 1,048,576 bytes: 413
//!   `ContentLengthLimitExceeded`), JSON (else 400), then the cue ([`Fault`]);
//! - a JSON array of objects is stored and answered 204; a body that is JSON but not an
//!   array is answered 204 and stores nothing (as reported in [4]);
//! - a stored row whose `TimeGenerated` is over 2 days old or over 1 day ahead (or is
//!   missing) gets the receive time instead [10];
//! - errors are `{"error":{"code","message"}}` with the code in `x-ms-error-code` [2].
//!
//! The token endpoint is [`entra`]'s. Every token is opaque and lives `expires_in` seconds
//! ([`Azure::set_token_lifetime`]); [`Azure::revoke_tokens`] forgets them all, as a key
//! rollover would.
//!
//! Sources:
//! 1. Logs Ingestion API overview, learn.microsoft.com/azure/azure-monitor/logs/logs-ingestion-api-overview
//! 2. Azure/azure-rest-api-specs `specification/monitor/data-plane/ingestion/stable/2023-01-01/DataCollectionRules.json`
//! 5. Service limits, Logs Ingestion API: 1 MB per call, compressed and uncompressed,
//!    learn.microsoft.com/azure/azure-monitor/fundamentals/service-limits#logs-ingestion-api;
//!    the 413 text as observed in JulianHayward/AzADServicePrincipalInsights#30
//! 4. Azure/azure-sdk-for-python#32562 (a body that is not an array: 204, nothing ingested)
//! 8. Azure/azure-sdk-for-net#37173, TROUBLESHOOTING.md (403 `OperationFailed` text)
//! 10. Standard columns in Azure Monitor Logs, `TimeGenerated`,
//!     learn.microsoft.com/azure/azure-monitor/logs/log-standard-columns
//!
//! Error codes other than `ContentLengthLimitExceeded`, `OperationFailed` and
//! `TokenExpired` are not documented; the ones used here are placeholders that no client
//! should depend on.

mod entra;
pub mod rfc3339;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub use entra::TokenRequest;

use crate::harness::http1::{read_request, RawRequest};
use crate::harness::receiver::Outcome;
use crate::harness::toml_path;

/// The tenant the token endpoint knows.
pub const TENANT: &str = "0b6e0f65-3f2c-4c3e-9d1a-7a3b5c1d2e4f";
/// The app registration's client id.
pub const CLIENT_ID: &str = "5f1c2b3a-9e8d-4c7b-a6f5-e4d3c2b1a0f9";
/// The app's client secret: distinctive, so that a leak into a log is easy to find.
pub const CLIENT_SECRET: &str = "gX8~Q.sEcReT-azure-4f7c1e9b2d";
/// The data collection rule's immutable id.
pub const DCR: &str = "dcr-0123456789abcdef0123456789abcdef";
/// The stream the rule declares.
pub const STREAM: &str = "Custom-GaplessLogs_CL";
/// The one API version.
pub const API_VERSION: &str = "2023-01-01";
/// Largest body of one call, as sent and uncompressed [5].
pub const MAX_CALL_BYTES: usize = 1_048_576;

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// A misbehaviour on cue, for the token endpoint or the ingestion endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status, with the endpoint's error body (413 as `ContentLengthLimitExceeded`).
    Status(u16),
    /// This status (429, 503) with `Retry-After: <secs>`.
    RetryAfter {
        /// The status.
        status: u16,
        /// The header's value.
        secs: u64,
    },
    /// Reads the request, then resets the connection: a server that is down.
    Reset,
    /// Reads the request and never answers.
    Stall,
    /// Ingestion only: this status for a request holding any row that is not a gap record;
    /// requests of gap records only are taken.
    RejectEvents(u16),
}

/// One ingestion call as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// When its last byte arrived.
    pub arrived: Instant,
    /// `POST`, …
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body's length as sent.
    pub sent_bytes: usize,
    /// The body's length after `Content-Encoding`, if it could be decoded.
    pub plain_bytes: Option<usize>,
    /// The body is JSON but not an array.
    pub not_array: bool,
    /// The rows; for a call answered 204 as stored (`TimeGenerated` rule applied).
    pub rows: Vec<Value>,
    /// For each stored row whose `TimeGenerated` was replaced, the value it had.
    pub replaced_times: Vec<Option<Value>>,
    /// The `x-ms-error-code` answered, if any.
    pub error_code: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
}

impl IngestRequest {
    /// Whether it was answered 204 (stored).
    pub fn accepted(&self) -> bool {
        self.outcome == Outcome::Answered(204)
    }

    /// The status answered, if it was.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Answered(s) => Some(s),
            _ => None,
        }
    }
}

/// An answer: status, extra headers, JSON body (empty for none).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(status: u16, headers: &[(&str, String)], body: Value) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            body: body.to_string(),
        }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// The Logs Ingestion API's error shape [2].
    fn azure(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Reply {
        let mut headers = vec![("x-ms-error-code", code.to_string())];
        if let Some(secs) = retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        Reply::json(
            status,
            &headers,
            json!({"error": {"code": code, "message": message}}),
        )
    }
}

/// What to do with one request.
enum Action {
    Reply(Reply),
    Reset,
    Stall,
}

/// Where the record of a request is, to note its outcome.
enum Slot {
    Token(usize),
    Ingest(usize),
}

#[derive(Clone, Copy)]
enum Endpoint {
    Entra,
    Ingestion,
}

struct State {
    directory: entra::Directory,
    /// `expires_in` of new tokens, and whether it is written as a string.
    lifetime: Mutex<(u64, bool)>,
    tokens: Mutex<HashMap<String, Instant>>,
    issued: AtomicUsize,
    token_fault: Mutex<Option<Fault>>,
    token_script: Mutex<VecDeque<Fault>>,
    token_requests: Mutex<Vec<TokenRequest>>,
    role: AtomicBool,
    fault: Mutex<Option<Fault>>,
    script: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<IngestRequest>>,
}

/// The next fault: a scripted one first, else the standing one.
fn next_fault(script: &Mutex<VecDeque<Fault>>, standing: &Mutex<Option<Fault>>) -> Option<Fault> {
    let scripted = script.lock().unwrap().pop_front();
    scripted.or_else(|| standing.lock().unwrap().clone())
}

impl State {
    fn token(&self, raw: &RawRequest) -> (Action, Slot) {
        let form = entra::decode_form(&raw.body);
        let action = match next_fault(&self.token_script, &self.token_fault) {
            Some(Fault::Reset) => Action::Reset,
            Some(Fault::Stall) => Action::Stall,
            Some(Fault::Status(s) | Fault::RejectEvents(s)) => Action::Reply(entra::on_cue(s)),
            Some(Fault::RetryAfter { status, secs }) => {
                let mut r = entra::on_cue(status);
                r.headers.push(("retry-after".into(), secs.to_string()));
                Action::Reply(r)
            }
            None if raw.method != "POST" => Action::Reply(Reply::text(404, "Not Found")),
            None => Action::Reply(
                match self.directory.check(
                    &raw.path,
                    raw.headers.get("content-type").map(String::as_str),
                    &form,
                ) {
                    Err(reply) => reply,
                    Ok(()) => self.issue(),
                },
            ),
        };
        let mut requests = self.token_requests.lock().unwrap();
        requests.push(TokenRequest {
            path: raw.path.clone(),
            form,
            status: None,
        });
        (action, Slot::Token(requests.len() - 1))
    }

    fn issue(&self) -> Reply {
        let (secs, as_string) = *self.lifetime.lock().unwrap();
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("opaque-token-{n}-{}", uuid::Uuid::new_v4().simple());
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), Instant::now() + Duration::from_secs(secs));
        entra::token_reply(&token, secs, as_string)
    }

    /// Checks `Authorization: Bearer <token>`.
    fn bearer(&self, header: Option<&String>) -> Result<(), Reply> {
        let unauthorized = |code: &str, message: &str| {
            let mut r = Reply::azure(401, code, message, None);
            r.headers.push(("www-authenticate".into(), "Bearer".into()));
            r
        };
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(unauthorized(
                "InvalidToken",
                "An Authorization header with a Bearer token is required.",
            ));
        };
        match self.tokens.lock().unwrap().get(token.trim()) {
            None => Err(unauthorized(
                "InvalidToken",
                "The provided token is not valid.",
            )),
            Some(expiry) if Instant::now() >= *expiry => Err(unauthorized(
                "TokenExpired",
                "The provided token has expired.",
            )),
            Some(_) => Ok(()),
        }
    }

    fn ingest(&self, raw: RawRequest) -> (Action, Slot) {
        let mut record = IngestRequest {
            arrived: Instant::now(),
            method: raw.method.clone(),
            path: raw.path.clone(),
            headers: raw.headers.clone(),
            sent_bytes: raw.body.len(),
            plain_bytes: None,
            not_array: false,
            rows: Vec::new(),
            replaced_times: Vec::new(),
            error_code: None,
            outcome: Outcome::Pending,
        };
        let action = match self.judge(&raw, &mut record) {
            Err(action) => action,
            Ok(()) => Action::Reply(self.store(&mut record)),
        };
        if let Action::Reply(r) = &action {
            record.error_code = r
                .headers
                .iter()
                .find(|(k, _)| k == "x-ms-error-code")
                .map(|(_, v)| v.clone());
        }
        let mut requests = self.requests.lock().unwrap();
        requests.push(record);
        (action, Slot::Ingest(requests.len() - 1))
    }

    /// Every check a call must pass before it is stored, in the order of the module doc.
    fn judge(&self, raw: &RawRequest, record: &mut IngestRequest) -> Result<(), Action> {
        let fail = |r: Reply| Err(Action::Reply(r));
        let (path, query) = raw.path.split_once('?').unwrap_or((&raw.path, ""));
        let route = path
            .strip_prefix("/dataCollectionRules/")
            .and_then(|r| r.split_once("/streams/"))
            .filter(|(d, s)| !d.is_empty() && !s.is_empty() && !s.contains('/'));
        let Some((dcr, stream)) = route.filter(|_| raw.method == "POST") else {
            return fail(Reply::azure(
                404,
                "NotFound",
                "The requested resource was not found.",
                None,
            ));
        };
        if let Err(r) = self.bearer(raw.headers.get("authorization")) {
            return fail(r);
        }
        if dcr != DCR {
            return fail(Reply::azure(
                404,
                "NotFound",
                &format!("Data collection rule with immutable Id '{dcr}' not found."),
                None,
            ));
        }
        if stream != STREAM {
            return fail(Reply::azure(
                404,
                "NotFound",
                &format!("Stream '{stream}' is not declared in the data collection rule '{dcr}'."),
                None,
            ));
        }
        if !self.role.load(Ordering::Relaxed) {
            return fail(Reply::azure(403, "OperationFailed", &format!(
                "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}' PipelineAccessResult: AccessGranted: False, IsRbacPresent: False, Message: Required authorization action was not found for tenantId {TENANT} objectId {CLIENT_ID}."
            ), None));
        }
        let version = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("api-version="));
        if version != Some(API_VERSION) {
            return fail(Reply::azure(
                400,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{}' is invalid. The supported versions are '{API_VERSION}'.",
                    version.unwrap_or("")
                ),
                None,
            ));
        }
        let too_large = |n: usize| {
            Reply::azure(413, "ContentLengthLimitExceeded", &format!(
                "Maximum allowed content length: {MAX_CALL_BYTES} bytes (1 MB). Provided content length: {n} bytes."
            ), None)
        };
        if raw.body.len() > MAX_CALL_BYTES {
            return fail(too_large(raw.body.len()));
        }
        let plain = match raw
            .headers
            .get("content-encoding")
            .map(|e| e.to_ascii_lowercase())
        {
            None => raw.body.clone(),
            Some(e) if e == "gzip" => {
                let mut out = Vec::new();
                // Bounded, so that a runaway body cannot exhaust the test's memory.
                let limit = 64 * MAX_CALL_BYTES as u64;
                if let Err(e) = flate2::read::MultiGzDecoder::new(raw.body.as_slice())
                    .take(limit)
                    .read_to_end(&mut out)
                {
                    return fail(Reply::azure(
                        400,
                        "InvalidContentEncoding",
                        &format!("The body could not be decompressed: {e}"),
                        None,
                    ));
                }
                out
            }
            Some(e) => {
                return fail(Reply::azure(
                    400,
                    "InvalidContentEncoding",
                    &format!("Content-Encoding '{e}' is not supported."),
                    None,
                ))
            }
        };
        record.plain_bytes = Some(plain.len());
        if plain.len() > MAX_CALL_BYTES {
            return fail(too_large(plain.len()));
        }
        let body: Value = match serde_json::from_slice(&plain) {
            Ok(v) => v,
            Err(e) => {
                return fail(Reply::azure(
                    400,
                    "InvalidJson",
                    &format!("The body is not valid JSON: {e}"),
                    None,
                ))
            }
        };
        match body {
            Value::Array(rows) => {
                if rows.iter().any(|r| !r.is_object()) {
                    return fail(Reply::azure(
                        400,
                        "InvalidJson",
                        "Every element of the array must be an object.",
                        None,
                    ));
                }
                record.rows = rows;
            }
            _ => record.not_array = true,
        }
        let plain_rows = record.rows.iter().any(|r| r["gapless"] != "gap");
        match next_fault(&self.script, &self.fault) {
            None => Ok(()),
            Some(Fault::Reset) => Err(Action::Reset),
            Some(Fault::Stall) => Err(Action::Stall),
            Some(Fault::RejectEvents(_)) if !plain_rows => Ok(()),
            Some(Fault::Status(413)) => fail(too_large(raw.body.len())),
            Some(Fault::Status(s) | Fault::RejectEvents(s)) => fail(Reply::azure(
                s,
                code_of(s),
                "The test receiver answers this status on cue.",
                None,
            )),
            Some(Fault::RetryAfter { status, secs }) => fail(Reply::azure(
                status,
                code_of(status),
                "The test receiver answers this status on cue.",
                Some(secs),
            )),
        }
    }

    /// Stores the rows of an accepted call, applying the `TimeGenerated` rule [10].
    fn store(&self, record: &mut IngestRequest) -> Reply {
        let now = rfc3339::now_micros();
        for row in &mut record.rows {
            let time = row
                .get("TimeGenerated")
                .and_then(Value::as_str)
                .and_then(rfc3339::parse);
            let in_window =
                time.is_some_and(|t| now - t <= 2 * DAY_MICROS && t - now <= DAY_MICROS);
            if !in_window {
                record
                    .replaced_times
                    .push(row.get("TimeGenerated").cloned());
                row["TimeGenerated"] = Value::String(rfc3339::format(now));
            }
        }
        Reply {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    fn finish(&self, slot: &Slot, outcome: Outcome) {
        match *slot {
            Slot::Token(i) => {
                self.token_requests.lock().unwrap()[i].status = match outcome {
                    Outcome::Answered(s) => Some(s),
                    _ => None,
                }
            }
            Slot::Ingest(i) => self.requests.lock().unwrap()[i].outcome = outcome,
        }
    }
}

/// A plausible `x-ms-error-code` for a status given on cue.
fn code_of(status: u16) -> &'static str {
    match status {
        400 => "InvalidRequest",
        401 => "InvalidToken",
        403 => "OperationFailed",
        404 => "NotFound",
        408 => "RequestTimeout",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// The two endpoints. Both stop when dropped.
pub struct Azure {
    ingestion: SocketAddr,
    entra: SocketAddr,
    state: Arc<State>,
    tasks: [JoinHandle<()>; 2],
}

impl Azure {
    /// Both endpoints, healthy: tokens live an hour (`expires_in` 3599, as Entra answers),
    /// the app has its role, every valid call is stored.
    pub async fn start() -> Azure {
        let state = Arc::new(State {
            directory: entra::Directory {
                tenant: TENANT.into(),
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
            },
            lifetime: Mutex::new((3599, false)),
            tokens: Mutex::new(HashMap::new()),
            issued: AtomicUsize::new(0),
            token_fault: Mutex::new(None),
            token_script: Mutex::new(VecDeque::new()),
            token_requests: Mutex::new(Vec::new()),
            role: AtomicBool::new(true),
            fault: Mutex::new(None),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
        });
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (ingestion, entra) = (bind().await.expect("bind"), bind().await.expect("bind"));
        let addrs = (ingestion.local_addr().unwrap(), entra.local_addr().unwrap());
        let tasks = [
            tokio::spawn(accept_loop(ingestion, state.clone(), Endpoint::Ingestion)),
            tokio::spawn(accept_loop(entra, state.clone(), Endpoint::Entra)),
        ];
        Azure {
            ingestion: addrs.0,
            entra: addrs.1,
            state,
            tasks,
        }
    }

    /// The logs-ingestion endpoint (the sink's `endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.ingestion)
    }

    /// The Entra ID authority (the sink's `authority`).
    pub fn authority(&self) -> String {
        format!("http://{}", self.entra)
    }

    /// An `azure_monitor_logs` sink `name` for this platform, reading the secret from
    /// `secret_file` (which it writes), with `batch = { <batch> }`, retrying after
    /// 50–500 ms and giving up on a request after 2 s; `extra` lines go into its table.
    pub fn sink(
        &self,
        name: &str,
        inputs: &[&str],
        secret_file: &Path,
        batch: &str,
        extra: &str,
    ) -> String {
        std::fs::write(secret_file, format!("{CLIENT_SECRET}\n")).expect("write the secret file");
        let inputs: Vec<String> = inputs.iter().map(|i| format!("\"{i}\"")).collect();
        format!(
            r#"
[sinks.{name}]
type = "azure_monitor_logs"
inputs = [{inputs}]
endpoint = "{endpoint}"
authority = "{authority}"
dcr_immutable_id = "{DCR}"
stream_name = "{STREAM}"
auth = {{ tenant_id = "{TENANT}", client_id = "{CLIENT_ID}", client_secret_file = {secret} }}
batch = {{ {batch} }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#,
            inputs = inputs.join(", "),
            endpoint = self.endpoint(),
            authority = self.authority(),
            secret = toml_path(secret_file),
        )
    }

    /// New tokens live `secs` seconds (`expires_in`), written as a number, or as a string
    /// when `as_string`. By default 3599, a number.
    pub fn set_token_lifetime(&self, secs: u64, as_string: bool) {
        *self.state.lifetime.lock().unwrap() = (secs, as_string);
    }

    /// Every token issued so far becomes unknown: the next call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    /// How the token endpoint answers from now on (after scripted faults); `None`: as
    /// documented.
    pub fn set_token_fault(&self, fault: Option<Fault>) {
        *self.state.token_fault.lock().unwrap() = fault;
    }

    /// The next `n` token requests get `fault`.
    pub fn script_token(&self, n: usize, fault: Fault) {
        self.state
            .token_script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Every token request so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.token_requests.lock().unwrap().clone()
    }

    /// How many tokens were issued.
    pub fn tokens_issued(&self) -> usize {
        self.state.issued.load(Ordering::Relaxed)
    }

    /// Gives or takes the app's *Monitoring Metrics Publisher* role on the DCR (without it:
    /// 403). By default it has it.
    pub fn set_role(&self, granted: bool) {
        self.state.role.store(granted, Ordering::Relaxed);
    }

    /// How valid ingestion calls are answered from now on (after scripted faults); `None`:
    /// 204 and stored.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// The next `n` valid ingestion calls get `fault`.
    pub fn script(&self, n: usize, fault: Fault) {
        self.state
            .script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Every ingestion call so far, in arrival order.
    pub fn requests(&self) -> Vec<IngestRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every stored row, duplicates included, in arrival order.
    pub fn rows(&self) -> Vec<Value> {
        let requests = self.state.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.accepted())
            .flat_map(|r| r.rows.iter().cloned())
            .collect()
    }

    /// The stored rows, one per `seq`, in `seq` order.
    pub fn unique_rows(&self) -> Vec<Value> {
        let mut by_seq: BTreeMap<u64, Value> = BTreeMap::new();
        for row in self.rows() {
            let seq = row["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("a row without a numeric seq: {row}"));
            by_seq.entry(seq).or_insert(row);
        }
        by_seq.into_values().collect()
    }

    /// Waits until at least `n` distinct seqs were stored; returns the rows.
    pub async fn wait_for_rows(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.unique_rows();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {n} rows; {} stored; {}",
                rows.len(),
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Calls and token requests by outcome, for failure messages.
    pub fn summary(&self) -> String {
        let mut calls: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.requests() {
            let key = match (r.outcome, &r.error_code) {
                (o, Some(code)) => format!("{o:?} {code}"),
                (o, None) => format!("{o:?}"),
            };
            *calls.entry(key).or_default() += 1;
        }
        let mut tokens: BTreeMap<Option<u16>, usize> = BTreeMap::new();
        for t in self.token_requests() {
            *tokens.entry(t.status).or_default() += 1;
        }
        format!("ingestion calls {calls:?}; token requests by status {tokens:?}")
    }

    /// What in the calls so far breaks the documented protocol [1][2][5]: a method, header
    /// or body the API does not take, a call over the size limit, a body that is not an
    /// array, a row without an RFC 3339 `TimeGenerated`. Empty when all is well.
    pub fn protocol_violations(&self) -> Vec<String> {
        let mut found = BTreeSet::new();
        for r in self.requests() {
            let h = |n: &str| r.headers.get(n).map(String::as_str);
            if r.method != "POST" {
                found.insert(format!("method {}", r.method));
            }
            if !r.path.ends_with(&format!("?api-version={API_VERSION}")) {
                found.insert(format!("target {}", r.path));
            }
            if !h("content-type").is_some_and(|c| c.starts_with("application/json")) {
                found.insert(format!("content-type {:?}", h("content-type")));
            }
            if !matches!(h("content-encoding"), None | Some("gzip")) {
                found.insert(format!("content-encoding {:?}", h("content-encoding")));
            }
            if !h("authorization").is_some_and(|a| a.starts_with("Bearer ")) {
                found.insert("a call without a Bearer token".into());
            }
            if !h("x-ms-client-request-id").is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()) {
                found.insert(format!(
                    "x-ms-client-request-id {:?}",
                    h("x-ms-client-request-id")
                ));
            }
            if r.sent_bytes > MAX_CALL_BYTES || r.plain_bytes.unwrap_or(0) > MAX_CALL_BYTES {
                found.insert(format!(
                    "a call of {} bytes ({:?} uncompressed)",
                    r.sent_bytes, r.plain_bytes
                ));
            }
            if r.not_array {
                found.insert("a body that is not a JSON array".into());
            }
            if r.accepted()
                && r.replaced_times.iter().any(|t| {
                    !t.as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|t| rfc3339::parse(t).is_some())
                })
            {
                found.insert(format!(
                    "a row without an RFC 3339 TimeGenerated: {:?}",
                    r.replaced_times
                ));
            }
        }
        found.into_iter().collect()
    }
}

impl Drop for Azure {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, endpoint: Endpoint) {
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // Dropping the socket then sends RST rather than FIN: a real reset.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                connections.spawn(serve(tcp, state.clone(), endpoint));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves the requests of one connection until the client closes it or a fault ends it.
async fn serve(tcp: TcpStream, state: Arc<State>, endpoint: Endpoint) {
    let mut conn = BufReader::new(tcp);
    while let Ok(Some(raw)) = read_request(&mut conn).await {
        let (action, slot) = match endpoint {
            Endpoint::Entra => state.token(&raw),
            Endpoint::Ingestion => state.ingest(raw),
        };
        match action {
            Action::Reply(reply) => {
                if write_reply(conn.get_mut(), &reply).await.is_err() {
                    state.finish(&slot, Outcome::Reset);
                    return;
                }
                state.finish(&slot, Outcome::Answered(reply.status));
            }
            Action::Reset => {
                state.finish(&slot, Outcome::Reset);
                return;
            }
            Action::Stall => {
                state.finish(&slot, Outcome::Stalled);
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink).await;
                return;
            }
        }
    }
}

async fn write_reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    if reply.status != 204 {
        head.push_str(&format!(
            "content-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n",
            reply.body.len()
        ));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&reply.body);
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
