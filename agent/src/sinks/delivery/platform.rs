//! The seam between the one delivery mechanism ([`super`]) and a platform: what a
//! platform module writes and reads, and nothing else.
//!
//! A platform says how one event goes into a request body ([`Platform::write_item`]) and
//! how items are joined ([`Framing`]), how large a request may be
//! ([`Platform::max_request_bytes`]), how a request is addressed and authenticated
//! ([`Platform::request`]) and what an answer means, for the whole request or item by item
//! ([`Platform::read`]). The mechanism owns everything else: batching from the WAL cursor,
//! splitting to the platform's limit before sending, retry with backoff and `Retry-After`,
//! splitting on 413, resending only the items an answer asks for, dead letters and their
//! notices, continuity headers, health and metrics, and the in-order cursor advance over a
//! contiguous delivered prefix.
//!
//! A platform that does not speak HTTP (NATS JetStream) sends a request itself:
//! [`Platform::publish`] returns the future of its answer, and the mechanism calls
//! [`Platform::request`] and [`Platform::read`] only when it returns `None` (the default).
//! Everything around the send — retry, per-item resend, dead letters, health — is the same.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use gapless_wal::Record;

use crate::sinks::encode::{write_object, SinkFields};

/// How the items of one request body are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each item followed by `\n` (NDJSON, `_bulk`, HEC's concatenated events).
    Lines,
    /// `[item,item,…]`.
    JsonArray,
}

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// An event from a source, written by the agent (a line, a syslog message, a journal
    /// entry).
    Event,
    /// An event a client sent as a JSON object (the http source): fields of the client's
    /// own naming.
    ClientEvent,
    /// A heartbeat the agent wrote (it carries `agent_id` itself).
    Heartbeat,
    /// A gap record.
    Gap,
    /// A dead-letter notice covering `first_seq..=last_seq` (its seq is `last_seq`).
    Notice {
        /// First seq the notice covers.
        first_seq: u64,
        /// Last seq it covers.
        last_seq: u64,
    },
}

/// What an item is made of.
enum Content<'a> {
    /// A WAL record.
    Record(&'a Record),
    /// An object the mechanism wrote (a dead-letter notice).
    Object(&'a [u8]),
}

/// One event (or gap record, or notice) about to be written into a request body.
pub struct Item<'a> {
    /// Its WAL sequence number (a notice: the last seq it covers).
    pub seq: u64,
    /// What it is.
    pub kind: ItemKind,
    /// The name of the source it came from (empty for gap records and notices).
    pub source: &'a str,
    content: Content<'a>,
    host: &'a str,
    fields: Option<&'a SinkFields>,
}

impl<'a> Item<'a> {
    pub(super) fn record(
        record: &'a Record,
        kind: ItemKind,
        source: &'a str,
        host: &'a str,
        fields: Option<&'a SinkFields>,
    ) -> Self {
        Item {
            seq: record.seq,
            kind,
            source,
            content: Content::Record(record),
            host,
            fields,
        }
    }

    pub(super) fn notice(
        first_seq: u64,
        last_seq: u64,
        object: &'a [u8],
        host: &'a str,
        fields: Option<&'a SinkFields>,
    ) -> Self {
        Item {
            seq: last_seq,
            kind: ItemKind::Notice {
                first_seq,
                last_seq,
            },
            source: "",
            content: Content::Object(object),
            host,
            fields,
        }
    }

    pub(super) fn stored(
        seq: u64,
        object: &'a [u8],
        host: &'a str,
        fields: Option<&'a SinkFields>,
    ) -> Self {
        Item {
            seq,
            // A dead letter's line may be a client's object.
            kind: ItemKind::ClientEvent,
            source: "",
            content: Content::Object(object),
            host,
            fields,
        }
    }

    /// Writes the item's JSON object as the `http` sink sends it — the sink's seq field
    /// first — with `head` (`"k":v` pairs joined by commas, or empty) spliced in before it.
    /// A field of the stored object named like one of the sink's fields (a record stored
    /// before the name was reserved) moves under `client_fields` first.
    pub fn write_object(&self, out: &mut Vec<u8>, head: &[u8]) {
        match self.content {
            Content::Record(r) => write_object(
                out,
                r,
                self.host,
                self.fields,
                head,
                // Only a client's object can hold a field named like the sink's: the agent
                // writes its own names (lines, heartbeats) and never one a sink writes.
                self.kind == ItemKind::ClientEvent,
            ),
            Content::Object(json) => {
                out.push(b'{');
                out.extend_from_slice(head);
                let rest = json.strip_prefix(b"{").unwrap_or(json);
                if !head.is_empty() && rest.first() != Some(&b'}') {
                    out.push(b',');
                }
                out.extend_from_slice(rest);
            }
        }
    }

    /// The event's time in nanoseconds since the Unix epoch: its `timestamp` when that is
    /// RFC 3339, else when it was appended to the WAL (a notice: now).
    pub fn time(&self) -> u64 {
        match self.content {
            Content::Record(r) if r.gap().is_some() => r.timestamp,
            Content::Record(r) => {
                let json =
                    crate::event::split_payload(&r.payload).map_or(&r.payload[..], |(_, j)| j);
                crate::event::event_time(json, r.timestamp)
            }
            Content::Object(json) => crate::event::event_time(json, crate::event::unix_nanos_now()),
        }
    }
}

