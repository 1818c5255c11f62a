//! The continuity protocol's reference checker: given what a receiver got from one agent
//! and sink — batches with their `Gapless-Seq-Range` headers, or just the events with their
//! `seq` — it reports the sequence numbers that are missing without a gap record saying
//! why, those delivered more than once, and the gap records themselves.
//!
//! A batch's range covers every record from its first to its last seq: events delivered in
//! it and records the sink's `inputs` filter skipped. Anything lost on the way is described
//! by a gap event (`"gapless":"gap"` with `first_seq`/`last_seq`). So a stream is whole when
//! the union of batch ranges, event seqs and gap ranges has no hole.
//!
//! What the checker trusts, and why:
//! - Batch ranges (`Gapless-Seq-Range`): headers only the agent sets.
//! - An event's seq: the top-level seq field, which only the agent writes (a client's field
//!   of that name is moved under `client_fields`, see [`crate::reserved`]).
//! - A gap event only when it is the agent's: a top-level `"gapless":"gap"` (only the agent
//!   writes a top-level `gapless`; a client's arrives as `client_fields.gapless`, an
//!   ordinary event), carrying its own seq like every record the agent sends, and naming
//!   either no seqs or `first_seq <= last_seq <= its own seq` — the agent writes a gap
//!   record at or after the seqs it describes, never before them. Any other gap-looking
//!   event explains nothing: it is listed in `ignored_gaps`.
//! - Heartbeats (`"gapless":"heartbeat"`) say nothing about continuity: here they are
//!   events like any other.
//!
//! Through a relay ([`crate::sources::relay`]) a stream has two levels, checked apart:
//! - the hop (the relay's own seqs, batch ranges and gap records): an event it passed on —
//!   one with `origin_agent_id`, gap records included — is an event of the hop;
//! - each origin agent ([`check_origins`]): its events' `origin_seq`, its gap records
//!   (`first_seq`/`last_seq` are its seqs) and the relay's `"gapless":"range"` records (the
//!   seqs one of its requests covered) must leave no hole.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::reserved::{GAPLESS, ORIGIN_AGENT_ID, ORIGIN_SEQ, ORIGIN_WAL_ID};

/// One request as the receiver got it.
#[derive(Debug, Clone, Default)]
pub struct ReceivedBatch {
    /// `Gapless-Seq-Range`, when the receiver kept headers.
    pub seq_range: Option<(u64, u64)>,
    /// The events of the request.
    pub events: Vec<Value>,
}

/// A gap event seen in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapSeen {
    /// Its reason.
    pub reason: String,
    /// First lost seq, when given.
    pub first_seq: Option<u64>,
    /// Last lost seq, when given.
    pub last_seq: Option<u64>,
    /// How many events it says are lost.
    pub events: Option<u64>,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    /// Lowest and highest seq seen (in ranges or events).
    pub first_seq: Option<u64>,
    /// Highest seq seen.
    pub last_seq: Option<u64>,
    /// Distinct event seqs delivered.
    pub delivered: u64,
    /// Seqs delivered more than once, with how many times (the first 1000).
    pub duplicates: BTreeMap<u64, u64>,
    /// How many deliveries were duplicates in all.
    pub duplicate_deliveries: u64,
    /// Gap events, in the order received.
    pub gaps: Vec<GapSeen>,
    /// Events that look like gap events but are not the agent's (no seq of their own, or
    /// naming seqs after it): they explain no hole.
    pub ignored_gaps: Vec<GapSeen>,
    /// Ranges (inclusive) neither delivered, covered by a batch range, nor described by a
    /// gap event. Empty means the stream has no silent hole.
    pub missing: Vec<(u64, u64)>,
}

