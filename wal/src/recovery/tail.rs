//! The end of the active segment: which bytes after its last intact record are damaged
//! records, whose seqs readers report lost and the appender never hands out again, and
//! which are a torn or dirty tail or reserved zeros, which hold no seq at all. Reads only:
//! a read-write open cuts what this finds (see `recovery::open`), a read-only one reports it.
//!
//! A seq is named only on evidence that a record with that seq was written:
//! - **a damaged record in place**: where the next record starts, a header whose seq is
//!   exactly the next one, whose length fits the bytes present, and whose magic, or kind
//!   and reserved bytes, are intact (bit rot in a whole record, not a torn write). A chain
//!   of them counts record by record.
//! - **a damaged run from such a record to the end of a trimmed file**: after at least one
//!   record of that chain, non-record bytes without a run of zeros as long as a record
//!   header, running up to the last byte of a file whose last byte is not zero. Close and
//!   seal trim a segment to its data, so the damage that began in a record that was there
//!   covers record bytes to the end: one record more, and exactly one seq is named.
//!
//! Anything else is a torn or dirty tail — a partial record, bytes written into the zeros
//! the appender reserves ahead of its writes, garbage after the last intact record —
//! reported in bytes, never as seqs. A record that was really there but left no such
//! evidence (its header destroyed) gets its seq handed out again: the price of never
//! claiming a loss the log cannot show.
//!
//! **A lost page ends the durable data**, even where intact records follow it: damaged
//! bytes that begin with zeros up to a page boundary, or that include a whole, aligned
//! [`PAGE`] of zeros, are the shape a power cut leaves when the kernel wrote back some
//! unsynced pages of the active segment and not others (a lost page keeps only what was
//! synced of it, and the segment's room ahead of the appender is zeros; bit rot flips bits,
//! it does not zero the rest of a page). Everything from the last intact record before such a page was written after the
//! last completed sync, so under `always` (and, readers seeing only synced records, under
//! `interval`) nobody was told of it: it is a torn tail, cut, and costs no seq. Keeping the
//! records after the hole would make readers report the hole's seqs as `wal_corrupt`, a
//! loss of records nobody was promised.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::record::{unchecked_header, Seq, RECORD_HEADER_LEN};
use crate::segment::{ScanItem, SegmentScanner, SEGMENT_HEADER_LEN};

/// The unit in which unsynced data survives a power cut or not: the page cache's.
pub(crate) const PAGE: u64 = 4096;

/// What the end of the active segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveEnd {
    /// Where the records that count end: after the last intact record, or after damaged
    /// records kept for their seqs. Readers interpret bytes up to here.
    pub end: u64,
    /// The seq after the last record that counts.
    pub next_seq: Seq,
    /// Append time of the first intact record.
    pub first_ts: Option<u64>,
    /// Append time of the last intact record.
    pub last_ts: Option<u64>,
    /// Damaged records kept at the end for their seqs: (offset, first seq, last seq).
    pub damaged: Option<(u64, Seq, Seq)>,
    /// Bytes after `end`, through the last non-zero byte, that are no record: a torn write
    /// or a dirty tail.
    pub dirty: u64,
    /// The file's size. Bytes from `end + dirty` to here are zeros reserved ahead.
    pub file_len: u64,
}

impl ActiveEnd {
    /// Zero bytes after the dirty tail.
    pub(crate) fn reserved(&self) -> u64 {
        self.file_len.saturating_sub(self.end + self.dirty)
    }
}

