//! From records to requests: each record becomes an [`Item`] the platform writes, items
//! are framed into one body, and when the platform limits a request's size the items are
//! packed into as many requests as needed — checked uncompressed and compressed — before
//! anything is sent. An item too large for any request is set aside for the dead letters.
//!
//! The common case (the batch fits) writes the body in one pass, framing included; only an
//! oversized batch is framed again from the items' spans.

use std::collections::HashSet;
use std::sync::Arc;

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use gapless_wal::Record;

use super::platform::{Framing, Item, ItemKind, Platform};
use crate::event::split_payload;
use crate::sinks::batch::Batch;
use crate::sinks::encode::{gzip, SinkFields};

/// One request ready to send: its body and which items it carries. Records are dropped once
/// encoded (they stay in the WAL and are read again when a request must be split, resent in
/// part or dead-lettered), so requests in flight cost their compressed size.
pub(super) struct Request {
    /// The first seq the request covers (records the sink skips included).
    pub first_seq: u64,
    /// The last seq it covers.
    pub last_seq: u64,
    /// The seqs of its items, in body order.
    pub seqs: Vec<u64>,
    /// Its gap records: (seq, reason), for the metrics once delivered.
    pub gaps: Vec<(u64, &'static str)>,
    /// The body, compressed if the sink compresses.
    pub body: Bytes,
    /// `Idempotency-Key`: one per distinct body.
    pub key: String,
}

/// A batch turned into requests.
pub(super) struct Prepared {
    /// The first seq the batch covers.
    pub first_seq: u64,
    /// The last seq it covers.
    pub last_seq: u64,
    /// Its requests, in order.
    pub requests: Vec<Request>,
    /// The seqs of every item, in order (requests' and oversized ones).
    pub order: Vec<u64>,
    /// Items too large for any request: (seq, bytes).
    pub oversized: Vec<(u64, usize)>,
}

/// What a request's key says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// Every item of its range.
    Range,
    /// Some items of its range, resent.
    Items,
    /// Dead-letter notices about its range.
    Notice,
    /// A dead letter sent again by `gapless dead-letter replay`.
    Replay,
}

/// Writes records as a platform wants them.
pub(super) struct Encoder<P> {
    pub platform: Arc<P>,
    pub host: String,
    pub fields: Option<SinkFields>,
    /// Sources whose records are the agent's own (heartbeats).
    pub agent_sources: HashSet<String>,
    /// Sources whose records are clients' JSON objects.
    pub client_sources: HashSet<String>,
    /// Sources whose records the agent wrote whole (lines).
    pub line_sources: HashSet<String>,
    pub gzip: bool,
    /// `<agent id>-<sink>`, the start of every idempotency key.
    pub key_prefix: String,
}

/// The kind of the source last classified, for the next record of the same source.
#[derive(Default)]
struct KindCache {
    last: Option<(String, ItemKind)>,
}

/// The items written so far: bytes, the span of each, and what each is.
struct Written {
    raw: Vec<u8>,
    spans: Vec<(usize, usize)>,
    seqs: Vec<u64>,
    gaps: Vec<(u64, &'static str)>,
}

impl<P: Platform> Encoder<P> {
    /// The requests of `batch`, every record of which is an item.
    pub fn prepare(&self, batch: &Batch, key: KeyKind) -> Prepared {
        if self.gzip && self.platform.max_request_bytes().is_none() {
            return self.prepare_streamed(batch, key);
        }
        let mut w = self.start(batch.records.len(), batch.bytes);
        let mut kinds = KindCache::default();
        for r in &batch.records {
            let (source, kind) = self.classify(r, &mut kinds);
            let item = Item::record(r, kind, source, &self.host, self.fields.as_ref());
            self.push(&mut w, &item, r.gap().map(|g| g.reason.as_str()));
        }
        self.pack(w, batch.first_seq, batch.last_seq, key)
    }