impl StreamReport {
    /// True when nothing is missing silently.
    pub fn is_continuous(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Checks a stream. `seq_field` is the sink's `seq_field` (default `seq`); `from` is the
/// seq the stream should start at (`None`: where it starts).
pub fn check(batches: &[ReceivedBatch], seq_field: &str, from: Option<u64>) -> StreamReport {
    let mut report = StreamReport::default();
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    for b in batches {
        if let Some(r) = b.seq_range {
            covered.push(r);
        }
        for e in &b.events {
            let own_seq = e.get(seq_field).and_then(Value::as_u64);
            // A record a relay passed on speaks for its origin agent, not for this stream.
            let relayed = seq_field != ORIGIN_SEQ && e.get(ORIGIN_AGENT_ID).is_some();
            if !relayed && e.get(GAPLESS).and_then(Value::as_str) == Some("gap") {
                let g = GapSeen {
                    reason: e
                        .get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    first_seq: e.get("first_seq").and_then(Value::as_u64),
                    last_seq: e.get("last_seq").and_then(Value::as_u64),
                    events: e.get("events").and_then(Value::as_u64),
                };
                if let Some(s) = own_seq {
                    covered.push((s, s));
                }
                match (own_seq, g.first_seq, g.last_seq) {
                    (Some(s), Some(a), Some(z)) if a <= z && z <= s => {
                        covered.push((a, z));
                        report.gaps.push(g);
                    }
                    (Some(_), None, None) => report.gaps.push(g),
                    _ => report.ignored_gaps.push(g),
                }
                continue;
            }
            if let Some(s) = own_seq {
                *seen.entry(s).or_default() += 1;
                covered.push((s, s));
            }
        }
    }
    for (&s, &n) in &seen {
        if n > 1 {
            report.duplicate_deliveries += n - 1;
            if report.duplicates.len() < 1000 {
                report.duplicates.insert(s, n);
            }
        }
    }
    report.delivered = seen.len() as u64;
    covered.sort_unstable();
    let lo = covered.iter().map(|r| r.0).min();
    let hi = covered.iter().map(|r| r.1).max();
    report.first_seq = lo;
    report.last_seq = hi;
    let Some(lo) = lo else {
        return report;
    };
    let mut next = from.unwrap_or(lo).min(lo);
    for (a, z) in covered {
        if a > next {
            report.missing.push((next, a - 1));
        }
        next = next.max(z.saturating_add(1));
    }
    report
}

/// Checks each origin agent of a stream that came through a relay: per `origin_agent_id`
/// and `origin_wal_id`, its events by `origin_seq`, its gap records, and the relay's range
/// records (a "range" record carrying an `origin_seq` is not the relay's and covers nothing). Empty when
/// no event came through a relay.
pub fn check_origins(batches: &[ReceivedBatch]) -> BTreeMap<String, StreamReport> {
    let mut per: BTreeMap<(String, String), Vec<ReceivedBatch>> = BTreeMap::new();
    for b in batches {
        for e in &b.events {
            let Some(agent) = e.get(ORIGIN_AGENT_ID).and_then(Value::as_str) else {
                continue;
            };
            // Each WAL of an agent is a stream of its own (its seqs start at 1).
            let wal = e.get(ORIGIN_WAL_ID).and_then(Value::as_str).unwrap_or("");
            let batches = per
                .entry((agent.to_string(), wal.to_string()))
                .or_insert_with(|| {
                    vec![ReceivedBatch {
                        seq_range: None,
                        events: Vec::new(),
                    }]
                });
            // A range record is the relay's: it carries no origin seq.
            if e.get(GAPLESS).and_then(Value::as_str) == Some("range")
                && e.get(ORIGIN_SEQ).is_none()
            {
                if let (Some(a), Some(z)) = (
                    e.get("first_seq").and_then(Value::as_u64),
                    e.get("last_seq").and_then(Value::as_u64),
                ) {
                    if a <= z {
                        batches.push(ReceivedBatch {
                            seq_range: Some((a, z)),
                            events: Vec::new(),
                        });
                    }
                }
                continue;
            }
            batches[0].events.push(e.clone());
        }
    }
    let mut wals: BTreeMap<String, usize> = BTreeMap::new();
    for (agent, _) in per.keys() {
        *wals.entry(agent.clone()).or_default() += 1;
    }
    per.into_iter()
        .map(|((agent, wal), batches)| {
            // An agent with one WAL is named by its id alone; one with several, per WAL.
            let name = if wals.get(&agent).copied().unwrap_or(0) > 1 {
                format!("{agent} (WAL {wal})")
            } else {
                agent
            };
            (name, check(&batches, ORIGIN_SEQ, None))
        })
        .collect()
}

/// Reads a capture: NDJSON where each line is either one event (a receiver that kept no
/// headers) or `{"headers": {…}, "events": [ … ]}` (one request with its headers).
pub fn parse_capture(text: &str) -> Result<Vec<ReceivedBatch>, String> {
    let mut batches = Vec::new();
    let mut loose = ReceivedBatch::default();
    let header = |h: &Value, name: &str| -> Option<String> {
        let obj = h.as_object()?;
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str().map(str::to_string))
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        match (v.get("headers"), v.get("events").and_then(Value::as_array)) {
            (Some(h), Some(events)) => {
                let seq_range = header(h, "gapless-seq-range").and_then(|r| {
                    let (a, z) = r.split_once('-')?;
                    Some((a.trim().parse().ok()?, z.trim().parse().ok()?))
                });
                batches.push(ReceivedBatch {
                    seq_range,
                    events: events.clone(),
                });
            }
            _ => loose.events.push(v),
        }
    }
    if !loose.events.is_empty() {
        batches.push(loose);
    }
    Ok(batches)
}

/// Distinct seqs in a report's duplicates (for tests and tools).
pub fn duplicate_seqs(report: &StreamReport) -> BTreeSet<u64> {
    report.duplicates.keys().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64) -> Value {
        json!({"seq": seq, "message": "x"})
    }

