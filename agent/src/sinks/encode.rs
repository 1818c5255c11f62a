//! Turning a batch into a request body: NDJSON or one JSON array, each event with its
//! `seq` spliced in, gap records as `{"gapless":"gap",…}` events; then gzip.
//!
//! A stored event never carries the sink's seq field when the source stored it under a
//! config reserving that name ([`crate::reserved`]). One stored earlier — by a version
//! before the rule, or before a sink with this `seq_field` was configured — might: the
//! guard in [`encode`] moves such a field under `client_fields` rather than send the key
//! twice. It costs a substring search per event (the quoted name, or a `\u` escape of one
//! of its characters); only a hit parses the event. A stored client field named `gapless` is
//! not looked for (the agent's heartbeats carry one): records a version before the rule
//! stored with it are sent as they are.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use gapless_wal::{Gap, Record};
use memchr::memmem::Finder;

use crate::client_json::ClientObject;
use crate::config::Encoding;
use crate::event::{split_payload, write_json_str, Timestamp};
use crate::reserved::ReservedFields;

/// The fields a sink writes into every event — its seq field and a platform's own
/// (`TimeGenerated`, `agent_id`, …) — and the searches of the guard against a stored field
/// of one of those names.
#[derive(Debug)]
pub struct SinkFields {
    seq: Option<String>,
    names: Vec<String>,
    quoted: Vec<Finder<'static>>,
    escape: Finder<'static>,
}

impl SinkFields {
    /// The fields of a sink with `seq` (if any) and a platform writing `added`. `None` when
    /// it writes none.
    pub fn new(seq: Option<&str>, added: &[String]) -> Option<Self> {
        // Names are plain (the config refuses quotes, backslashes, controls).
        let names: Vec<String> = seq
            .map(str::to_string)
            .into_iter()
            .chain(added.iter().cloned())
            .collect();
        if names.is_empty() {
            return None;
        }
        Some(SinkFields {
            seq: seq.map(str::to_string),
            quoted: names
                .iter()
                .map(|n| Finder::new(format!("\"{n}\"").as_bytes()).into_owned())
                .collect(),
            names,
            escape: Finder::new(b"\\u").into_owned(),
        })
    }

    /// The seq field, if the sink writes one.
    pub fn seq(&self) -> Option<&str> {
        self.seq.as_deref()
    }

    /// Whether `json` might have a key spelling one of the names: a name in quotes, or a
    /// `\u` escape of one of their characters (a control character, as in coloured log
    /// lines, cannot be one).
    fn might_hold(&self, json: &[u8]) -> bool {
        self.quoted.iter().any(|q| q.find(json).is_some())
            || self.escape.find_iter(json).any(|i| {
                let code = json
                    .get(i + 2..i + 6)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
                match code.map(char::from_u32) {
                    Some(Some(c)) => self.names.iter().any(|n| n.contains(c)),
                    // Half of a surrogate pair: it may spell a character beyond U+FFFF.
                    Some(None) => true,
                    None => false,
                }
            })
    }

    /// `json` with its top-level fields named like one of the sink's moved under
    /// `client_fields`, when it has one.
    fn without_clash(&self, json: &[u8]) -> Option<Vec<u8>> {
        if !self.might_hold(json) {
            return None;
        }
        let object = ClientObject::parse(std::str::from_utf8(json).ok()?)?;
        if !object
            .names()
            .any(|n| n.is_some_and(|n| self.names.iter().any(|m| *m == n)))
        {
            return None;
        }
        // Only a client's object can hold these names (heartbeats, the agent's own objects,
        // are written without the guard), so moving every reserved name of the rule is
        // right for it.
        let mut out = Vec::with_capacity(json.len() + 20);
        object.write_event(
            &mut out,
            &ReservedFields::new(self.names.iter().map(String::as_str)),
            &[],
        );
        Some(out)
    }
}

/// Appends the JSON of one record to `out`: `head` (`"k":v` pairs joined by commas, or
/// empty) first, then its seq under the sink's seq field (if any), then the stored object.
/// `guard`: move a stored field named like one of `fields` under `client_fields` (off for
/// the agent's own objects, heartbeats).
pub fn write_object(
    out: &mut Vec<u8>,
    r: &Record,
    host: &str,
    fields: Option<&SinkFields>,
    head: &[u8],
    guard: bool,
) {
    if let Some(gap) = r.gap() {
        let at = out.len();
        write_gap(out, r.seq, &gap, host, fields.and_then(SinkFields::seq));
        splice_head(out, at, head);
        return;
    }
    let json = split_payload(&r.payload).map_or(&r.payload[..], |(_, j)| j);
    let Some(fields) = fields else {
        let at = out.len();
        out.extend_from_slice(json);
        splice_head(out, at, head);
        return;
    };
    let moved = if guard {
        fields.without_clash(json)
    } else {
        None
    };
    let json = moved.as_deref().unwrap_or(json);
    match json.strip_prefix(b"{") {
        Some(rest) => {
            out.push(b'{');
            out.extend_from_slice(head);
            let mut first = head.is_empty();
            if let Some(seq) = fields.seq() {
                if !first {
                    out.push(b',');
                }
                write_json_str(out, seq);
                out.push(b':');
                push_u64(out, r.seq);
                first = false;
            }
            if !first && rest.first() != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(json),
    }
}

/// Inserts `head` after the `{` at `at` (with the comma it needs): for the objects not
/// written with their head in place (gap records, sinks without fields).
fn splice_head(out: &mut Vec<u8>, at: usize, head: &[u8]) {
    if head.is_empty() || out.get(at) != Some(&b'{') {
        return;
    }
    let mut insert = head.to_vec();
    if out.get(at + 1) != Some(&b'}') {
        insert.push(b',');
    }
    out.splice(at + 1..at + 1, insert);
}

/// Appends `n` in decimal, without an allocation (one per event before).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn ts(nanos: u64) -> String {
    Timestamp::from_unix_nanos(nanos).as_str().to_string()
}