    /// One gzip request for the whole batch, compressed as it is written, 64 KiB at a time:
    /// for a platform without a size limit, whose batch is never packed into several
    /// requests, the uncompressed body is never whole in memory.
    fn prepare_streamed(&self, batch: &Batch, key: KeyKind) -> Prepared {
        const CHUNK: usize = 64 << 10;
        let framing = self.platform.framing();
        let mut gz = GzEncoder::new(
            Vec::with_capacity(batch.bytes / 16 + 1024),
            Compression::fast(),
        );
        let mut chunk = Vec::with_capacity(CHUNK + 4096);
        let mut seqs = Vec::with_capacity(batch.records.len());
        let mut gaps = Vec::new();
        if framing == Framing::JsonArray {
            chunk.push(b'[');
        }
        let mut kinds = KindCache::default();
        for (i, r) in batch.records.iter().enumerate() {
            if framing == Framing::JsonArray && i > 0 {
                chunk.push(b',');
            }
            let (source, kind) = self.classify(r, &mut kinds);
            let item = Item::record(r, kind, source, &self.host, self.fields.as_ref());
            self.platform.write_item(&item, &mut chunk);
            if framing == Framing::Lines {
                chunk.push(b'\n');
            }
            seqs.push(r.seq);
            if let Some(g) = r.gap() {
                gaps.push((r.seq, g.reason.as_str()));
            }
            if chunk.len() >= CHUNK {
                // Writing into a Vec cannot fail.
                let _ = gz.write_all(&chunk);
                chunk.clear();
            }
        }
        if framing == Framing::JsonArray {
            chunk.push(b']');
        }
        let _ = gz.write_all(&chunk);
        let body = Bytes::from(gz.finish().unwrap_or_default());
        let key = self.key(batch.first_seq, batch.last_seq, &seqs, key);
        Prepared {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            order: seqs.clone(),
            requests: vec![Request {
                first_seq: batch.first_seq,
                last_seq: batch.last_seq,
                seqs,
                gaps,
                body,
                key,
            }],
            oversized: Vec::new(),
        }
    }

    /// The request(s) of dead-letter notices: (first seq, last seq, the notice's JSON).
    pub fn prepare_notices(&self, notices: &[(u64, u64, Vec<u8>)]) -> Prepared {
        let mut w = self.start(notices.len(), notices.iter().map(|n| n.2.len()).sum());
        for (first, last, json) in notices {
            let item = Item::notice(*first, *last, json, &self.host, self.fields.as_ref());
            self.push(&mut w, &item, Some("dead_letter"));
        }
        let first = notices.first().map_or(0, |n| n.0);
        let last = notices.last().map_or(0, |n| n.1);
        self.pack(w, first, last, KeyKind::Notice)
    }

    /// The requests of stored objects (a dead letter's lines): (seq, JSON object).
    pub fn prepare_stored(&self, objects: &[(u64, &[u8])], first: u64, last: u64) -> Prepared {
        let mut w = self.start(objects.len(), objects.iter().map(|o| o.1.len()).sum());
        for (seq, json) in objects {
            let item = Item::stored(*seq, json, &self.host, self.fields.as_ref());
            self.push(&mut w, &item, None);
        }
        self.pack(w, first, last, KeyKind::Replay)
    }

    fn classify<'r>(&self, r: &'r Record, kinds: &mut KindCache) -> (&'r str, ItemKind) {
        if r.gap().is_some() {
            return ("", ItemKind::Gap);
        }
        let source = split_payload(&r.payload)
            .and_then(|(name, _)| std::str::from_utf8(name).ok())
            .unwrap_or("");
        // A batch is mostly runs of one source: look its kind up once per run.
        if let Some((name, kind)) = &kinds.last {
            if name == source {
                return (source, *kind);
            }
        }
        let kind = if self.agent_sources.contains(source) {
            ItemKind::Heartbeat
        } else if self.line_sources.contains(source) && !self.client_sources.contains(source) {
            ItemKind::Event
        } else {
            ItemKind::ClientEvent
        };
        kinds.last = Some((source.to_string(), kind));
        (source, kind)
    }

    fn start(&self, items: usize, bytes: usize) -> Written {
        let mut raw = Vec::with_capacity(bytes + items * 40 + 2);
        if self.platform.framing() == Framing::JsonArray {
            raw.push(b'[');
        }
        Written {
            raw,
            spans: Vec::with_capacity(items),
            seqs: Vec::with_capacity(items),
            gaps: Vec::new(),
        }
    }

    fn push(&self, w: &mut Written, item: &Item<'_>, gap: Option<&'static str>) {
        let framing = self.platform.framing();
        if framing == Framing::JsonArray && !w.spans.is_empty() {
            w.raw.push(b',');
        }
        let start = w.raw.len();
        self.platform.write_item(item, &mut w.raw);
        w.spans.push((start, w.raw.len()));
        if framing == Framing::Lines {
            w.raw.push(b'\n');
        }
        w.seqs.push(item.seq);
        if let Some(reason) = gap {
            w.gaps.push((item.seq, reason));
        }
    }

