//! Lines in, events out: numbered test lines, the `message`s of received events, and the
//! check that none is missing (counting duplicates, which are allowed within bounds) — or,
//! where nothing may repeat, that each arrived exactly once and each seq was sent once.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// `count` distinct lines `"<prefix> 000000 …"` starting at `first`, padded to about 100
/// bytes so that batches have a realistic size.
pub fn numbered_lines(prefix: &str, first: usize, count: usize) -> Vec<String> {
    (first..first + count)
        .map(|i| {
            format!(
                "{prefix} {i:06} the quick brown fox jumps over the lazy dog {}",
                "x".repeat(32)
            )
        })
        .collect()
}

/// The `message` of each event (events without one are skipped).
pub fn lines_in(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// How a set of expected lines arrived.
#[derive(Debug)]
pub struct Delivery {
    /// How many lines were expected.
    pub expected: usize,
    /// Expected lines that never arrived, in the order expected.
    pub missing: Vec<String>,
    /// Arrivals beyond the first of each line.
    pub duplicates: usize,
    /// Lines that arrived but were not expected.
    pub unexpected: Vec<String>,
}

impl Delivery {
    /// Panics, naming what is missing, if any expected line did not arrive.
    pub fn assert_nothing_lost(&self) {
        assert!(
            self.missing.is_empty(),
            "{} of {} lines were lost (first: {:?}, last: {:?})",
            self.missing.len(),
            self.expected,
            self.missing.first(),
            self.missing.last()
        );
    }

    /// Panics unless every expected line arrived exactly once and nothing else did.
    pub fn assert_exactly_once(&self) {
        self.assert_nothing_lost();
        assert_eq!(
            self.duplicates, 0,
            "{} lines arrived more than once",
            self.duplicates
        );
        assert!(
            self.unexpected.is_empty(),
            "{} unexpected lines arrived (first: {:?})",
            self.unexpected.len(),
            self.unexpected.first()
        );
    }
}

/// Compares the `message`s of `events` (duplicates included) with `expected`.
pub fn check_delivery(expected: &[String], events: &[Value]) -> Delivery {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in lines_in(events) {
        *seen.entry(line).or_default() += 1;
    }
    let wanted: BTreeSet<&String> = expected.iter().collect();
    Delivery {
        expected: expected.len(),
        missing: expected
            .iter()
            .filter(|l| !seen.contains_key(*l))
            .cloned()
            .collect(),
        duplicates: seen.values().map(|n| n - 1).sum(),
        unexpected: seen
            .keys()
            .filter(|l| !wanted.contains(l))
            .cloned()
            .collect(),
    }
}

/// Checks that ranges (as `gapless-seq-range` of accepted requests, in arrival order)
/// cover `1..=last` without a hole; returns the holes.
pub fn seq_holes(ranges: &[(u64, u64)], last: u64) -> Vec<(u64, u64)> {
    let mut covered: Vec<(u64, u64)> = ranges.to_vec();
    covered.sort_unstable();
    let mut holes = Vec::new();
    let mut next = 1;
    for (first, end) in covered {
        if first > next {
            holes.push((next, first - 1));
        }
        next = next.max(end + 1);
    }
    if next <= last {
        holes.push((next, last));
    }
    holes
}

/// Panics unless the events, taken in `seq` order, carry `expected` in its order: one
/// stream (stdin, one file, one client's posts) must keep its order in the WAL.
pub fn assert_in_order(expected: &[String], events: &[Value]) {
    let position: BTreeMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut by_seq: Vec<(u64, usize)> = events
        .iter()
        .filter_map(|e| {
            let at = *position.get(e["message"].as_str()?)?;
            Some((e["seq"].as_u64()?, at))
        })
        .collect();
    by_seq.sort_unstable();
    by_seq.dedup();
    for pair in by_seq.windows(2) {
        let ((seq_a, line_a), (seq_b, line_b)) = (pair[0], pair[1]);
        assert!(
            line_a < line_b,
            "lines out of order in the WAL: line #{line_a} got seq {seq_a} but line #{line_b} \
             got seq {seq_b} (first seqs → line #: {:?})",
            &by_seq[..by_seq.len().min(5)]
        );
    }
}

/// Panics unless every one of `expected` arrived exactly once among `events` and nothing
/// else did. A duplicate is shown with its seqs: the same seq twice means a sink sent a
/// record again, two seqs that a source read the line again.
pub fn assert_exactly_once(expected: &[String], events: &[Value], at: &str) {
    let delivery = check_delivery(expected, events);
    if delivery.duplicates > 0 {
        let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for e in events {
            if let (Some(m), Some(s)) = (e["message"].as_str(), e["seq"].as_u64()) {
                seqs.entry(m).or_default().push(s);
            }
        }
        let twice: Vec<_> = seqs.iter().filter(|(_, s)| s.len() > 1).take(3).collect();
        panic!(
            "{at}: {} of {} lines arrived more than once; (message, seqs): {twice:?}",
            delivery.duplicates, delivery.expected
        );
    }
    assert!(
        delivery.missing.is_empty() && delivery.unexpected.is_empty(),
        "{at}: {} of {} lines missing (first {:?}), {} unexpected (first {:?})",
        delivery.missing.len(),
        delivery.expected,
        delivery.missing.first(),
        delivery.unexpected.len(),
        delivery.unexpected.first()
    );
}

/// Panics unless `ranges` (as `gapless-seq-range` of accepted requests) cover `1..=last`
/// without a hole and without overlapping: every record of the WAL accounted for once.
pub fn assert_ranges_cover_once(ranges: &[(u64, u64)], last: u64, at: &str) {
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        assert!(
            pair[1].0 > pair[0].1,
            "{at}: seq ranges {:?} and {:?} overlap: records sent twice",
            pair[0],
            pair[1]
        );
    }
    let holes = seq_holes(&ranges, last);
    assert!(
        holes.is_empty(),
        "{at}: no accepted request accounts for seqs {holes:?}"
    );
}
