//! [`Elastic`]: an Elasticsearch (or OpenSearch) cluster as the `elasticsearch` sink sees
//! it — the `_bulk` API writing into data streams — played by a small HTTP/1.1 server on
//! 127.0.0.1 that keeps every document it indexed and misbehaves on cue. [`Elastic::join`]
//! starts another node of the same cluster (one document store, its own port and its own
//! faults), so that failover from one endpoint to the next can be tested.
//!
//! What it does, and where the documentation says so (it answers as Elasticsearch 7.17
//! does; 8.x names the parse failure `document_parsing_exception`):
//! - `POST|PUT /_bulk` and `/{index}/_bulk`; the index of the path serves actions that
//!   name none. NDJSON, `Content-Type: application/x-ndjson` (or `application/json`; any
//!   other type is 406), the last line ending in `\n` (400 `illegal_argument_exception`
//!   otherwise), each `\n` possibly preceded by `\r`. Items are answered in request order,
//!   `{"took","errors","items":[{"<action>":{"_index","_id","status",…,"error":{"type",
//!   "reason"}}}]}`, and one failing item does not affect the others.
//!   elastic/elasticsearch `docs/reference/docs/bulk.asciidoc`
//!   (<https://www.elastic.co/guide/en/elasticsearch/reference/7.17/docs-bulk.html>).
//! - Every target is a data stream: only `create` is accepted (`index`, `update`, `delete`
//!   get item 400 `illegal_argument_exception` "only write ops with an op_type of create
//!   are allowed in data streams"), each document needs a `@timestamp` date (item 400
//!   `mapper_parsing_exception` otherwise), and documents land in a backing index
//!   `.ds-<stream>-<yyyy.mm.dd>-000001`, which is the `_index` of the answer.
//!   `docs/reference/data-streams/use-a-data-stream.asciidoc`;
//!   <https://www.elastic.co/docs/api/elasticsearch-serverless/operation/operation-bulk>.
//! - A document repeating a key in one object fails to parse (item 400
//!   `mapper_parsing_exception`, "Duplicate field"): "Elasticsearch 6.0.0 enforces that all
//!   keys are unique"
//!   (<https://www.elastic.co/guide/en/elasticsearch/reference/6.0/breaking_60_rest_changes.html>).
//! - An index name the create-index API forbids (uppercase, `:`, a leading `_`, …) is item
//!   400 `invalid_index_name_exception`
//!   (<https://elastic.co/guide/en/elasticsearch/reference/7.1/indices-create-index.html>).
//! - `create` of an `_id` the stream holds is item 409 `version_conflict_engine_exception`
//!   (the document is not touched): a resend with the same `_id`s de-duplicates. Without
//!   `_id` a fresh one is generated. (Not modelled: after a rollover the same `_id` would
//!   land in a new backing index and be duplicated.)
//! - `Content-Encoding: gzip` (and `deflate`) bodies: "compressed requests have always been
//!   accepted" since 5.0 (<https://elastic.co/guide/en/elasticsearch/reference/5.6/breaking_50_http_changes.html>).
//!   An unknown encoding is passed through as is, and then fails to parse.
//! - `http.max_content_length` (default 100mb): a larger body is answered 413 with an empty
//!   body and the connection closed, as Netty's aggregator does. The limit applies to the
//!   body after decompression: the decompressor sits before the aggregator in the node's
//!   pipeline (U: read from the server's code, not its documentation).
//!   <https://www.elastic.co/guide/en/elasticsearch/reference/7.17/modules-http.html>.
//! - With security on (any credential configured): `Authorization: ApiKey <base64(id:key)>`
//!   (<https://www.elastic.co/guide/en/elasticsearch/reference/7.17/security-api-create-api-key.html>)
//!   or `Basic`; anything else is 401 `security_exception` with `WWW-Authenticate` for
//!   both, in the error shape every request error has:
//!   `{"error":{"root_cause":[{"type","reason"}],"type","reason"},"status":N}`.
//! - Answers carry `X-elastic-product: Elasticsearch` (7.14+; clients check it).
//!
//! On cue ([`Fault`], per node, also scripted request by request): a whole-request status
//! with the error body the server sends for it (429 `es_rejected_execution_exception`,
//! 503, 500, …), a reset, a stall, a slow answer, or an answer lost after indexing. Per item
//! (cluster-wide): [`Elastic::reject_items`] fails the first N attempts of documents a
//! predicate picks (429 `es_rejected_execution_exception`, as indexing pressure does), and
//! [`Elastic::map_long`] maps a field as `long`, so that a document with a non-numeric
//! value there gets 400 `mapper_parsing_exception`, as a mapping would.
//!
//! HTTPS with a given certificate ([`Elastic::start_tls`]), as a node with
//! `xpack.security.http.ssl` on. Not implemented: `filter_path` (the answer is always
//! complete, a superset of any filtered one), `pipeline`, `refresh`, `routing`.
//!
//! By role: this file holds the cluster (settings, document store, request log) and the
//! test's handle on it; `node` serves a node's connections and checks each request; `bulk`
//! parses the body and applies the data-stream rules item by item; `wire` writes answers
//! and the error bodies.

