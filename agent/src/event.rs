//! Events: how one becomes a WAL record and how it goes on the wire.
//!
//! A WAL payload is `[name_len: u8][source name][JSON object]`. The JSON object is the
//! event as the platform will receive it minus its `seq`, which the sink adds when it
//! encodes (the WAL assigns seqs). Keeping the source name in front lets a sink apply its
//! `inputs` filter without parsing JSON.
//!
//! Every event has `message`, `timestamp` (RFC 3339, ingest time unless the source gave
//! one), `host` and `source`; file events add `file`. Bytes that are not UTF-8 are replaced
//! visibly (U+FFFD) and the event gets `"invalid_utf8": true`; the line is never dropped.
//!
//! A client's JSON object is stored as the client sent it (see [`crate::client_json`]),
//! except that its fields with reserved names move under `client_fields`
//! ([`crate::reserved`]): [`EventEncoder::push_client_object`] is the one way in for every
//! source. Only the agent's own records (heartbeats) use
//! [`EventEncoder::push_agent_object`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use gapless_wal::AppendBatch;

use crate::client_json::ClientObject;
use crate::reserved::ReservedFields;

/// Writes events of one source into WAL batches.
#[derive(Debug, Clone)]
pub struct EventEncoder {
    source: String,
    host: String,
    /// `source` and `host` as JSON strings, escaped once here rather than per event.
    source_json: Vec<u8>,
    host_json: Vec<u8>,
    prefix: Vec<u8>,
    reserved: Arc<ReservedFields>,
}

impl EventEncoder {
    /// An encoder for the source `source` on host `host`.
    ///
    /// By default, the reserved names are those of a config whose sinks keep the default
    /// `seq_field`: `seq`, `gapless`, `client_fields`.
    pub fn new(source: &str, host: &str) -> Self {
        let name = &source.as_bytes()[..source.len().min(255)];
        let mut prefix = Vec::with_capacity(1 + name.len());
        prefix.push(name.len() as u8);
        prefix.extend_from_slice(name);
        let (mut source_json, mut host_json) = (Vec::new(), Vec::new());
        write_json_str(&mut source_json, source);
        write_json_str(&mut host_json, host);
        EventEncoder {
            source: source.to_string(),
            host: host.to_string(),
            source_json,
            host_json,
            prefix,
            reserved: Arc::default(),
        }
    }