    /// Packs the written items into requests under the platform's limit.
    fn pack(&self, mut w: Written, first_seq: u64, last_seq: u64, key: KeyKind) -> Prepared {
        let framing = self.platform.framing();
        if framing == Framing::JsonArray {
            w.raw.push(b']');
        }
        let limit = self.platform.max_request_bytes();
        let order = w.seqs.clone();
        let all: Vec<usize> = (0..w.spans.len()).collect();
        let mut groups: Vec<(Vec<usize>, Bytes)> = Vec::new();
        let mut oversized = Vec::new();
        let fits = |len: usize| limit.is_none_or(|l| len <= l);
        if fits(w.raw.len()) && !self.gzip {
            groups.push((all, Bytes::from(std::mem::take(&mut w.raw))));
        } else if fits(w.raw.len()) {
            let body = Bytes::from(gzip(&w.raw));
            if fits(body.len()) {
                groups.push((all, body));
            } else {
                self.split_compressed(&w, all, &mut groups, &mut oversized);
            }
        } else {
            let limit = limit.unwrap_or(usize::MAX);
            // Greedy by uncompressed size, each group then checked compressed.
            let mut group = Vec::new();
            let mut size = 2;
            for i in all {
                let len = w.spans[i].1 - w.spans[i].0 + 1;
                if len + 2 > limit {
                    oversized.push((w.seqs[i], len));
                    continue;
                }
                if size + len > limit && !group.is_empty() {
                    self.finish_group(&w, std::mem::take(&mut group), &mut groups, &mut oversized);
                    size = 2;
                }
                group.push(i);
                size += len;
            }
            if !group.is_empty() {
                self.finish_group(&w, group, &mut groups, &mut oversized);
            }
        }
        let n = groups.len();
        let mut requests = Vec::with_capacity(n);
        let mut next_first = first_seq;
        for (g, (items, body)) in groups.into_iter().enumerate() {
            let seqs: Vec<u64> = items.iter().map(|&i| w.seqs[i]).collect();
            let last = if g + 1 == n {
                last_seq
            } else {
                seqs.last().copied().unwrap_or(next_first)
            };
            let first = next_first;
            next_first = last.saturating_add(1);
            let gaps = w
                .gaps
                .iter()
                .filter(|(s, _)| seqs.binary_search(s).is_ok())
                .copied()
                .collect();
            requests.push(Request {
                first_seq: first,
                last_seq: last,
                key: self.key(first, last, &seqs, key),
                seqs,
                gaps,
                body,
            });
        }
        Prepared {
            first_seq,
            last_seq,
            requests,
            order,
            oversized,
        }
    }

