//! Opening a log: lock the directory, list what is in it, cut a torn tail off the active
//! segment, load the cursors, and hand the active segment to the appender. Never appends
//! records: the appender owns the tail.
//!
//! Open time does not grow with the backlog: sealed segments are only listed and their
//! 32-byte headers checked; only the active segment (at most `segment_bytes`) is scanned.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::cursor_file::{CursorFile, CURSOR_SUFFIX};
use crate::error::{Error, Result};
use crate::record::{Seq, RECORD_HEADER_LEN, RECORD_MAGIC};
use crate::segment::{
    check_header, create_segment, parse_segment_name, HeaderCheck, ScanItem, SegmentScanner,
    SEGMENT_HEADER_LEN,
};
use crate::shared::{now_nanos, CursorEntry, SegmentMeta};

/// The name of the lock file in the log's directory.
pub const LOCK_FILE: &str = "wal.lock";

/// What open found and set up.
pub(crate) struct Recovered {
    pub lock: File,
    pub segments: VecDeque<SegmentMeta>,
    pub cursors: BTreeMap<String, CursorEntry>,
    pub active: File,
    pub next_seq: Seq,
}

/// Takes the directory's lock; a second holder gets [`Error::Locked`] naming the directory.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// A file in the log's directory, by what its name says it is.
pub(crate) enum Entry {
    Segment(Seq),
    Cursor(String),
}

/// Lists segments (by first seq) and cursors. Leftover temp files of an interrupted
/// segment creation are deleted; anything else unknown is left alone and ignored.
pub(crate) fn list_dir(dir: &Path, remove_temp: bool) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io("list WAL directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list WAL directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(seq) = parse_segment_name(name) {
            out.push(Entry::Segment(seq));
        } else if let Some(cursor) = name.strip_suffix(CURSOR_SUFFIX) {
            if crate::cursor_file::valid_name(cursor) {
                out.push(Entry::Cursor(cursor.to_string()));
            }
        } else if name.ends_with(".seg.tmp") && remove_temp {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing an unfinished segment file");
            fs::remove_file(&path).map_err(|e| Error::io("remove temp segment", &path, e))?;
        } else if name != LOCK_FILE {
            tracing::debug!(file = name, "ignoring a file that is not part of the WAL");
        }
    }
    Ok(out)
}

/// Reads a segment's header and says whether the segment can be used.
pub(crate) fn header_of(dir: &Path, first_seq: Seq) -> Result<(HeaderCheck, u64)> {
    let path = crate::segment::segment_path(dir, first_seq);
    let file = File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let n = file.read_at(&mut header, 0).unwrap_or(0);
    Ok((check_header(&path, &header[..n], first_seq)?, len))
}