    /// Moves a client's fields named in `reserved` under `client_fields`.
    pub fn with_reserved(mut self, reserved: Arc<ReservedFields>) -> Self {
        self.reserved = reserved;
        self
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Appends an event for one line (without its newline) to `batch`. `fields` are extra
    /// string fields (`file`, …); `flags` extra `true` booleans (`truncated`, …). Their
    /// names are the agent's, from [`crate::reserved::AGENT_FIELDS`].
    pub fn push_line(
        &self,
        batch: &mut AppendBatch,
        line: &[u8],
        timestamp: &Timestamp,
        fields: &[(&str, &str)],
        flags: &[&str],
    ) {
        self.write_line(batch, line, timestamp, None, fields, None, flags);
    }

    /// [`EventEncoder::push_line`] with one more field, `object.0`, whose value `object.1`
    /// is a JSON value the agent serialised itself (the syslog source's `syslog`). Its
    /// name is the agent's, from [`crate::reserved::AGENT_FIELDS`]; never pass a client's
    /// JSON here.
    pub fn push_line_with_object(
        &self,
        batch: &mut AppendBatch,
        line: &[u8],
        timestamp: &Timestamp,
        object: (&str, &[u8]),
        flags: &[&str],
    ) {
        self.write_line(
            batch,
            line,
            timestamp,
            None,
            &[],
            Some((object.0, Nested::Json(object.1))),
            flags,
        );
    }

    /// The one writer of line events: `message`, `timestamp`, `host` (`host`, else the
    /// agent's), `source`, then `fields`, the nested `object`, `flags` and
    /// `invalid_utf8`.
    #[allow(clippy::too_many_arguments)]
    fn write_line(
        &self,
        batch: &mut AppendBatch,
        line: &[u8],
        timestamp: &Timestamp,
        host: Option<&str>,
        fields: &[(&str, &str)],
        object: Option<(&str, Nested<'_>)>,
        flags: &[&str],
    ) {
        batch.push_with(|buf| {
            buf.extend_from_slice(&self.prefix);
            buf.extend_from_slice(b"{\"message\":");
            let valid = write_json_bytes(buf, line);
            buf.extend_from_slice(b",\"timestamp\":\"");
            buf.extend_from_slice(timestamp.as_bytes());
            buf.extend_from_slice(b"\",\"host\":");
            match host {
                Some(host) => write_json_str(buf, host),
                None => buf.extend_from_slice(&self.host_json),
            }
            buf.extend_from_slice(b",\"source\":");
            buf.extend_from_slice(&self.source_json);
            for (k, v) in fields {
                buf.push(b',');
                write_json_str(buf, k);
                buf.push(b':');
                write_json_str(buf, v);
            }
            if let Some((k, nested)) = object {
                buf.push(b',');
                write_json_str(buf, k);
                buf.push(b':');
                match nested {
                    Nested::Json(json) => buf.extend_from_slice(json),
                    // Serialising a map of JSON values into a Vec cannot fail.
                    Nested::Map(map) => {
                        let _ = serde_json::to_writer(&mut *buf, map);
                    }
                }
            }
            for f in flags {
                buf.push(b',');
                write_json_str(buf, f);
                buf.extend_from_slice(b":true");
            }
            if !valid {
                buf.extend_from_slice(b",\"invalid_utf8\":true");
            }
            buf.push(b'}');
        });
    }

    /// Appends an event for one message with a host of its own (`None`: the agent's) and
    /// one nested object `key` written as given (`"journal":{…}`). `key` is the agent's
    /// name, from [`crate::reserved::AGENT_FIELDS`]; nothing in `object` reaches the top level.
    pub fn push_nested(
        &self,
        batch: &mut AppendBatch,
        message: &[u8],
        timestamp: &Timestamp,
        host: Option<&str>,
        key: &str,
        object: &serde_json::Map<String, serde_json::Value>,
    ) {
        self.write_line(
            batch,
            message,
            timestamp,
            host,
            &[],
            Some((key, Nested::Map(object))),
            &[],
        );
    }

    /// Appends a JSON object received from a client: its fields as sent, those with a
    /// reserved name moved under `client_fields`, then `timestamp`, `host` and `source`
    /// where it lacks them.
    pub fn push_client_object(
        &self,
        batch: &mut AppendBatch,
        object: &ClientObject<'_>,
        timestamp: &Timestamp,
    ) {
        batch.push_with(|buf| {
            buf.extend_from_slice(&self.prefix);
            object.write_event(
                buf,
                &self.reserved,
                &[
                    ("timestamp", timestamp.as_str()),
                    ("host", &self.host),
                    ("source", &self.source),
                ],
            );
        });
    }

    /// Appends a record the agent itself wrote (a heartbeat), adding `timestamp`, `host`
    /// and `source` where it lacks them. Its names are written as given, reserved or not:
    /// never pass a client's object here.
    pub fn push_agent_object(
        &self,
        batch: &mut AppendBatch,
        mut object: serde_json::Map<String, serde_json::Value>,
        timestamp: &Timestamp,
    ) {
        object
            .entry("timestamp")
            .or_insert_with(|| timestamp.as_str().into());
        object
            .entry("host")
            .or_insert_with(|| self.host.clone().into());
        object
            .entry("source")
            .or_insert_with(|| self.source.clone().into());
        batch.push_with(|buf| {
            buf.extend_from_slice(&self.prefix);
            // Serialising a map of JSON values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &object);
        });
    }
}

/// The value of the one nested object field of a line event.
enum Nested<'a> {
    /// JSON the agent serialised itself.
    Json(&'a [u8]),
    /// A map the agent built, serialised as it is written.
    Map(&'a serde_json::Map<String, serde_json::Value>),
}

/// A WAL payload split into its source name and JSON object.
pub fn split_payload(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = *payload.first()? as usize;
    let name = payload.get(1..1 + n)?;
    let json = payload.get(1 + n..)?;
    Some((name, json))
}

/// Writes `s` as a JSON string.
pub fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    write_json_bytes(buf, s.as_bytes());
}

/// Writes `bytes` as a JSON string, replacing invalid UTF-8 with U+FFFD. Returns whether
/// the bytes were valid UTF-8. Text that is all ASCII (most log lines) is escaped and known
/// valid in one pass; only text with other bytes is checked as UTF-8 as well.
pub fn write_json_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> bool {
    buf.push(b'"');
    let start = buf.len();
    let non_ascii = escape_into(buf, bytes);
    let valid = !non_ascii || std::str::from_utf8(bytes).is_ok();
    if !valid {
        buf.truncate(start);
        escape_into(buf, String::from_utf8_lossy(bytes).as_bytes());
    }
    buf.push(b'"');
    valid
}

/// Bytes of escaped output gathered on the stack before they are appended to the buffer.
const ESCAPE_BLOCK: usize = 512;
/// Room after [`ESCAPE_BLOCK`]: one word of eight bytes escaped as `\u00XX` each, plus the
/// word stored whole after the last escape.
const ESCAPE_SLACK: usize = 64;
/// Texts up to this long are first checked for bytes to escape and, without any, copied.
const SHORT_TEXT: usize = 64;

/// Escapes `s` into `buf`; returns whether `s` has a byte outside ASCII (then the caller
/// checks it is UTF-8).
///
/// Eight bytes at a time (SWAR): each word is stored whole into a block on the stack; for
/// each byte the exact mask flags, the bytes before it stay, the escape is written and the
/// rest of the word is stored again, shifted, behind it (`"` and `\\` take two stores, no
/// table). The block goes to `buf` in one copy once it holds [`ESCAPE_BLOCK`] bytes — no
/// call per run between quotes (JSON lines have one every few bytes).
fn escape_into(buf: &mut Vec<u8>, s: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if s.len() <= SHORT_TEXT && s.iter().all(|&b| b < 0x80 && !needs_escape(b)) {
        // Host names, source names, paths: nothing to escape, no block to set up.
        buf.extend_from_slice(s);
        return false;
    }
    let mut out = [0u8; ESCAPE_BLOCK + ESCAPE_SLACK];
    let mut o = 0usize;
    let mut high = 0u64;
    let mut words = s.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        high |= x & HIGH;
        let mut mask = escape_mask(x);
        out[o..o + 8].copy_from_slice(&word);
        // Bytes of this word already placed at `out[..o]` or escaped.
        let mut pos = 0;
        while mask != 0 {
            let k = (mask.trailing_zeros() / 8) as usize;
            let b = word[k];
            o += k - pos;
            if b >= 0x20 {
                // `"` or `\\`
                out[o..o + 2].copy_from_slice(&[b'\\', b]);
                o += 2;
            } else {
                o = put_escape(&mut out, o, b);
            }
            pos = k + 1;
            if pos < 8 {
                out[o..o + 8].copy_from_slice(&(x >> (8 * pos)).to_le_bytes());
            }
            mask &= mask - 1;
        }
        o += 8 - pos;
        if o >= ESCAPE_BLOCK {
            buf.extend_from_slice(&out[..o]);
            o = 0;
        }
    }
    let mut tail_high = false;
    for &b in words.remainder() {
        tail_high |= b >= 0x80;
        if needs_escape(b) {
            o = put_escape(&mut out, o, b);
        } else {
            out[o] = b;
            o += 1;
        }
    }
    buf.extend_from_slice(&out[..o]);
    high != 0 || tail_high
}

#[inline(always)]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Writes the JSON escape of `b` (a byte [`needs_escape`] flags) at `out[o..]`; returns the
/// offset after it.
#[inline(always)]
fn put_escape(out: &mut [u8; ESCAPE_BLOCK + ESCAPE_SLACK], o: usize, b: u8) -> usize {
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => 0,
    };
    if short != 0 {
        out[o..o + 2].copy_from_slice(&[b'\\', short]);
        return o + 2;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out[o..o + 6].copy_from_slice(&[
        b'\\',
        b'u',
        b'0',
        b'0',
        HEX[(b >> 4) as usize],
        HEX[(b & 15) as usize],
    ]);
    o + 6
}

/// The high bit of each of the eight bytes that is a control character, `"` or `\\`
/// (SWAR, exact: adding to the low seven bits of a byte never carries into the next).
#[inline(always)]
fn escape_mask(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // A byte is zero iff its high bit is clear and its low seven bits plus 0x7f stay below 0x80.
    let is_zero = |v: u64| !((v & LOW7).wrapping_add(LOW7) | v) & HIGH;
    // A byte is below 0x20 iff its high bit is clear and its low seven bits plus 0x60 stay
    // below 0x80.
    let below_space = !((x & LOW7).wrapping_add(ONES * 0x60) | x) & HIGH;
    let quote = is_zero(x ^ (ONES * b'"' as u64));
    let backslash = is_zero(x ^ (ONES * b'\\' as u64));
    below_space | quote | backslash
}

/// An RFC 3339 UTC timestamp with microseconds, formatted once and reused.
#[derive(Debug, Clone)]
pub struct Timestamp {
    text: String,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// A given time.
    pub fn from_system(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::from_unix_nanos(d.as_nanos() as u64)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: u64) -> Self {
        let secs = nanos / 1_000_000_000;
        let micros = (nanos % 1_000_000_000) / 1000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        Timestamp {
            text: format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                rem / 3600,
                (rem / 60) % 60,
                rem % 60
            ),
        }
    }

