//! Lines in, events out: numbered test lines, the `message`s of received events, and the
//! check that none is missing (counting duplicates, which are allowed within bounds).

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
