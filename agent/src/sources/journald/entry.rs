//! One line of `journalctl --output=json` → one event. Owns the mapping of journal fields
//! to event fields; the reader owns batching and cursors.
//!
//! | event field  | from |
//! |--------------|------|
//! | `message`    | `MESSAGE` (a string, or an array of byte numbers for binary values: decoded as UTF-8, lossy, with `"invalid_utf8": true` if it was not) |
//! | `timestamp`  | `__REALTIME_TIMESTAMP` (µs since the epoch), RFC 3339 UTC; ingest time if absent |
//! | `host`       | `_HOSTNAME`, else the agent's host |
//! | `journal`    | every other field as journalctl gives it, `__CURSOR` left out |

use gapless_wal::AppendBatch;
use serde_json::{Map, Value};

use crate::event::{EventEncoder, Timestamp};

/// A parsed entry.
#[derive(Debug)]
pub struct Entry {
    /// Its `__CURSOR`.
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`, µs since the epoch.
    pub realtime_us: Option<u64>,
    message: Vec<u8>,
    fields: Map<String, Value>,
}

impl Entry {
    /// Parses one JSON line. `None` if it is not an entry with a cursor.
    pub fn parse(line: &[u8]) -> Option<Entry> {
        let mut fields: Map<String, Value> = serde_json::from_slice(line).ok()?;
        let cursor = match fields.remove("__CURSOR")? {
            Value::String(s) => s,
            _ => return None,
        };
        let message = fields.remove("MESSAGE").map(bytes_of).unwrap_or_default();
        let realtime_us = match fields.get("__REALTIME_TIMESTAMP") {
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Some(Entry {
            cursor,
            realtime_us,
            message,
            fields,
        })
    }

    /// Appends the event to `batch`.
    pub fn push(&self, encoder: &EventEncoder, batch: &mut AppendBatch) {
        let timestamp = match self.realtime_us {
            Some(us) => Timestamp::from_unix_nanos(us.saturating_mul(1000)),
            None => Timestamp::now(),
        };
        let host = match self.fields.get("_HOSTNAME") {
            Some(Value::String(h)) if !h.is_empty() => Some(h.as_str()),
            _ => None,
        };
        encoder.push_nested(
            batch,
            &self.message,
            &timestamp,
            host,
            "journal",
            &self.fields,
        );
    }
}

/// A field's bytes: journalctl writes text as a string and anything else (binary,
/// non-UTF-8, or with control characters) as an array of byte numbers; a field set
/// several times in one entry is an array of those (the first is taken).
fn bytes_of(v: Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.into_bytes(),
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|n| n.as_u64().unwrap_or(0xFD) as u8)
            .collect(),
        Value::Array(mut items) if !items.is_empty() => bytes_of(items.swap_remove(0)),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> serde_json::Value {
        let e = Entry::parse(line.as_bytes()).unwrap();
        let mut batch = AppendBatch::new();
        e.push(&EventEncoder::new("journal", "agenthost"), &mut batch);
        let dir = tempfile::tempdir().unwrap();
        let wal = gapless_wal::Wal::open(dir.path(), gapless_wal::WalOptions::default()).unwrap();
        let mut cursor = wal.cursor("t").unwrap();
        wal.appender().append_blocking(batch).unwrap();
        let records = cursor.try_read(10, 1 << 20).unwrap();
        let (_, json) = crate::event::split_payload(&records[0].payload).unwrap();
        serde_json::from_slice(json).unwrap()
    }

    #[test]
    fn fields_go_under_journal_and_the_cursor_is_left_out() {
        let v = event(
            r#"{"__CURSOR":"c1","MESSAGE":"hi\nthere","__REALTIME_TIMESTAMP":"1700000000123456","_HOSTNAME":"h1","_SYSTEMD_UNIT":"ssh.service","PRIORITY":"6","seq":"9"}"#,
        );
        assert_eq!(v["message"], "hi\nthere");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["host"], "h1");
        assert_eq!(v["source"], "journal");
        assert_eq!(v["journal"]["_SYSTEMD_UNIT"], "ssh.service");
        assert_eq!(v["journal"]["seq"], "9");
        assert!(v["journal"].get("__CURSOR").is_none());
        assert!(v["journal"].get("MESSAGE").is_none());
        assert!(v.get("seq").is_none());
        assert!(v.get("invalid_utf8").is_none());
    }

    #[test]
    fn binary_message_is_decoded_lossily_and_flagged() {
        let v = event(r#"{"__CURSOR":"c1","MESSAGE":[120,255,10,121]}"#);
        assert_eq!(v["message"], "x\u{FFFD}\ny");
        assert_eq!(v["invalid_utf8"], true);
        assert_eq!(v["host"], "agenthost");
    }
}
