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
//!   array is answered 204 and stores nothing (as reported in [4]); once the stream's
//!   columns are declared ([`Azure::declare_columns`], e.g. those of gapless's packaged DCR),
//!   a row keeps only those: the data "must match the structure expected by the DCR" [1]
//!   (the DCR's `transformKql` runs after that and is not played here);
//! - a string value over 64 KB is truncated [5];
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
mod ingestion;
pub mod rfc3339;
mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use entra::TokenRequest;
pub use ingestion::IngestRequest;

use crate::harness::http1::RawRequest;
use crate::harness::receiver::Outcome;
use crate::harness::toml_path;
use server::{accept_loop, Action, Endpoint, Reply, Slot};

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
/// Longest field value stored; longer ones are truncated [5].
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

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
    /// The stream's declared columns, when the rule declares them.
    columns: Mutex<Option<BTreeSet<String>>>,
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

/// The columns that `packaging/azure/dcr.json`, the DCR gapless ships, declares for its
/// stream.
pub fn packaged_columns() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/azure/dcr.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dcr: Value = serde_json::from_str(&text).expect("dcr.json is JSON");
    dcr["properties"]["streamDeclarations"][STREAM]["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("dcr.json declares no columns for {STREAM}"))
        .iter()
        .map(|c| c["name"].as_str().expect("a column name").to_string())
        .collect()
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
            columns: Mutex::new(None),
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

    /// Makes the rule's stream declare these columns: a stored row keeps only them, the
    /// rest are dropped without an error, as Azure ingests only the columns a DCR's
    /// `streamDeclarations` names [1]. By default every column is kept.
    pub fn declare_columns(&self, columns: &[String]) {
        *self.state.columns.lock().unwrap() = Some(columns.iter().cloned().collect());
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

    pub fn protocol_violations(&self) -> Vec<String> {
        ingestion::violations(&self.requests())
    }
}

impl Drop for Azure {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
