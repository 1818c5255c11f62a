//! Turning a batch into a request body: NDJSON or one JSON array, each event with its
//! `seq` spliced in, gap records as `{"gapless":"gap",…}` events; then gzip.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use gapless_wal::{Gap, Record};

use crate::config::Encoding;
use crate::event::{split_payload, write_json_str, Timestamp};

/// Appends the JSON of one record to `out`, its seq first under `seq_field` (if any).
pub fn write_record(out: &mut Vec<u8>, r: &Record, host: &str, seq_field: Option<&str>) {
    if let Some(gap) = r.gap() {
        write_gap(out, r.seq, &gap, host, seq_field);
        return;
    }
    let json = split_payload(&r.payload).map_or(&r.payload[..], |(_, j)| j);
    match (json.strip_prefix(b"{"), seq_field) {
        (Some(rest), Some(field)) => {
            out.push(b'{');
            write_json_str(out, field);
            out.push(b':');
            out.extend_from_slice(itoa(r.seq).as_bytes());
            if rest.first() != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        _ => out.extend_from_slice(json),
    }
}

fn itoa(n: u64) -> String {
    n.to_string()
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
        out.extend_from_slice(itoa(seq).as_bytes());
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
    match encoding {
        Encoding::Ndjson => {
            for r in records {
                write_record(&mut out, r, host, seq_field);
                out.push(b'\n');
            }
        }
        Encoding::Json => {
            out.push(b'[');
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_record(&mut out, r, host, seq_field);
            }
            out.push(b']');
        }
    }
    out
}

/// Gzips `body` at the fast level: logs compress well even so, and the agent has a
/// throughput target on two cores.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
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