mod bulk;
mod node;
mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::harness::certs::ServerCert;
use node::accept_loop;
use wire::base64;

/// `http.max_content_length`'s default.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 100 * 1024 * 1024;

/// The cluster's settings: credentials and the body limit.
#[derive(Debug, Clone)]
pub struct Settings {
    api_keys: Vec<String>,
    basic: Vec<String>,
    max_content_length: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            api_keys: Vec::new(),
            basic: Vec::new(),
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
        }
    }
}

impl Settings {
    /// Accepts `Authorization: ApiKey <encoded>` (see [`encoded_api_key`]) and turns
    /// security on. By default security is off and any request is taken.
    pub fn api_key(mut self, encoded: &str) -> Self {
        self.api_keys.push(encoded.to_string());
        self
    }

    /// Accepts `Authorization: Basic` for this user and turns security on.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.basic.push(basic_credentials(name, password));
        self
    }

    /// `http.max_content_length` in bytes. By default, 100mb.
    pub fn max_content_length(mut self, bytes: usize) -> Self {
        self.max_content_length = bytes;
        self
    }

    fn security(&self) -> bool {
        !self.api_keys.is_empty() || !self.basic.is_empty()
    }
}

/// The `encoded` value the create-API-key API returns: base64 of `id:api_key`, what goes
/// after `ApiKey ` in the header.
pub fn encoded_api_key(id: &str, api_key: &str) -> String {
    base64(format!("{id}:{api_key}").as_bytes())
}

/// What goes after `Basic ` in the header: base64 of `name:password`.
pub fn basic_credentials(name: &str, password: &str) -> String {
    base64(format!("{name}:{password}").as_bytes())
}

/// How one node answers a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// None: indexes the request and answers 200.
    None,
    /// Answers this status with the error body the server sends for it, indexing nothing.
    Status(u16),
    /// Reads the request, indexes nothing, and resets the connection.
    Reset,
    /// Reads the request, indexes nothing, and never answers.
    Stall,
    /// Indexes the request and answers 200 after this delay.
    Slow(Duration),
    /// Indexes the request, then resets the connection: the client never learns it worked.
    AnswerLost,
}

/// One action of a bulk request as the cluster saw it.
#[derive(Debug, Clone)]
pub struct Item {
    /// `create`, `index`, …
    pub action: String,
    /// The data stream it targets.
    pub index: String,
    /// Its `_id`, as sent (`None`: generated, or a request not processed).
    pub id: Option<String>,
    /// The document (`None` for `delete`).
    pub source: Option<Value>,
    /// The item's status, if the request was processed (else the whole request failed).
    pub status: Option<u16>,
    /// The item's `error.type`.
    pub error: Option<String>,
}

/// One request to the `_bulk` API.
#[derive(Debug, Clone)]
pub struct BulkRequest {
    /// The port of the node it reached.
    pub node: u16,
    /// `POST`, …
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The size of its body after decompression.
    pub body_bytes: usize,
    /// The whole request's status (`None`: reset or stalled).
    pub status: Option<u16>,
    /// Its actions, in order (empty if the body could not be read).
    pub items: Vec<Item>,
}

impl BulkRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// A document the cluster holds.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its data stream.
    pub stream: String,
    /// Its `_id`.
    pub id: String,
    /// Its source.
    pub source: Value,
    /// The port of the node that indexed it.
    pub node: u16,
}

type Predicate = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// Items picked by a predicate fail with `status` for their first `attempts` arrivals.
struct Rejection {
    pick: Predicate,
    status: u16,
    attempts: usize,
    seen: HashMap<String, usize>,
}

/// What all nodes share.
struct Cluster {
    settings: Mutex<Settings>,
    /// HTTPS, if the cluster was started with a certificate.
    tls: Option<TlsAcceptor>,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    /// Data stream → `_id` → document, in indexing order per stream.
    streams: BTreeMap<String, BTreeMap<String, (u64, Document)>>,
    seq_no: u64,
    rejections: Vec<Rejection>,
    longs: Vec<String>,
    requests: Vec<BulkRequest>,
}

/// What one node owns: its faults.
#[derive(Default)]
struct Node {
    fault: Mutex<Option<Fault>>,
    script: Mutex<VecDeque<Fault>>,
}

impl Node {
    fn next_fault(&self) -> Fault {
        if let Some(f) = self.script.lock().unwrap().pop_front() {
            return f;
        }
        self.fault.lock().unwrap().clone().unwrap_or(Fault::None)
    }
}

/// One node of a cluster. Stops when dropped (the others keep running).
pub struct Elastic {
    addr: SocketAddr,
    cluster: Arc<Cluster>,
    node: Arc<Node>,
    task: JoinHandle<()>,
}

