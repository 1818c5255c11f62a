//! Opening a log: lock the directory, survey what is in it (segments, their headers,
//! cursors, the end of the active segment), and — for a read-write open — cut a torn or
//! dirty tail off the active segment and hand it to the appender. Never appends records:
//! the appender owns the tail.
//!
//! The survey reads only, so a read-only open ([`crate::ReadOnlyWal`]) is the survey under
//! a shared lock, and a read-write open is the survey, then its cuts.
//!
//! Open time does not grow with the backlog: sealed segments are only listed and their
//! 32-byte headers checked; only the active segment (at most `segment_bytes`) is scanned.

mod tail;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cursor_file::{read_position, CURSOR_SUFFIX};
use crate::error::{Error, Result};
use crate::record::Seq;
use crate::segment::{
    check_header, create_segment, holds_a_record, parse_segment_name, segment_path, HeaderCheck,
    SEGMENT_HEADER_LEN,
};
use crate::shared::{now_nanos, CursorEntry, SegmentMeta};

pub(crate) use tail::ActiveEnd;

/// The name of the lock file in the log's directory.
pub const LOCK_FILE: &str = "wal.lock";

/// What a read-write open found and set up.
pub(crate) struct Recovered {
    pub lock: File,
    pub segments: VecDeque<SegmentMeta>,
    pub cursors: BTreeMap<String, CursorEntry>,
    pub active: File,
    pub next_seq: Seq,
}