pub(crate) fn open(dir: &Path, max_payload: usize) -> Result<Recovered> {
    fs::create_dir_all(dir).map_err(|e| Error::io("create WAL directory", dir, e))?;
    let lock = lock_dir(dir)?;
    let entries = list_dir(dir, true)?;
    let mut seg_seqs: Vec<Seq> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Segment(s) => Some(*s),
            Entry::Cursor(_) => None,
        })
        .collect();
    seg_seqs.sort_unstable();

    let mut segments = VecDeque::new();
    for first_seq in seg_seqs {
        let (check, len) = header_of(dir, first_seq)?;
        match check {
            HeaderCheck::Foreign => {
                tracing::warn!(
                    first_seq,
                    "ignoring a file named like a WAL segment without a segment header"
                );
                continue;
            }
            HeaderCheck::Damaged => {
                tracing::warn!(
                    first_seq,
                    "WAL segment header damaged; reading its records by file name"
                );
            }
            HeaderCheck::Valid => {}
        }
        segments.push_back(SegmentMeta {
            first_seq,
            len,
            published_len: len,
            sealed: true,
            first_ts: None,
            last_ts: None,
        });
    }

    let mut cursors = BTreeMap::new();
    for entry in &entries {
        if let Entry::Cursor(name) = entry {
            let path = crate::cursor_file::cursor_path(dir, name);
            let (_, pos) = CursorFile::load(&path)?;
            let entry = match pos {
                Some(p) => CursorEntry {
                    next: p.next,
                    hint: p.hint,
                    open: false,
                },
                None => {
                    tracing::warn!(cursor = %name, "cursor file damaged; it restarts at the oldest record (duplicates, no loss)");
                    CursorEntry {
                        next: 0,
                        hint: None,
                        open: false,
                    }
                }
            };
            cursors.insert(name.clone(), entry);
        }
    }

    // The active segment: scan it, cut a torn tail.
    let mut next_seq = 1;
    let mut active_len = SEGMENT_HEADER_LEN as u64;
    if let Some(active) = segments.back_mut() {
        let (end, next, first_ts, last_ts) =
            scan_active(dir, active.first_seq, active.len, max_payload)?;
        active.len = end;
        active.published_len = end;
        active.sealed = false;
        active.first_ts = first_ts;
        active.last_ts = last_ts;
        active_len = end;
        next_seq = next;
    }
    // Never reuse a sequence number a cursor has already passed (possible after a power
    // cut under durability interval/never): continue above it in a new segment.
    let cursor_max = cursors.values().map(|c| c.next).max().unwrap_or(0);
    let need_new =
        segments.is_empty() || (cursor_max > next_seq && active_len > SEGMENT_HEADER_LEN as u64);
    if cursor_max > next_seq {
        tracing::warn!(
            next_seq,
            cursor_max,
            "a cursor is past the end of the WAL; continuing after it"
        );
        next_seq = cursor_max;
    }
    let reopen = if need_new {
        None
    } else {
        segments.back().map(|s| s.first_seq)
    };
    let active = match reopen {
        // An empty active segment may sit below a cursor's position: records simply
        // continue at `next_seq` inside it, and readers report the hole.
        Some(first_seq) => {
            let path = crate::segment::segment_path(dir, first_seq);
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io("open active segment", &path, e))?
        }
        None => {
            if let Some(old) = segments.back_mut() {
                old.sealed = true;
            }
            let file = create_segment(dir, next_seq, now_nanos())?;
            segments.push_back(SegmentMeta {
                first_seq: next_seq,
                len: SEGMENT_HEADER_LEN as u64,
                published_len: SEGMENT_HEADER_LEN as u64,
                sealed: false,
                first_ts: None,
                last_ts: None,
            });
            file
        }
    };
    for c in cursors.values_mut() {
        if c.next == 0 {
            c.next = segments.front().map_or(next_seq, |s| s.first_seq);
        }
    }
    Ok(Recovered {
        lock,
        segments,
        cursors,
        active,
        next_seq,
    })
}

/// Scans the active segment and cuts off a torn tail. Damage followed by intact records is
/// left for readers to report; only bytes after the last intact record go, except a last
/// record whose header is intact and whose bytes are all there (a bit flip, not a torn
/// write): it keeps its sequence number so that the number is never reused.
///
/// Returns (end offset, next seq, first and last record timestamps).
fn scan_active(
    dir: &Path,
    first_seq: Seq,
    file_len: u64,
    max_payload: usize,
) -> Result<(u64, Seq, Option<u64>, Option<u64>)> {
    let path = crate::segment::segment_path(dir, first_seq);
    let mut scanner = SegmentScanner::open(path.clone(), first_seq, max_payload)?;
    scanner.set_limit(file_len, None);
    let mut end = SEGMENT_HEADER_LEN as u64;
    let mut next = first_seq;
    let mut first_ts = None;
    let mut last_ts = None;
    let mut tail_damage = None;
    loop {
        match scanner.next()? {
            ScanItem::Record {
                offset,
                seq,
                timestamp,
                payload,
                ..
            } => {
                end = offset + (RECORD_HEADER_LEN + payload.len()) as u64;
                next = seq + 1;
                first_ts.get_or_insert(timestamp);
                last_ts = Some(timestamp);
                tail_damage = None;
            }
            ScanItem::Damaged { offset, .. } => tail_damage = tail_damage.or(Some(offset)),
            ScanItem::End => break,
        }
    }
    if let Some(cut) = tail_damage {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open active segment", &path, e))?;
        // The appender extends the active segment with zeros ahead of its writes: those
        // are not damage, only room.
        let data_end = end_of_nonzero(&file, cut, file_len)
            .map_err(|e| Error::io("read active segment", &path, e))?;
        if data_end == cut {
            if file_len > cut {
                file.set_len(cut)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io("trim active segment", &path, e))?;
            }
            return Ok((cut, next, first_ts, last_ts));
        }
        let file_len = data_end;
        let records = next - first_seq;
        let avg_record = (cut - SEGMENT_HEADER_LEN as u64)
            .checked_div(records)
            .unwrap_or(RECORD_HEADER_LEN as u64);
        if let Some(last) =
            damaged_tail_last_seq(&file, cut, file_len, next, max_payload, avg_record)
        {
            // Whole records are damaged at the end (bit rot, an overwritten run), not a torn
            // write: keep the bytes so readers report exactly these seqs lost, and never
            // hand the seqs out again.
            tracing::warn!(path = %path.display(), offset = cut, first_seq = next, last_seq = last, "damaged records at the end of the active WAL segment; readers will report them as a gap");
            file.set_len(file_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io("trim active segment", &path, e))?;
            return Ok((file_len, last + 1, first_ts, last_ts));
        }
        tracing::warn!(path = %path.display(), offset = cut, bytes = file_len - cut, "cutting a torn tail off the active WAL segment");
        file.set_len(cut)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("truncate torn tail", &path, e))?;
        end = cut;
    }
    Ok((end, next, first_ts, last_ts))
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