    /// The formatted text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The host name, from the kernel (no external lookup).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_serde_json_for_every_byte_in_every_position() {
        for b in 0u8..=127 {
            for pos in 0..10 {
                let mut text = vec![b'a'; 10];
                text[pos] = b;
                let s = String::from_utf8(text).unwrap_or_default();
                let mut ours = Vec::new();
                write_json_str(&mut ours, &s);
                let theirs: String =
                    serde_json::from_slice(&ours).unwrap_or_else(|e| panic!("{b} {pos}: {e}"));
                assert_eq!(theirs, s, "byte {b} at {pos}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_unix_nanos(0).as_str(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(1_795_708_884_827_178_806).as_str(),
            "2026-11-26T16:01:24.827178Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(951_782_400_000_000_000).as_str(),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_line_becomes_valid_json_with_source_in_front() {
        let enc = EventEncoder::new("app", "web-1");
        let mut batch = AppendBatch::new();
        let ts = Timestamp::from_unix_nanos(0);
        enc.push_line(
            &mut batch,
            b"say \"hi\"\t\x01\\",
            &ts,
            &[("file", "/x.log")],
            &["truncated"],
        );
        enc.push_line(&mut batch, b"bad \xff byte", &ts, &[], &[]);
        let wal = tempdir_wal("line");
        let mut cursor = wal.cursor("t").unwrap_or_else(|e| panic!("{e}"));
        wal.appender()
            .append_blocking(batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let records = cursor
            .try_read(10, 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let (name, json) = split_payload(&records[0].payload).unwrap_or_else(|| panic!("split"));
        assert_eq!(name, b"app");
        let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["message"], "say \"hi\"\t\u{1}\\");
        assert_eq!(v["file"], "/x.log");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["host"], "web-1");
        let (_, json) = split_payload(&records[1].payload).unwrap_or_else(|| panic!("split"));
        let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["message"], "bad \u{fffd} byte");
        assert_eq!(v["invalid_utf8"], true);
    }

    #[test]
    fn every_name_the_agent_writes_into_a_line_event_is_an_agent_field() {
        let enc = EventEncoder::new("app", "web-1");
        let mut batch = AppendBatch::new();
        let ts = Timestamp::from_unix_nanos(0);
        enc.push_line(
            &mut batch,
            b"bad \xff",
            &ts,
            &[("file", "/x.log")],
            &["truncated"],
        );
        let wal = tempdir_wal("agent-fields");
        let mut cursor = wal.cursor("t").unwrap_or_else(|e| panic!("{e}"));
        wal.appender()
            .append_blocking(batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let records = cursor
            .try_read(10, 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let (_, json) = split_payload(&records[0].payload).unwrap_or_else(|| panic!("split"));
        let v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(json).unwrap_or_else(|e| panic!("{e}"));
        for k in v.keys() {
            assert!(
                crate::reserved::AGENT_FIELDS.contains(&k.as_str()),
                "{k} is missing from AGENT_FIELDS"
            );
        }
    }

    #[test]
    fn a_client_object_keeps_its_bytes_and_loses_its_reserved_fields() {
        let reserved = Arc::new(ReservedFields::new(["seq", "n"]));
        let enc = EventEncoder::new("in", "web-1").with_reserved(reserved);
        let mut batch = AppendBatch::new();
        let ts = Timestamp::from_unix_nanos(0);
        let Ok(crate::client_json::Item::Object(object)) =
            crate::client_json::parse_item(r#"{"z":18446744073709551616,"n":1,"a":1e400}"#)
        else {
            panic!("not an object")
        };
        enc.push_client_object(&mut batch, &object, &ts);
        let wal = tempdir_wal("client-object");
        let mut cursor = wal.cursor("t").unwrap_or_else(|e| panic!("{e}"));
        wal.appender()
            .append_blocking(batch)
            .unwrap_or_else(|e| panic!("{e}"));
        let records = cursor
            .try_read(10, 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let (name, json) = split_payload(&records[0].payload).unwrap_or_else(|| panic!("split"));
        assert_eq!(name, b"in");
        assert_eq!(
            String::from_utf8_lossy(json),
            r#"{"z":18446744073709551616,"a":1e400,"client_fields":{"n":1},"timestamp":"1970-01-01T00:00:00.000000Z","host":"web-1","source":"in"}"#
        );
    }

    fn tempdir_wal(name: &str) -> gapless_wal::Wal {
        let dir =
            std::env::temp_dir().join(format!("gapless-event-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        gapless_wal::Wal::open(&dir, gapless_wal::WalOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The time of an event object, in nanoseconds since the Unix epoch: its top-level
/// `timestamp` when that is an RFC 3339 string, else `fallback` (when it was appended). For
/// platforms with a time field of their own (`TimeGenerated`, `@timestamp`, HEC `time`).
///
/// A line event (`{"message":"…","timestamp":"…",…}`, as [`EventEncoder`] writes it) is read
/// without parsing: its message string is skipped to the field after it. Anything else is
/// parsed as a client object.
pub fn event_time(json: &[u8], fallback: u64) -> u64 {
    let rfc3339 = |t: &[u8]| crate::sources::syslog::parse::parse_rfc3339(t);
    if let Some(rest) = json.strip_prefix(b"{\"message\":\"") {
        if let Some(end) = string_end(rest) {
            if let Some(ts) = rest[end + 1..].strip_prefix(b",\"timestamp\":\"") {
                if let Some(close) = memchr::memchr(b'"', ts) {
                    return rfc3339(&ts[..close]).unwrap_or(fallback);
                }
            }
        }
    }
    let Ok(text) = std::str::from_utf8(json) else {
        return fallback;
    };
    ClientObject::parse(text)
        .and_then(|o| o.get("timestamp"))
        .and_then(|v| serde_json::from_str::<&str>(v.get()).ok())
        .and_then(|t| rfc3339(t.as_bytes()))
        .unwrap_or(fallback)
}

/// The index of the quote closing a JSON string whose opening quote came just before `s`.
fn string_end(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let i = from + memchr::memchr(b'"', &s[from..])?;
        let backslashes = s[..i].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(i);
        }
        from = i + 1;
    }
}

#[cfg(test)]
mod event_time_tests {
    use super::*;

    #[test]
    fn a_line_event_gives_its_timestamp_without_parsing() {
        let json =
            br#"{"message":"say \"hi\" \\","timestamp":"2026-11-30T07:00:00.000001Z","host":"h"}"#;
        assert_eq!(event_time(json, 7), 1_796_022_000_000_001_000);
    }

    #[test]
    fn a_client_object_gives_its_timestamp_or_the_fallback() {
        let json = br#"{"o":{"timestamp":"x"},"timestamp":"2026-11-30T08:00:00+01:00"}"#;
        assert_eq!(event_time(json, 7), 1_796_022_000_000_000_000);
        assert_eq!(event_time(br#"{"timestamp":"yesterday"}"#, 7), 7);
        assert_eq!(event_time(br#"{"timestamp":17}"#, 7), 7);
        assert_eq!(event_time(b"not json", 7), 7);
    }
}

#[cfg(test)]
mod escape_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the text — quotes, backslashes, controls, multi-byte characters, at any
        /// offset from the eight-byte words — it reads back as itself.
        #[test]
        fn a_json_string_reads_back_as_the_text_written(s in "(?s)[\\x00-\\x7f\"\\\\é€😀a-z]{0,80}") {
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            let back: String = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_visibly_and_reported_wherever_it_is() {
        for bad in [&b"abc\xff"[..], b"0123456789\xc3(xyz", b"\xe2\x82"] {
            let mut out = Vec::new();
            assert!(!write_json_bytes(&mut out, bad));
            let back: String = serde_json::from_slice(&out).unwrap_or_default();
            assert_eq!(back, String::from_utf8_lossy(bad));
        }
        let mut out = Vec::new();
        assert!(write_json_bytes(
            &mut out,
            "héllo \"wörld\" 12345678".as_bytes()
        ));
    }

    #[test]
    fn long_text_full_of_escapes_reads_back_across_buffer_growth() {
        // Every byte an escape, runs of plain text of every length, multi-byte characters:
        // the word loop's stores and its growth of the buffer are exercised at every offset.
        let mut s = String::new();
        for n in 0..400 {
            s.push_str(&"x".repeat(n % 17));
            s.push(['"', '\\', '\n', '\u{1}', 'é', '😀', '\t'][n % 7]);
        }
        for start in 0..9 {
            let mut out = b"prefix".to_vec();
            out.shrink_to_fit();
            write_json_str(&mut out, &s[start..]);
            let back: String = serde_json::from_slice(&out[6..]).unwrap_or_default();
            assert_eq!(back, &s[start..]);
        }
    }

    #[test]
    fn the_word_mask_flags_exactly_the_bytes_to_escape() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                for fill in [b'a', b'"', 0x1f, 0x20, 0x7f, 0x80, 0xff] {
                    let mut word = [fill; 8];
                    word[pos] = b;
                    let want = word.iter().enumerate().fold(0u64, |m, (i, &c)| {
                        m | if needs_escape(c) { 0x80 << (8 * i) } else { 0 }
                    });
                    assert_eq!(escape_mask(u64::from_le_bytes(word)), want, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn quotes_every_few_bytes_are_each_escaped_once() {
        let s = r#"{"ts":"2026","level":"info","msg":"a\b"}"#;
        let mut out = Vec::new();
        write_json_str(&mut out, s);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#""{\"ts\":\"2026\",\"level\":\"info\",\"msg\":\"a\\b\"}""#
        );
    }
}