    #[test]
    fn each_origin_agent_through_a_relay_is_checked_apart_from_the_hop() {
        let relayed = |seq: u64, origin: &str, oseq: u64| json!({"seq": seq, "origin_agent_id": origin, "origin_seq": oseq, "message": "m"});
        let mut events = vec![
            relayed(1, "a", 1),
            relayed(2, "b", 1),
            relayed(3, "a", 2),
            // a's gap record for its seqs 3..=4, passed on as the relay's seq 4.
            json!({"seq": 4, "origin_agent_id": "a", "origin_seq": 5, "gapless": "gap", "reason": "wal_corrupt", "first_seq": 3, "last_seq": 4}),
            relayed(5, "a", 6),
            // b's seqs 2..=3 were filtered at b; its request covered 1..=4.
            json!({"seq": 6, "origin_agent_id": "b", "gapless": "range", "first_seq": 1, "last_seq": 4}),
            relayed(7, "b", 4),
        ];
        let batches = vec![ReceivedBatch {
            seq_range: Some((1, 7)),
            events: events.clone(),
        }];
        let hop = check(&batches, "seq", Some(1));
        assert!(hop.is_continuous(), "{hop:?}");
        assert!(hop.gaps.is_empty(), "an origin's gap is not the hop's");
        let origins = check_origins(&batches);
        assert!(origins["a"].is_continuous(), "{:?}", origins["a"]);
        assert_eq!(origins["a"].gaps.len(), 1);
        assert!(origins["b"].is_continuous(), "{:?}", origins["b"]);
        // Without a's gap record, its seqs 3..=4 are missing.
        events.remove(3);
        let batches = vec![ReceivedBatch {
            seq_range: None,
            events,
        }];
        assert_eq!(check_origins(&batches)["a"].missing, vec![(3, 5)]);
    }

    #[test]
    fn each_wal_of_an_origin_is_its_own_stream_and_forged_ranges_cover_nothing() {
        let ev = |seq: u64, wal: &str, oseq: u64| json!({"seq": seq, "origin_agent_id": "a", "origin_wal_id": wal, "origin_seq": oseq});
        // WAL w1 sent 1..=3; the host lost its data_dir, WAL w2 sent 1 and 3: 2 is missing,
        // and w1's seq 2 does not cover it.
        let mut events = vec![ev(1, "w1", 1), ev(2, "w1", 2), ev(3, "w1", 3)];
        events.extend([ev(4, "w2", 1), ev(5, "w2", 3)]);
        // An agent's own "range" record (it carries an origin seq): not the relay's.
        events.push(json!({"seq": 6, "origin_agent_id": "a", "origin_wal_id": "w2", "origin_seq": 4, "gapless": "range", "first_seq": 1, "last_seq": 100}));
        let origins = check_origins(&[ReceivedBatch {
            seq_range: None,
            events,
        }]);
        assert!(origins["a (WAL w1)"].is_continuous());
        assert_eq!(origins["a (WAL w2)"].missing, vec![(2, 2)]);
    }

    #[test]
    fn joined_ranges_with_skipped_records_are_continuous() {
        let batches = vec![
            ReceivedBatch {
                seq_range: Some((1, 10)),
                events: vec![ev(1), ev(5)],
            },
            ReceivedBatch {
                seq_range: Some((11, 20)),
                events: vec![ev(20)],
            },
        ];
        let r = check(&batches, "seq", Some(1));
        assert!(r.is_continuous(), "{r:?}");
        assert_eq!(r.delivered, 3);
    }