/// The highest sequence number that damaged-but-whole records in the tail `[cut, file_len)`
/// give evidence of, if any. A torn write leaves at most a partial record (its length runs
/// past the end of the file), which is no evidence: it was never completed. Evidence is
/// (a) a chain of headers from `cut` whose seqs run on from `expected` and whose lengths fit
/// the file, or (b) any intact-looking header (magic, kind, zero reserved bytes, a length
/// that fits) with a plausible seq.
fn damaged_tail_last_seq(
    file: &File,
    cut: u64,
    file_len: u64,
    expected: Seq,
    max_payload: usize,
    avg_record: u64,
) -> Option<Seq> {
    let mut tail = vec![0u8; (file_len - cut) as usize];
    file.read_exact_at(&mut tail, cut).ok()?;
    let header = |at: usize| -> Option<(usize, Seq, bool)> {
        let h = tail.get(at..at + RECORD_HEADER_LEN)?;
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut s = [0u8; 8];
        s.copy_from_slice(&h[16..24]);
        let fits = len <= max_payload && at + RECORD_HEADER_LEN + len <= tail.len();
        let looks_intact =
            h[0..4] == RECORD_MAGIC && matches!(h[12], 1 | 2) && h[13..16] == [0, 0, 0];
        fits.then_some((len, u64::from_le_bytes(s), looks_intact))
    };
    let mut best = None;
    let (mut at, mut want) = (0usize, expected);
    while let Some((len, seq, _)) = header(at) {
        if seq != want {
            break;
        }
        best = Some(seq);
        want += 1;
        at += RECORD_HEADER_LEN + len;
    }
    // Bytes left after the chain that are neither a torn record (an intact header whose
    // length runs past the end) nor unwritten zeros held records whose headers are gone:
    // estimate how many from the segment's average record size, rounding up, so that their
    // seqs are reported lost rather than handed out again.
    let rest = &tail[at.min(tail.len())..];
    let torn = rest.len() >= RECORD_HEADER_LEN
        && rest[0..4] == RECORD_MAGIC
        && u64::from_le_bytes(rest[16..24].try_into().unwrap_or_default()) == want;
    if rest.len() >= RECORD_HEADER_LEN && !torn && rest.iter().any(|&b| b != 0) {
        let avg = avg_record.max(RECORD_HEADER_LEN as u64);
        let records = (rest.len() as u64).div_ceil(avg);
        best = Some(want + records - 1);
    }
    let most = expected + (tail.len() / RECORD_HEADER_LEN) as u64;
    for at in memchr::memmem::find_iter(&tail, &RECORD_MAGIC) {
        if let Some((_, seq, true)) = header(at) {
            if seq >= expected && seq <= most && best.is_none_or(|b| seq > b) {
                best = Some(seq);
            }
        }
    }
    best
}