/// Scans the active segment `path` (of `file_len` bytes) and weighs what follows its last
/// intact record.
pub(crate) fn examine(
    path: &Path,
    first_seq: Seq,
    file_len: u64,
    max_payload: usize,
) -> Result<ActiveEnd> {
    let mut scanner = SegmentScanner::open(path.to_path_buf(), first_seq, max_payload)?;
    scanner.set_limit(file_len, None);
    let mut found = ActiveEnd {
        end: SEGMENT_HEADER_LEN as u64,
        next_seq: first_seq,
        first_ts: None,
        last_ts: None,
        damaged: None,
        dirty: 0,
        file_len,
    };
    let file = File::open(path).map_err(|e| Error::io("open active segment", path, e))?;
    // Whether bytes follow the last intact record; they start at `found.end`.
    let mut tail = false;
    // Where a lost page begins, if damaged bytes hold one (see the module doc).
    let mut lost_page = None;
    loop {
        match scanner.next()? {
            ScanItem::Record {
                offset,
                seq,
                timestamp,
                payload,
                ..
            } => {
                found.end = offset + (RECORD_HEADER_LEN + payload.len()) as u64;
                found.next_seq = seq + 1;
                found.first_ts.get_or_insert(timestamp);
                found.last_ts = Some(timestamp);
                tail = false;
            }
            ScanItem::Damaged { offset, len } => {
                tail = true;
                lost_page = zero_page_in(&file, offset, offset + len)
                    .map_err(|e| Error::io("read active segment", path, e))?;
                if lost_page.is_some() {
                    break;
                }
            }
            ScanItem::End => break,
        }
    }
    if !tail {
        return Ok(found);
    }
    let data_end = end_of_nonzero(&file, found.end, file_len)
        .map_err(|e| Error::io("read active segment", path, e))?;
    if data_end == found.end {
        // Only the zeros the appender reserves ahead of its writes: room, not damage.
        return Ok(found);
    }
    // Evidence of damaged records stops at a lost page: a record running into one did not
    // have its bytes all present.
    let evidence_end = lost_page.map_or(data_end, |p| p.min(data_end));
    let mut bytes = vec![0u8; (evidence_end - found.end) as usize];
    file.read_exact_at(&mut bytes, found.end)
        .map_err(|e| Error::io("read active segment", path, e))?;
    let trimmed = lost_page.is_none() && data_end == file_len;
    let (kept, records) = evidence(&bytes, found.next_seq, trimmed, max_payload);
    if records > 0 {
        let last = found.next_seq + records - 1;
        found.damaged = Some((found.end, found.next_seq, last));
        found.end += kept as u64;
        found.next_seq = last + 1;
    }
    found.dirty = data_end - found.end;
    Ok(found)
}

/// How many bytes at the start of `tail` (the bytes after the last intact record, through
/// the last non-zero one) are damaged records, and how many records they prove, the first
/// with seq `next`. `trimmed`: the file ends with `tail`'s last byte.
fn evidence(tail: &[u8], mut next: Seq, trimmed: bool, max_payload: usize) -> (usize, u64) {
    let (mut at, mut records) = (0usize, 0u64);
    while let Some(h) = unchecked_header(&tail[at..]) {
        let fits = h.len <= max_payload && at + RECORD_HEADER_LEN + h.len <= tail.len();
        if h.seq != next || !(h.magic || h.kind) || !fits {
            break;
        }
        at += RECORD_HEADER_LEN + h.len;
        records += 1;
        next += 1;
    }
    let rest = &tail[at..];
    // The next record's header, whole, with its length running past the bytes present:
    // a write torn off, not a record that was completed.
    let torn = unchecked_header(rest).is_some_and(|h| h.seq == next && (h.magic || h.kind));
    if records > 0
        && trimmed
        && rest.len() >= RECORD_HEADER_LEN
        && !torn
        && longest_zero_run(rest) < RECORD_HEADER_LEN
    {
        return (tail.len(), records + 1);
    }
    (at, records)
}

/// Where the shape of a lost page begins in the damaged bytes `[from, to)`: zeros from
/// `from` up to the next page boundary (a page whose unsynced end was lost, its synced
/// start kept), or else the first aligned [`PAGE`] of zeros (a page lost whole).
fn zero_page_in(file: &File, from: u64, to: u64) -> std::io::Result<Option<u64>> {
    let mut page = [0u8; PAGE as usize];
    let boundary = from.div_ceil(PAGE) * PAGE;
    if boundary > from && boundary <= to {
        let head = &mut page[..(boundary - from) as usize];
        file.read_exact_at(head, from)?;
        if head.iter().all(|&b| b == 0) {
            return Ok(Some(from));
        }
    }
    let mut at = boundary;
    while at + PAGE <= to {
        file.read_exact_at(&mut page, at)?;
        if page.iter().all(|&b| b == 0) {
            return Ok(Some(at));
        }
        at += PAGE;
    }
    Ok(None)
}

fn longest_zero_run(bytes: &[u8]) -> usize {
    bytes.split(|&b| b != 0).map(<[u8]>::len).max().unwrap_or(0)
}