/// A gap record as the platform receives it.
pub fn write_gap(out: &mut Vec<u8>, seq: u64, gap: &Gap, host: &str, seq_field: Option<&str>) {
    out.push(b'{');
    if let Some(field) = seq_field {
        write_json_str(out, field);
        out.push(b':');
        push_u64(out, seq);
        out.push(b',');
    }
    out.extend_from_slice(b"\"gapless\":\"gap\",\"reason\":");
    write_json_str(out, gap.reason.as_str());
    if let Some((a, b)) = gap.seqs {
        out.extend_from_slice(format!(",\"first_seq\":{a},\"last_seq\":{b}").as_bytes());
    }
    out.extend_from_slice(
        format!(",\"events\":{},\"bytes\":{}", gap.records, gap.bytes).as_bytes(),
    );
    if gap.from > 0 {
        out.extend_from_slice(b",\"from\":");
        write_json_str(out, &ts(gap.from));
    }
    if gap.to > 0 {
        out.extend_from_slice(b",\"to\":");
        write_json_str(out, &ts(gap.to));
    }
    out.extend_from_slice(b",\"host\":");
    write_json_str(out, host);
    out.extend_from_slice(b",\"timestamp\":");
    write_json_str(out, Timestamp::now().as_str());
    out.push(b'}');
}

/// The uncompressed body of `records`.
pub fn encode(
    records: &[Record],
    encoding: Encoding,
    host: &str,
    seq_field: Option<&str>,
) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.payload.len() + 24).sum();
    let mut out = Vec::with_capacity(size + 2);
    let fields = SinkFields::new(seq_field, &[]);
    let fields = fields.as_ref();
    match encoding {
        Encoding::Ndjson => {
            for r in records {
                write_object(&mut out, r, host, fields, b"", true);
                out.push(b'\n');
            }
        }
        Encoding::Json => {
            out.push(b'[');
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_object(&mut out, r, host, fields, b"", true);
            }
            out.push(b']');
        }
    }
    out
}

/// Gzips `body` at the fast level: logs compress well even so, and the agent has a
/// throughput target on two cores.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 16 + 1024),
        Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 3, u64::MAX] {
            let mut out = b"x".to_vec();
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
    use bytes::Bytes;
    use gapless_wal::{GapReason, RecordKind};

    fn rec(seq: u64, json: &str) -> Record {
        let mut p = vec![3u8];
        p.extend_from_slice(b"app");
        p.extend_from_slice(json.as_bytes());
        Record {
            seq,
            timestamp: 0,
            kind: RecordKind::Event,
            payload: Bytes::from(p),
        }
    }

    #[test]
    fn ndjson_puts_seq_first_in_every_event() {
        let two = [rec(7, r#"{"message":"a"}"#), rec(8, "{}")];
        let body = encode(&two, Encoding::Ndjson, "h", Some("seq"));
        assert_eq!(
            String::from_utf8_lossy(&body),
            "{\"seq\":7,\"message\":\"a\"}\n{\"seq\":8}\n"
        );
        let body = encode(&two[..1], Encoding::Ndjson, "h", Some("_n"));
        assert_eq!(
            String::from_utf8_lossy(&body),
            "{\"_n\":7,\"message\":\"a\"}\n"
        );
        let body = encode(&two[..1], Encoding::Ndjson, "h", None);
        assert_eq!(String::from_utf8_lossy(&body), "{\"message\":\"a\"}\n");
    }

    #[test]
    fn a_stored_field_named_like_the_seq_field_moves_under_client_fields() {
        let stored = [
            rec(7, r#"{"message":"a","n":5}"#),
            rec(8, r#"{"message":"b","\u006e":6,"client_fields":{"seq":1}}"#),
            rec(9, r#"{"message":"c \u001b[1m","o":{"n":1}}"#),
        ];
        let body = encode(&stored, Encoding::Ndjson, "h", Some("n"));
        assert_eq!(
            String::from_utf8_lossy(&body),
            concat!(
                r#"{"n":7,"message":"a","client_fields":{"n":5}}"#,
                "\n",
                r#"{"n":8,"message":"b","client_fields":{"\u006e":6,"client_fields":{"seq":1}}}"#,
                "\n",
                r#"{"n":9,"message":"c \u001b[1m","o":{"n":1}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn the_guard_looks_closer_only_where_a_key_might_spell_the_seq_field() {
        let f = SinkFields::new(Some("seq"), &[]).unwrap();
        assert!(!f.might_hold(br#"{"message":"say \"seq\" \u001b[0m C:\\user"}"#));
        assert!(f.might_hold(br#"{"o":{"seq":1}}"#));
        assert!(f.might_hold(br#"{"\u0073eq":1}"#));
        assert!(f.might_hold(br#"{"\ud83d\ude00":1}"#));
    }

    #[test]
    fn gap_records_become_gap_events() {
        let gap = Gap {
            reason: GapReason::Corrupt,
            seqs: Some((3, 5)),
            records: 3,
            bytes: 99,
            from: 0,
            to: 0,
        };
        let r = Record {
            seq: 5,
            timestamp: 0,
            kind: RecordKind::Gap,
            payload: Bytes::from(gap.encode()),
        };
        let body = encode(&[r], Encoding::Json, "h", Some("seq"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v[0]["gapless"], "gap");
        assert_eq!(v[0]["reason"], "wal_corrupt");
        assert_eq!(v[0]["first_seq"], 3);
        assert_eq!(v[0]["last_seq"], 5);
    }
}
