//! Introspection: [`Stats`] (sizes, positions, backlog per cursor). Reads only; changes
//! nothing. Checking every record is `verify`'s.

use crate::error::Result;
use crate::record::Seq;
use crate::segment::{ScanItem, SegmentScanner};
use crate::shared::{SegmentMeta, Shared};

/// A snapshot of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Segment files, the active one included.
    pub segments: usize,
    /// Bytes of all segments.
    pub bytes: u64,
    /// The configured bound on `bytes`.
    pub max_bytes: u64,
    /// The oldest sequence number still in the log.
    pub first_seq: Seq,
    /// The sequence number the next record gets (the last record is `next_seq - 1`).
    pub next_seq: Seq,
    /// One entry per cursor, by name.
    pub cursors: Vec<CursorStats>,
    /// Records appended since open.
    pub appended_records: u64,
    /// Bytes appended since open.
    pub appended_bytes: u64,
    /// `fdatasync` calls on segments since open.
    pub syncs: u64,
    /// Time spent in those calls, in seconds.
    pub sync_seconds: f64,
    /// Records deleted unacknowledged by `drop_oldest` since open.
    pub dropped_oldest_records: u64,
    /// Records refused by `drop_newest` since open.
    pub dropped_newest_records: u64,
    /// Appends that failed because the disk was full, since open.
    pub disk_full_errors: u64,
}

/// Where one cursor stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorStats {
    /// The cursor's name.
    pub name: String,
    /// The first sequence number it has not acknowledged.
    pub next: Seq,
    /// Records after its position.
    pub backlog_records: u64,
    /// Bytes of the log after its position (exact when the position's offset is known,
    /// otherwise estimated within one segment).
    pub backlog_bytes: u64,
    /// Append time (ns since the epoch) of its oldest unacknowledged record, if any.
    pub oldest_unacked: Option<u64>,
    /// Whether a [`crate::Cursor`] handle is open on it.
    pub open: bool,
}

pub(crate) fn stats(shared: &Shared) -> Result<Stats> {
    let (segments, cursors, next_seq, c) = {
        let st = shared.lock();
        (
            st.segments.iter().cloned().collect::<Vec<_>>(),
            st.cursors.clone(),
            st.published_next,
            st.counters.clone(),
        )
    };
    let first_seq = segments.first().map_or(next_seq, |s| s.first_seq);
    let mut cursor_stats = Vec::new();
    for (name, entry) in cursors {
        let next = entry.next.max(first_seq);
        let backlog_records = next_seq.saturating_sub(next);
        let (backlog_bytes, oldest_unacked) = if backlog_records == 0 {
            (0, None)
        } else {
            position_bytes_and_time(shared, &segments, next_seq, next, entry.hint)?
        };
        cursor_stats.push(CursorStats {
            name,
            next: entry.next,
            backlog_records,
            backlog_bytes,
            oldest_unacked,
            open: entry.open,
        });
    }
    Ok(Stats {
        segments: segments.len(),
        bytes: segments.iter().map(|s| s.len).sum(),
        max_bytes: shared.opts.max_bytes,
        first_seq,
        next_seq,
        cursors: cursor_stats,
        appended_records: c.appended_records,
        appended_bytes: c.appended_bytes,
        syncs: c.syncs,
        sync_seconds: c.sync_nanos as f64 / 1e9,
        dropped_oldest_records: c.dropped_oldest_records,
        dropped_newest_records: c.dropped_newest_records,
        disk_full_errors: c.disk_full_errors,
    })
}

/// Bytes from the record `next` to the end of the log, and that record's append time.
fn position_bytes_and_time(
    shared: &Shared,
    segments: &[SegmentMeta],
    next_seq: Seq,
    next: Seq,
    hint: Option<(Seq, u64)>,
) -> Result<(u64, Option<u64>)> {
    let idx = segments
        .partition_point(|s| s.first_seq <= next)
        .saturating_sub(1);
    let Some(seg) = segments.get(idx) else {
        return Ok((0, None));
    };
    let seq_end = segments.get(idx + 1).map_or(next_seq, |s| s.first_seq);
    let later: u64 = segments[idx + 1..].iter().map(|s| s.len).sum();
    let mut scanner = SegmentScanner::open(
        shared.segment_path(seg.first_seq),
        seg.first_seq,
        shared.max_payload,
    )?;
    scanner.set_limit(seg.published_len, Some(seq_end));
    if let Some((hint_seg, offset)) = hint {
        if hint_seg == seg.first_seq && scanner.peek_seq(offset)? == Some(next) {
            scanner.seek(offset, next.checked_sub(1));
        }
    }
    loop {
        match scanner.next()? {
            ScanItem::Record {
                offset,
                seq,
                timestamp,
                ..
            } if seq >= next => {
                return Ok((later + seg.published_len - offset, Some(timestamp)));
            }
            ScanItem::Record { .. } | ScanItem::Damaged { .. } => {}
            ScanItem::End => return Ok((later, segments.get(idx + 1).and_then(|s| s.first_ts))),
        }
    }
}