/// The offset after the last non-zero byte in `[from, to)` (or `from`), read in chunks.
fn end_of_nonzero(file: &File, from: u64, to: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 1 << 20;
    let mut end = from;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b != 0) {
            end = at + i as u64 + 1;
        }
        at += n as u64;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_into, RecordKind};

    fn records(seqs: std::ops::RangeInclusive<Seq>) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in seqs {
            encode_into(&mut buf, seq, 1, RecordKind::Event, b"some payload bytes");
        }
        buf
    }

    fn rotted_page() -> Vec<u8> {
        (0..PAGE).map(|i| i as u8 | 1).collect()
    }

    #[test]
    fn intact_records_after_a_lost_page_are_a_torn_tail_that_costs_no_seq() {
        // Power cut: the kernel wrote back the active segment's unsynced pages 0, 2 and 3
        // but not page 1; everything from the record page 1 begins in was never synced.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let mut bytes = crate::segment::encode_header(1, 0).to_vec();
        let (mut seq, mut durable) = (1, None);
        while bytes.len() < 3 * PAGE as usize + 500 {
            if bytes.len() + RECORD_HEADER_LEN + 300 > PAGE as usize && durable.is_none() {
                durable = Some((bytes.len() as u64, seq));
            }
            encode_into(&mut bytes, seq, 1, RecordKind::Event, &[7u8; 300]);
            seq += 1;
        }
        let (end, next_seq) = durable.unwrap();
        bytes[PAGE as usize..2 * PAGE as usize].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let found = examine(&path, 1, bytes.len() as u64, 1 << 20).unwrap();
        assert_eq!((found.end, found.next_seq), (end, next_seq));
        assert_eq!(found.damaged, None);
        assert_eq!(found.dirty, bytes.len() as u64 - end);
        // A page whose unsynced end was lost: zeros from the last intact record on.
        let mut half = bytes.clone();
        half[end as usize..PAGE as usize].fill(0);
        half[PAGE as usize..2 * PAGE as usize].copy_from_slice(&rotted_page());
        std::fs::write(&path, &half).unwrap();
        let found = examine(&path, 1, half.len() as u64, 1 << 20).unwrap();
        assert_eq!(
            (found.end, found.next_seq, found.damaged),
            (end, next_seq, None)
        );
        // Bit rot in the same place (no zeros to a page boundary) keeps the records after it.
        let mut rotted = bytes.clone();
        rotted[PAGE as usize..2 * PAGE as usize].copy_from_slice(&rotted_page());
        std::fs::write(&path, &rotted).unwrap();
        let found = examine(&path, 1, rotted.len() as u64, 1 << 20).unwrap();
        assert_eq!((found.end, found.next_seq), (rotted.len() as u64, seq));
    }

    #[test]
    fn a_whole_record_with_a_flipped_payload_bit_is_evidence_of_its_seq() {
        let mut tail = records(7..=8);
        tail[40] ^= 1;
        tail[RECORD_HEADER_LEN + 18 + 40] ^= 1;
        assert_eq!(evidence(&tail, 7, false, 1024), (tail.len(), 2));
    }

    #[test]
    fn a_lone_byte_is_no_evidence_even_at_the_end_of_the_file() {
        for tail in [vec![0x5A], vec![0x5A; 31], [vec![0; 40], vec![1]].concat()] {
            assert_eq!(evidence(&tail, 7, true, 1024), (0, 0), "{tail:?}");
        }
    }

    #[test]
    fn garbage_before_reserved_zeros_is_no_evidence() {
        assert_eq!(evidence(&[0x5A; 300], 7, false, 1024), (0, 0));
    }

    #[test]
    fn garbage_after_the_last_intact_record_proves_nothing_even_in_a_trimmed_file() {
        assert_eq!(evidence(&[0x5A; 3000], 7, true, 1024), (0, 0));
    }

    #[test]
    fn a_damaged_run_from_a_damaged_record_to_the_end_of_a_trimmed_file_proves_one_record_more() {
        let mut tail = records(7..=7);
        tail[40] ^= 1;
        tail.extend_from_slice(&[0x5A; 3000]);
        assert_eq!(evidence(&tail, 7, true, 1024), (tail.len(), 2));
        // The same bytes before reserved zeros: only the damaged record.
        assert_eq!(evidence(&tail, 7, false, 1024), (50, 1));
    }

    #[test]
    fn a_header_with_a_seq_that_does_not_follow_is_no_evidence() {
        let mut tail = records(9..=9);
        tail[40] ^= 1;
        assert_eq!(evidence(&tail, 7, false, 1024), (0, 0));
    }

    #[test]
    fn a_record_torn_off_after_its_header_is_no_evidence() {
        let whole = records(7..=7);
        let torn = &whole[..RECORD_HEADER_LEN + 5];
        assert_eq!(evidence(torn, 7, true, 1024), (0, 0));
    }
}