/// A request about to go out, for [`Platform::request`] or [`Platform::publish`].
pub struct Outgoing<'a> {
    /// The body, compressed if the sink compresses.
    pub body: &'a Bytes,
    /// Whether the body is gzip.
    pub gzip: bool,
    /// Items in it.
    pub items: usize,
    /// The seqs of its items, in body order.
    pub seqs: &'a [u64],
    /// The first seq the request accounts for (records the sink skips included).
    pub first_seq: u64,
    /// The last seq it accounts for.
    pub last_seq: u64,
    /// This agent's id.
    pub agent_id: &'a str,
    /// Whether it is a dead letter sent again by `gapless dead-letter replay`.
    pub replay: bool,
    /// The items of the whole batch in order, and the first seq it covers: what
    /// [`Outgoing::prev_seq`] reads. A request sent the first time is its own batch in
    /// effect; a resend of some items is not.
    pub(super) batch: (&'a [u64], u64),
}

impl Outgoing<'_> {
    /// The seq before item `i` in the stream this sink sends: the item before it in its
    /// batch, or the batch's first seq - 1 for the batch's first item. Seqs strictly
    /// between it and the item's own are records the sink's `inputs` skipped, never loss.
    /// For a request sent whole this is the item before it in the request (or
    /// `first_seq - 1`); for a resend of some items it still names the item before it in
    /// the batch, so the answer is the same on every send.
    pub fn prev_seq(&self, i: usize) -> u64 {
        let seq = self.seqs.get(i).copied().unwrap_or(self.first_seq);
        let (order, first) = self.batch;
        match order.binary_search(&seq) {
            Ok(0) => first.saturating_sub(1),
            Ok(k) => order[k - 1],
            // Not in the batch's order (cannot happen): the request's own rule.
            Err(_) if i == 0 => self.first_seq.saturating_sub(1),
            Err(_) => self.seqs[i - 1],
        }
    }
}

/// What an answer, or the lack of one, means for a request as a whole.
#[derive(Debug)]
pub enum Answer {
    /// Every item is the platform's.
    Delivered,
    /// Nothing is taken; send it again after `wait` (else the backoff). `alarm`: a problem a
    /// person must fix (credentials, a missing role, a configuration), logged as an error
    /// at once and retried all the same.
    Retry {
        /// `Retry-After`, when the platform gave one.
        wait: Option<Duration>,
        /// Why, for logs and `/health/delivery` (never a secret).
        why: String,
        /// Whether to log it as an error at once.
        alarm: bool,
    },
    /// Too large for the platform: split it (an item alone goes to the dead letters, with
    /// this as the reason).
    TooLarge(Rejection),
    /// Refused for good, every item: dead letters.
    Rejected(Rejection),
    /// One answer per item, in request order.
    Items(Vec<ItemAnswer>),
}

/// The platform's word on one item.
#[derive(Debug, Clone)]
pub enum ItemAnswer {
    /// The platform has it (for Elasticsearch also: it already had it).
    Delivered,
    /// Send it again; the reason is for logs.
    Retry(String),
    /// Refused for good.
    Rejected(Rejection),
}

/// Why a platform refused something for good.
#[derive(Debug, Clone, Default)]
pub struct Rejection {
    /// The HTTP status, or the item's status.
    pub status: u16,
    /// The platform's error type or code (`mapper_parsing_exception`, `splunk code 6`).
    pub error: String,
    /// The start of what the platform said.
    pub response: String,
}

/// A request that cannot be made now (credentials not at hand): retried like a failed one.
#[derive(Debug)]
pub struct NotReady {
    /// Why (never a secret).
    pub why: String,
}

/// One platform: its encoding, limits, authentication and reading of answers.
pub trait Platform: Send + Sync + 'static {
    /// How items are joined in a body.
    fn framing(&self) -> Framing;

    /// The largest request body, compressed and uncompressed, in bytes; `None`: whatever
    /// `batch.max_bytes` makes. Items are packed into requests under it before sending; an
    /// item over it alone is refused for good without being sent.
    fn max_request_bytes(&self) -> Option<usize> {
        None
    }

    /// Writes one item (without framing) into `out`.
    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>);

    /// Sends a request by the platform's own protocol and reads the answer, for a platform
    /// that does not speak HTTP; `None` (the default): the mechanism sends it over HTTP with
    /// [`Platform::request`] and reads the answer with [`Platform::read`]. The future must
    /// answer for the request as a whole or item by item, like `read`: connection errors
    /// and timeouts are `Answer::Retry`, never a refusal.
    fn publish(&self, outgoing: &Outgoing<'_>) -> Option<impl Future<Output = Answer> + Send> {
        let _ = outgoing;
        None::<std::future::Ready<Answer>>
    }

    /// The request for a body: URL, authentication and the platform's headers. The
    /// mechanism adds the body, `Content-Encoding` and the continuity headers.
    fn request(
        &self,
        client: &reqwest::Client,
        outgoing: &Outgoing<'_>,
    ) -> impl Future<Output = Result<reqwest::RequestBuilder, NotReady>> + Send;

    /// A request to `url` got no answer (connection refused, reset, timed out): a platform
    /// with several endpoints may avoid that one for a while.
    fn unreachable(&self, url: &reqwest::Url) {
        let _ = url;
    }

    /// What the answer to a request of `items` items means.
    fn read(
        &self,
        client: &reqwest::Client,
        response: reqwest::Response,
        items: usize,
    ) -> impl Future<Output = Answer> + Send;
}