    #[test]
    fn a_hole_is_missing_unless_a_gap_record_names_it() {
        let batches = vec![
            ReceivedBatch {
                seq_range: Some((1, 10)),
                events: vec![],
            },
            ReceivedBatch {
                seq_range: Some((21, 30)),
                events: vec![],
            },
        ];
        assert_eq!(check(&batches, "seq", None).missing, vec![(11, 20)]);
        let with_gap = vec![
            batches[0].clone(),
            ReceivedBatch {
                seq_range: Some((21, 30)),
                events: vec![
                    json!({"seq": 22, "gapless": "gap", "reason": "wal_corrupt", "first_seq": 11, "last_seq": 20}),
                ],
            },
        ];
        let r = check(&with_gap, "seq", None);
        assert!(r.is_continuous(), "{r:?}");
        assert_eq!(r.gaps[0].reason, "wal_corrupt");
    }

    #[test]
    fn a_gap_record_explains_a_hole_only_when_it_is_the_agents() {
        // Seqs 11..=20 are missing from a stream without headers.
        let around = |extra: Value| {
            let mut events: Vec<Value> = (1..=10).chain(22..=25).map(ev).collect();
            events.push(extra);
            vec![ReceivedBatch {
                seq_range: None,
                events,
            }]
        };
        let cases = [
            (
                "a client's gap record, moved under client_fields",
                json!({"seq": 21, "message": "x", "client_fields": {"gapless": "gap", "first_seq": 11, "last_seq": 20}}),
            ),
            (
                "a gap record without a seq of its own",
                json!({"gapless": "gap", "reason": "wal_corrupt", "first_seq": 11, "last_seq": 20}),
            ),
            (
                "a gap record naming seqs after its own",
                json!({"seq": 21, "gapless": "gap", "reason": "wal_corrupt", "first_seq": 11, "last_seq": 500}),
            ),
            (
                "a gap record whose range runs backwards",
                json!({"seq": 21, "gapless": "gap", "reason": "wal_corrupt", "first_seq": 20, "last_seq": 11}),
            ),
            (
                "a gap record with a seq that is not a number",
                json!({"seq": "21", "gapless": "gap", "reason": "wal_corrupt", "first_seq": 11, "last_seq": 20}),
            ),
        ];
        for (what, extra) in cases {
            let r = check(&around(extra), "seq", Some(1));
            assert!(r.gaps.is_empty(), "{what}: {r:?}");
            // 11..=20, and 21 too where the record has no seq of its own.
            assert!(
                r.missing.len() == 1 && r.missing[0].0 == 11 && r.missing[0].1 >= 20,
                "{what}: {r:?}"
            );
        }
        let real = json!({"seq": 21, "gapless": "gap", "reason": "wal_corrupt", "first_seq": 11, "last_seq": 20});
        let r = check(&around(real), "seq", Some(1));
        assert!(r.is_continuous() && r.ignored_gaps.is_empty(), "{r:?}");
        // A heartbeat is an ordinary event.
        let hb = json!({"seq": 21, "gapless": "heartbeat", "first_seq": 11, "last_seq": 20});
        let r = check(&around(hb), "seq", Some(1));
        assert_eq!(r.missing, vec![(11, 20)], "{r:?}");
    }

    #[test]
    fn a_gap_record_naming_no_seqs_is_trusted_and_explains_nothing() {
        let batches = vec![ReceivedBatch {
            seq_range: None,
            events: vec![
                ev(1),
                json!({"seq": 2, "gapless": "gap", "reason": "wal_full_drop_newest", "events": 7}),
                ev(3),
            ],
        }];
        let r = check(&batches, "seq", Some(1));
        assert!(r.is_continuous(), "{r:?}");
        assert_eq!(r.gaps.len(), 1);
        assert!(r.ignored_gaps.is_empty());
    }

    #[test]
    fn events_without_headers_are_checked_by_their_seqs_and_duplicates_counted() {
        let batches = vec![ReceivedBatch {
            seq_range: None,
            events: vec![ev(1), ev(2), ev(2), ev(4)],
        }];
        let r = check(&batches, "seq", Some(1));
        assert_eq!(r.missing, vec![(3, 3)]);
        assert_eq!(r.duplicate_deliveries, 1);
        assert_eq!(duplicate_seqs(&r), BTreeSet::from([2]));
    }

    #[test]
    fn a_stream_must_start_at_from() {
        let batches = vec![ReceivedBatch {
            seq_range: Some((5, 9)),
            events: vec![],
        }];
        assert_eq!(check(&batches, "seq", Some(1)).missing, vec![(1, 4)]);
    }

    #[test]
    fn captures_with_and_without_headers_parse() {
        let text =
            "{\"headers\":{\"Gapless-Seq-Range\":\"1-3\"},\"events\":[{\"seq\":1}]}\n{\"seq\":7}\n";
        let b = parse_capture(text).unwrap_or_default();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].seq_range, Some((1, 3)));
    }
}
