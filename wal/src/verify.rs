//! [`VerifyReport`]: every segment header and record checked, damaged ranges listed with
//! the seqs they cost, and what follows the records of the active segment. Reads only;
//! changes nothing.
//!
//! A range names lost seqs only between evidence: an intact record (or the segment's
//! first seq, from its file name) before, and an intact record after, or the end of the
//! segment's seqs (the next segment's first seq, from its file name; for the active
//! segment, the seq after its last record that counts, see `recovery::tail`). A damaged
//! header or record never supplies a seq.

use std::path::PathBuf;

use crate::error::Result;
use crate::record::Seq;
use crate::recovery::{header_of, ActiveEnd};
use crate::segment::{HeaderCheck, ScanItem, SegmentScanner};
use crate::shared::Shared;

/// The result of [`crate::Wal::verify`] and [`crate::ReadOnlyWal::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// One entry per segment, oldest first.
    pub segments: Vec<SegmentReport>,
}

impl VerifyReport {
    /// True when no segment has damage: no damaged header, no damaged range. A torn or
    /// dirty tail ([`SegmentReport::tail`]) is not damage: it holds no record.
    pub fn is_clean(&self) -> bool {
        self.segments
            .iter()
            .all(|s| s.damaged.is_empty() && !s.header_damaged)
    }

    /// Every lost sequence number range, in order.
    pub fn lost(&self) -> Vec<(Seq, Seq)> {
        self.segments
            .iter()
            .flat_map(|s| s.damaged.iter().filter_map(|d| d.lost))
            .collect()
    }

    /// Bytes after the last record of the active segment that are no record (a torn
    /// write or a dirty tail), as a read-only open found them; 0 after a read-write open,
    /// which cuts them.
    pub fn dirty_tail_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| s.tail.as_ref())
            .map(|t| t.dirty)
            .sum()
    }
}

/// What [`crate::Wal::verify`] found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Its first sequence number (from its name).
    pub first_seq: Seq,
    /// One past the last sequence number it should hold.
    pub seq_end: Seq,
    /// Its records' bytes, header included (for the active segment, up to the end of its
    /// last record; see `tail` for what follows).
    pub bytes: u64,
    /// Intact records in it.
    pub records: u64,
    /// Whether it is the active segment.
    pub active: bool,
    /// Whether its 32-byte header is damaged. Its records are read all the same, with the
    /// first sequence number taken from the file name.
    pub header_damaged: bool,
    /// Damaged byte ranges, in order.
    pub damaged: Vec<DamagedRange>,
    /// What follows the last record of the active segment of a log that was not closed
    /// (found by a read-only open; a read-write open cuts it, leaving `None`).
    pub tail: Option<TailReport>,
}

/// A damaged stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// Where the damage starts.
    pub offset: u64,
    /// How many bytes are not intact records.
    pub len: u64,
    /// The sequence numbers lost in it (inclusive), if any.
    pub lost: Option<(Seq, Seq)>,
}

/// The bytes after the last record of the active segment. They hold no record and cost
/// no seq; the agent cuts them when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailReport {
    /// Where the records end.
    pub offset: u64,
    /// Bytes from `offset` through the last non-zero byte: a write torn off by a crash,
    /// or bytes written there by something else (a dirty tail).
    pub dirty: u64,
    /// Zero bytes after those, up to the file's end: room the appender reserved ahead of
    /// its writes.
    pub reserved: u64,
}

pub(crate) fn verify(shared: &Shared, active_end: Option<&ActiveEnd>) -> Result<VerifyReport> {
    let (segments, next_seq) = {
        let st = shared.lock();
        (
            st.segments.iter().cloned().collect::<Vec<_>>(),
            st.published_next,
        )
    };
    let mut report = VerifyReport::default();
    for (i, seg) in segments.iter().enumerate() {
        let seq_end = segments.get(i + 1).map_or(next_seq, |s| s.first_seq);
        let path = shared.segment_path(seg.first_seq);
        let (header, _) = header_of(&shared.dir, seg.first_seq, shared.max_payload)?;
        let mut scanner = SegmentScanner::open(path.clone(), seg.first_seq, shared.max_payload)?;
        scanner.set_limit(seg.published_len, Some(seq_end));
        let mut expected = seg.first_seq;
        let mut records = 0;
        let mut damaged: Vec<DamagedRange> = Vec::new();
        let mut open_damage: Option<usize> = None;
        let lose =
            |damaged: &mut Vec<DamagedRange>, open: Option<usize>, upto: Seq, expected: Seq| {
                if upto > expected {
                    let range = Some((expected, upto - 1));
                    match open {
                        Some(i) => damaged[i].lost = range,
                        None => damaged.push(DamagedRange {
                            offset: 0,
                            len: 0,
                            lost: range,
                        }),
                    }
                }
            };
        loop {
            match scanner.next()? {
                ScanItem::Record { seq, .. } => {
                    lose(&mut damaged, open_damage.take(), seq, expected);
                    expected = seq + 1;
                    records += 1;
                }
                ScanItem::Damaged { offset, len } => {
                    damaged.push(DamagedRange {
                        offset,
                        len,
                        lost: None,
                    });
                    open_damage = Some(damaged.len() - 1);
                }
                ScanItem::End => {
                    lose(&mut damaged, open_damage.take(), seq_end, expected);
                    break;
                }
            }
        }
        let tail = active_end
            .filter(|_| !seg.sealed)
            .filter(|a| a.file_len > a.end)
            .map(|a| TailReport {
                offset: a.end,
                dirty: a.dirty,
                reserved: a.reserved(),
            });
        report.segments.push(SegmentReport {
            path,
            first_seq: seg.first_seq,
            seq_end,
            bytes: seg.len,
            records,
            active: !seg.sealed,
            header_damaged: header != HeaderCheck::Valid,
            damaged,
            tail,
        });
    }
    Ok(report)
}
