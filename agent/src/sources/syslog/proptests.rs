//! Properties of the whole message path: no input panics the parser or the framing, and
//! every message becomes exactly one event whose JSON is valid.

use gapless_wal::AppendBatch;
use proptest::prelude::*;

use super::framing::{Decoder, Framing};
use super::parse::parse;
use crate::event::{EventEncoder, Timestamp};

/// Inputs near the grammar: pieces of real messages glued at random.
fn syslogish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"<34>".to_vec()),
        Just(b"<191>1 ".to_vec()),
        Just(b"1 ".to_vec()),
        Just(b"2003-10-11T22:14:15.003Z ".to_vec()),
        Just(b"2003-02-29T25:61:61+99:99 ".to_vec()),
        Just(b"Oct 11 22:14:15 ".to_vec()),
        Just(b"Feb 29 00:00:00 ".to_vec()),
        Just(b"- ".to_vec()),
        Just(b"[id@1 a=\"x\\\"]\" b=\"\"]".to_vec()),
        Just(b"[".to_vec()),
        Just(b"su[12]: ".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"12 ".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn every_message_becomes_one_event_with_valid_json(
        input in prop_oneof![syslogish(), proptest::collection::vec(any::<u8>(), 0..200)],
        now in 0u64..4_000_000_000_000_000_000,
    ) {
        let m = parse(&input, now);
        let mut object = Vec::new();
        m.write_json(&mut object, "127.0.0.1:1");
        let v: serde_json::Value = serde_json::from_slice(&object)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&object))))?;
        prop_assert!(v["format"].is_string());
        let enc = EventEncoder::new("net", "h");
        let mut batch = AppendBatch::new();
        let ts = m.timestamp.map_or_else(|| Timestamp::from_unix_nanos(now), Timestamp::from_unix_nanos);
        enc.push_line_with_object(&mut batch, m.msg, &ts, ("syslog", &object), &[]);
        prop_assert_eq!(batch.len(), 1);
    }

    #[test]
    fn framing_consumes_every_stream_whatever_the_cuts(
        stream in syslogish(),
        cut in 0usize..200,
        framing in prop_oneof![Just(Framing::Auto), Just(Framing::OctetCounting), Just(Framing::Newline)],
    ) {
        let mut d = Decoder::new(framing, 64);
        let mut buf = Vec::new();
        let cut = cut.min(stream.len());
        buf.extend_from_slice(&stream[..cut]);
        d.decode(&mut buf, false, |f, _| assert!(f.len() <= 64));
        buf.extend_from_slice(&stream[cut..]);
        d.decode(&mut buf, true, |f, _| assert!(f.len() <= 64));
        prop_assert!(buf.is_empty());
    }
}