    fn key(&self, first: u64, last: u64, seqs: &[u64], kind: KeyKind) -> String {
        let prefix = &self.key_prefix;
        match kind {
            KeyKind::Range => format!("{prefix}-{first}-{last}"),
            KeyKind::Notice => format!("{prefix}-{first}-{last}-dead-letter"),
            KeyKind::Replay => format!("{prefix}-{first}-{last}-replay"),
            KeyKind::Items => {
                // FNV-1a over the seqs: a resend of other items of the range is another body.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for s in seqs {
                    for b in s.to_le_bytes() {
                        h ^= u64::from(b);
                        h = h.wrapping_mul(0x0100_0000_01b3);
                    }
                }
                format!("{prefix}-{first}-{last}-items-{}-{h:016x}", seqs.len())
            }
        }
    }

    fn compress(&self, raw: Vec<u8>) -> Bytes {
        if self.gzip {
            Bytes::from(gzip(&raw))
        } else {
            Bytes::from(raw)
        }
    }

    /// The body of some items, framed.
    fn frame(&self, w: &Written, items: &[usize]) -> Vec<u8> {
        let size: usize = items.iter().map(|&i| w.spans[i].1 - w.spans[i].0 + 1).sum();
        let mut out = Vec::with_capacity(size + 2);
        let framing = self.platform.framing();
        if framing == Framing::JsonArray {
            out.push(b'[');
        }
        for (n, &i) in items.iter().enumerate() {
            if framing == Framing::JsonArray && n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&w.raw[w.spans[i].0..w.spans[i].1]);
            if framing == Framing::Lines {
                out.push(b'\n');
            }
        }
        if framing == Framing::JsonArray {
            out.push(b']');
        }
        out
    }

    /// Frames and compresses a group that fits uncompressed; halves it while it does not
    /// fit compressed.
    fn finish_group(
        &self,
        w: &Written,
        items: Vec<usize>,
        groups: &mut Vec<(Vec<usize>, Bytes)>,
        oversized: &mut Vec<(u64, usize)>,
    ) {
        let body = self.compress(self.frame(w, &items));
        if self
            .platform
            .max_request_bytes()
            .is_none_or(|l| body.len() <= l)
        {
            groups.push((items, body));
        } else {
            self.split_compressed(w, items, groups, oversized);
        }
    }

    fn split_compressed(
        &self,
        w: &Written,
        mut items: Vec<usize>,
        groups: &mut Vec<(Vec<usize>, Bytes)>,
        oversized: &mut Vec<(u64, usize)>,
    ) {
        if items.len() <= 1 {
            for i in items {
                oversized.push((w.seqs[i], w.spans[i].1 - w.spans[i].0));
            }
            return;
        }
        let right = items.split_off(items.len() / 2);
        self.finish_group(w, items, groups, oversized);
        self.finish_group(w, right, groups, oversized);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::delivery::{Answer, NotReady, Outgoing};
    use gapless_wal::RecordKind;

    /// A platform with a JSON-array body and a small limit.
    struct Small(usize);

    impl Platform for Small {
        fn framing(&self) -> Framing {
            Framing::JsonArray
        }
        fn max_request_bytes(&self) -> Option<usize> {
            Some(self.0)
        }
        fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
            item.write_object(out, b"\"T\":1");
        }
        async fn request(
            &self,
            client: &reqwest::Client,
            _: &Outgoing<'_>,
        ) -> Result<reqwest::RequestBuilder, NotReady> {
            Ok(client.post("http://127.0.0.1:9/"))
        }
        async fn read(&self, _: &reqwest::Client, _: reqwest::Response, _: usize) -> Answer {
            Answer::Delivered
        }
    }

    fn record(seq: u64, message: &str) -> Record {
        let mut p = vec![3u8];
        p.extend_from_slice(b"app");
        p.extend_from_slice(format!("{{\"message\":\"{message}\"}}").as_bytes());
        Record {
            seq,
            timestamp: 0,
            kind: RecordKind::Event,
            payload: Bytes::from(p),
        }
    }

    fn encoder(limit: usize, gzip: bool) -> Encoder<Small> {
        Encoder {
            platform: Arc::new(Small(limit)),
            host: "h".into(),
            fields: SinkFields::new(Some("seq"), &[]),
            agent_sources: HashSet::new(),
            client_sources: HashSet::new(),
            line_sources: HashSet::new(),
            gzip,
            key_prefix: "a-s".into(),
        }
    }

    fn batch(first: u64, last: u64, records: Vec<Record>) -> Batch {
        Batch {
            first_seq: first,
            last_seq: last,
            bytes: records.iter().map(|r| r.payload.len()).sum(),
            records,
        }
    }

    #[test]
    fn a_batch_that_fits_is_one_request_with_the_platforms_fields_and_the_seq() {
        let p = encoder(1 << 20, false).prepare(
            &batch(5, 9, vec![record(6, "a"), record(8, "b")]),
            KeyKind::Range,
        );
        assert_eq!(p.requests.len(), 1);
        let r = &p.requests[0];
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            r#"[{"T":1,"seq":6,"message":"a"},{"T":1,"seq":8,"message":"b"}]"#
        );
        assert_eq!(
            (r.first_seq, r.last_seq, r.seqs.clone()),
            (5, 9, vec![6, 8])
        );
        assert_eq!(r.key, "a-s-5-9");
    }

    #[test]
    fn requests_stay_under_the_limit_and_their_ranges_tile_the_batch() {
        let records: Vec<Record> = (1..=50).map(|s| record(s * 2, &"x".repeat(40))).collect();
        for gzip in [false, true] {
            let p = encoder(300, gzip).prepare(&batch(1, 101, records.clone()), KeyKind::Range);
            assert!(p.requests.len() > 1, "split");
            assert!(p.oversized.is_empty());
            let mut next = 1;
            let mut seqs: Vec<u64> = Vec::new();
            for r in &p.requests {
                assert!(r.body.len() <= 300, "{} bytes", r.body.len());
                assert_eq!(r.first_seq, next);
                next = r.last_seq + 1;
                seqs.extend(&r.seqs);
                if !gzip {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    assert_eq!(v.as_array().map(Vec::len), Some(r.seqs.len()));
                }
            }
            assert_eq!(next, 102);
            assert_eq!(seqs, (1..=50u64).map(|s| s * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_item_larger_than_any_request_is_set_aside_not_sent() {
        let records = vec![record(1, "a"), record(2, &"y".repeat(500)), record(3, "c")];
        let p = encoder(200, false).prepare(&batch(1, 3, records), KeyKind::Range);
        assert_eq!(p.oversized.len(), 1);
        assert_eq!(p.oversized[0].0, 2);
        let sent: Vec<u64> = p.requests.iter().flat_map(|r| r.seqs.clone()).collect();
        assert_eq!(sent, vec![1, 3]);
        assert_eq!(p.order, vec![1, 2, 3]);
    }

    #[test]
    fn a_resend_of_some_items_has_a_key_of_its_own() {
        let e = encoder(1 << 20, false);
        let all = e.prepare(
            &batch(1, 3, vec![record(1, "a"), record(3, "c")]),
            KeyKind::Range,
        );
        let some = e.prepare(&batch(1, 3, vec![record(1, "a")]), KeyKind::Items);
        let other = e.prepare(&batch(1, 3, vec![record(3, "c")]), KeyKind::Items);
        let keys = [&all, &some, &other].map(|p| p.requests[0].key.clone());
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
    }
}