impl Elastic {
    /// The first node of a new cluster.
    pub async fn start(settings: Settings) -> Elastic {
        Self::start_cluster(settings, None).await
    }

    /// The first node of a new cluster whose nodes all speak HTTPS, presenting `cert`.
    pub async fn start_tls(settings: Settings, cert: &ServerCert) -> Elastic {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .expect("a TLS server config");
        Self::start_cluster(settings, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_cluster(settings: Settings, tls: Option<TlsAcceptor>) -> Elastic {
        let cluster = Arc::new(Cluster {
            settings: Mutex::new(settings),
            tls,
            data: Mutex::new(Data::default()),
        });
        Self::bind(cluster, 0).await
    }

    /// Another node of this cluster, on its own port, answering without faults.
    pub async fn join(&self) -> Elastic {
        Self::bind(self.cluster.clone(), 0).await
    }

    /// [`Elastic::join`] on 127.0.0.1:`port` (a node coming back where it was).
    pub async fn join_on(&self, port: u16) -> Elastic {
        Self::bind(self.cluster.clone(), port).await
    }

    async fn bind(cluster: Arc<Cluster>, port: u16) -> Elastic {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the Elasticsearch node");
        let addr = listener.local_addr().expect("the node's address");
        let node = Arc::new(Node::default());
        let task = tokio::spawn(accept_loop(listener, cluster.clone(), node.clone()));
        Elastic {
            addr,
            cluster,
            node,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`, an entry of the sink's `endpoints`.
    pub fn url(&self) -> String {
        let scheme = if self.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// This node's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How this node answers from now on (after any scripted faults).
    pub fn set_fault(&self, fault: Fault) {
        *self.node.fault.lock().unwrap() = Some(fault);
    }

    /// The next requests to this node are answered by these faults, one each.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.node.script.lock().unwrap().extend(faults);
    }

    /// From now on also accepts `Authorization: ApiKey <encoded>`, as after the key was
    /// created (turning security on if it was off).
    pub fn accept_api_key(&self, encoded: &str) {
        self.cluster
            .settings
            .lock()
            .unwrap()
            .api_keys
            .push(encoded.to_string());
    }

    /// Items whose document satisfies `pick` fail with item status `status` (429:
    /// `es_rejected_execution_exception`, 503: `unavailable_shards_exception`, 400:
    /// `mapper_parsing_exception`, 403: `security_exception`, the key lacking privileges on
    /// the index) for their first `attempts` arrivals, counted per `_id`; later arrivals are
    /// indexed.
    pub fn reject_items(
        &self,
        status: u16,
        attempts: usize,
        pick: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) {
        self.data().rejections.push(Rejection {
            pick: Arc::new(pick),
            status,
            attempts,
            seen: HashMap::new(),
        });
    }

    /// Maps `field` (a dotted path) as `long` in every stream: a document whose value there
    /// is neither a number nor a numeric string gets item 400 `mapper_parsing_exception`.
    pub fn map_long(&self, field: &str) {
        self.data().longs.push(field.to_string());
    }

    /// Every document the cluster holds, in indexing order.
    pub fn documents(&self) -> Vec<Document> {
        let data = self.data();
        let mut docs: Vec<&(u64, Document)> =
            data.streams.values().flat_map(|s| s.values()).collect();
        docs.sort_by_key(|(seq_no, _)| *seq_no);
        docs.into_iter().map(|(_, d)| d.clone()).collect()
    }

    /// The sources of the documents the cluster holds, in indexing order.
    pub fn sources(&self) -> Vec<Value> {
        self.documents().into_iter().map(|d| d.source).collect()
    }

    /// Every request any node of the cluster got, in arrival order.
    pub fn requests(&self) -> Vec<BulkRequest> {
        self.data().requests.clone()
    }

    /// The items with this `_id` that were processed, over all requests, in arrival order.
    pub fn arrivals(&self, id: &str) -> Vec<Item> {
        self.data()
            .requests
            .iter()
            .flat_map(|r| r.items.iter())
            .filter(|i| i.status.is_some() && i.id.as_deref() == Some(id))
            .cloned()
            .collect()
    }

    /// Requests by status, and documents held, for failure messages.
    pub fn summary(&self) -> String {
        let data = self.data();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &data.requests {
            let key = r.status.map_or("no answer".to_string(), |s| s.to_string());
            *counts.entry(key).or_default() += 1;
        }
        let docs: usize = data.streams.values().map(BTreeMap::len).sum();
        format!(
            "{} bulk requests by status {counts:?}, {docs} documents",
            data.requests.len()
        )
    }

    /// Waits until the cluster holds at least `n` documents; returns their sources.
    pub async fn wait_for_documents(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let sources = self.sources();
            if sources.len() >= n {
                return sources;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {n} documents; {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.cluster.data.lock().unwrap()
    }
}

impl Drop for Elastic {
    fn drop(&mut self) {
        self.task.abort();
    }
}