/// What is in a log directory, as found without changing anything.
pub(crate) struct Survey {
    /// Oldest first; the last one is the active segment, its length and published length
    /// set to `active_end.end`.
    pub segments: VecDeque<SegmentMeta>,
    pub cursors: BTreeMap<String, CursorEntry>,
    /// The seq after the last record that counts (see [`ActiveEnd`]).
    pub next_seq: Seq,
    /// The end of the active segment, if there is one.
    pub active_end: Option<ActiveEnd>,
    /// Leftovers of interrupted segment creations.
    pub temp_files: Vec<PathBuf>,
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

/// Takes the directory's lock shared, opening the lock file read-only (and not creating
/// it: a directory without one has no writer). While a read-write holder has it, fails
/// with [`Error::InUse`]; while it is held shared, a read-write open fails with
/// [`Error::Locked`], so the files stay as read.
pub(crate) fn lock_dir_shared(dir: &Path) -> Result<Option<File>> {
    let path = dir.join(LOCK_FILE);
    let lock = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open lock file", &path, e)),
    };
    match lock.try_lock_shared() {
        Ok(()) => Ok(Some(lock)),
        Err(fs::TryLockError::WouldBlock) => Err(Error::InUse {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// A file in the log's directory, by what its name says it is.
pub(crate) enum Entry {
    Segment(Seq),
    Cursor(String),
    /// A segment whose creation was interrupted before its rename.
    Temp(PathBuf),
}

/// Lists segments (by first seq), cursors and leftover temp files. Anything else is
/// ignored.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<Entry>> {
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
        } else if name.ends_with(".seg.tmp") {
            out.push(Entry::Temp(entry.path()));
        } else if name != LOCK_FILE {
            tracing::debug!(file = name, "ignoring a file that is not part of the WAL");
        }
    }
    Ok(out)
}

/// Reads a segment's header and says whether the segment can be used; also returns the
/// file's size. A file without the segment magic is still a segment (with a damaged
/// header) if it holds an intact record.
pub(crate) fn header_of(
    dir: &Path,
    first_seq: Seq,
    max_payload: usize,
) -> Result<(HeaderCheck, u64)> {
    let path = segment_path(dir, first_seq);
    let file = File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat segment", &path, e))?
        .len();
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let n = file.read_at(&mut header, 0).unwrap_or(0);
    let check = match check_header(&path, &header[..n], first_seq)? {
        HeaderCheck::Foreign if holds_a_record(&path, first_seq, len, max_payload)? => {
            HeaderCheck::Damaged
        }
        check => check,
    };
    Ok((check, len))
}

/// Lists the directory, checks segment headers, loads cursor positions and weighs the end
/// of the active segment. Changes nothing.
pub(crate) fn survey(dir: &Path, max_payload: usize) -> Result<Survey> {
    let entries = list_dir(dir)?;
    let mut seg_seqs: Vec<Seq> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Segment(s) => Some(*s),
            _ => None,
        })
        .collect();
    seg_seqs.sort_unstable();

    let mut segments = VecDeque::new();
    for first_seq in seg_seqs {
        let (check, len) = header_of(dir, first_seq, max_payload)?;
        match check {
            HeaderCheck::Foreign => {
                tracing::warn!(
                    first_seq,
                    "ignoring a file named like a WAL segment without a segment header or a record"
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
    let mut temp_files = Vec::new();
    for entry in entries {
        match entry {
            Entry::Cursor(name) => {
                let path = crate::cursor_file::cursor_path(dir, &name);
                let next = match read_position(&path)? {
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
                cursors.insert(name, next);
            }
            Entry::Temp(path) => temp_files.push(path),
            Entry::Segment(_) => {}
        }
    }

    let mut next_seq = 1;
    let mut active_end = None;
    if let Some(active) = segments.back_mut() {
        let path = segment_path(dir, active.first_seq);
        let found = tail::examine(&path, active.first_seq, active.len, max_payload)?;
        active.len = found.end;
        active.published_len = found.end;
        active.sealed = false;
        active.first_ts = found.first_ts;
        active.last_ts = found.last_ts;
        next_seq = found.next_seq;
        active_end = Some(found);
    }
    Ok(Survey {
        segments,
        cursors,
        next_seq,
        active_end,
        temp_files,
    })
}

/// Points cursors whose file was damaged (position 0) at the oldest record, `oldest`.
pub(crate) fn place_lost_cursors(cursors: &mut BTreeMap<String, CursorEntry>, oldest: Seq) {
    for c in cursors.values_mut() {
        if c.next == 0 {
            c.next = oldest;
        }
    }
}

/// Opens the log for reading and writing: takes the lock, surveys, removes leftover temp
/// files, cuts what follows the records of the active segment (a torn or dirty tail and
/// reserved zeros; damaged records proven by evidence stay, see `tail`), and opens or
/// creates the active segment.
pub(crate) fn open(dir: &Path, max_payload: usize) -> Result<Recovered> {
    crate::segment::create_dir_durable(dir)?;
    let lock = lock_dir(dir)?;
    let Survey {
        mut segments,
        mut cursors,
        mut next_seq,
        active_end,
        temp_files,
        ..
    } = survey(dir, max_payload)?;
    for path in temp_files {
        tracing::info!(path = %path.display(), "removing an unfinished segment file");
        fs::remove_file(&path).map_err(|e| Error::io("remove temp segment", &path, e))?;
    }
    let mut active_len = SEGMENT_HEADER_LEN as u64;
    if let (Some(found), Some(active)) = (&active_end, segments.back()) {
        let path = segment_path(dir, active.first_seq);
        cut_active(&path, found)?;
        active_len = found.end;
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
            let path = segment_path(dir, first_seq);
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
    let oldest = segments.front().map_or(next_seq, |s| s.first_seq);
    place_lost_cursors(&mut cursors, oldest);
    Ok(Recovered {
        lock,
        segments,
        cursors,
        active,
        next_seq,
    })
}

/// Cuts the active segment `path` back to the end of its records (see `tail`): a torn or
/// dirty tail and the zeros reserved ahead go; damaged records kept for their seqs stay, so
/// readers report those seqs lost and the appender never hands them out again.
fn cut_active(path: &Path, found: &ActiveEnd) -> Result<()> {
    if let Some((offset, first, last)) = found.damaged {
        tracing::warn!(path = %path.display(), offset, first_seq = first, last_seq = last, "damaged records at the end of the active WAL segment; readers will report them as a gap");
    }
    if found.dirty > 0 {
        tracing::warn!(path = %path.display(), offset = found.end, bytes = found.dirty, "cutting a torn or dirty tail off the active WAL segment (no record lost)");
    }
    if found.file_len <= found.end {
        return Ok(());
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open active segment", path, e))?;
    file.set_len(found.end)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("cut the tail of the active segment", path, e))
}
