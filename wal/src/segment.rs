//! Segment files: their header, their names, creating and listing them, and scanning their
//! records with resynchronisation after damage. The appender owns writing to the active
//! segment; retention owns deleting sealed ones.
//!
//! # Segment layout
//!
//! A segment is named after the sequence number of its first record,
//! `{first_seq:020}.seg`, and starts with a 32-byte header (little-endian):
//!
//! ```text
//! offset  size  field
//! ──────  ────  ─────────────────────────────────────────
//!      0     8  magic       "GAPLSEG\0"
//!      8     2  version     1
//!     10     2  reserved    zero
//!     12     8  first_seq   sequence number of its first record
//!     20     8  created     creation time, ns since the Unix epoch
//!     28     4  crc32c      CRC32C of bytes 0 .. 28
//!     32     …  records, back to back (see `record`)
//! ```
//!
//! A segment is created as `….seg.tmp`, its header synced, then renamed and the directory
//! synced, so a segment file either has a whole header or does not exist.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{self, Decoded, RecordKind, Seq, RECORD_HEADER_LEN, RECORD_MAGIC};

/// Bytes before a segment's first record.
pub const SEGMENT_HEADER_LEN: usize = 32;
const SEGMENT_MAGIC: [u8; 8] = *b"GAPLSEG\0";
/// The segment format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const READ_CHUNK: usize = 256 << 10;
/// Pauses before each new try of a read that failed with `EIO`: an I/O error is no proof
/// that the bytes are damaged (a cable, a controller reset), so it is tried again before a
/// reader calls them lost.
const READ_RETRY_PAUSES: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(40),
    Duration::from_millis(150),
];
/// The unit a block device fails reads in, at most; what stays unreadable is skipped by it.
const READ_PAGE: u64 = 4096;
/// Linux's `EIO`.
const EIO: i32 = 5;

pub(crate) fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// Parses `{first_seq:020}.seg`; anything else is not a segment.
pub(crate) fn parse_segment_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn encode_header(first_seq: Seq, created: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_seq.to_le_bytes());
    h[20..28].copy_from_slice(&created.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the header of a segment file says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    /// Intact, and it agrees with the file name.
    Valid,
    /// Damaged or disagreeing with the name, in a file that is ours (its magic is intact,
    /// or it holds an intact record): its records are still read, and its first sequence
    /// number is taken from its name, never from the damaged header.
    Damaged,
    /// No segment magic and no intact record: not a segment of ours, or one that holds
    /// nothing any more. Ignored.
    Foreign,
}

/// Checks the header bytes of the segment `path`. Without the magic, the answer is
/// [`HeaderCheck::Foreign`]; the caller may still find records in it.
pub(crate) fn check_header(path: &Path, bytes: &[u8], first_seq: Seq) -> Result<HeaderCheck> {
    if bytes.len() < SEGMENT_HEADER_LEN || bytes[0..8] != SEGMENT_MAGIC {
        return Ok(HeaderCheck::Foreign);
    }
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if crc32c::crc32c(&bytes[..28]) != crc {
        return Ok(HeaderCheck::Damaged);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&bytes[12..20]);
    if u64::from_le_bytes(s) != first_seq {
        return Ok(HeaderCheck::Damaged);
    }
    Ok(HeaderCheck::Valid)
}

/// Syncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates `dir` and any missing parent durably: each directory it creates is synced, and
/// so is the directory holding its name; an existing `dir` and its parent are synced too
/// (a run that created them may have lost power before it synced them). Without this a
/// power cut can take the whole log directory away, and a restart would find an empty log.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if !dir.is_dir() {
        if let Some(parent) = parent {
            if !parent.is_dir() {
                create_dir_durable(parent)?;
            }
        }
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io("create WAL directory", dir, e)),
        }
    }
    sync_dir(dir)?;
    if let Some(parent) = parent {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Creates a new, empty segment durably: temp file, header, fdatasync, rename, dir fsync.
/// On failure no new name is left behind: a `….seg` whose directory entry was not synced
/// would otherwise sit among the segments, claiming a first seq that the records appended
/// meanwhile to the active segment also have.
pub(crate) fn create_segment(dir: &Path, first_seq: Seq, now: u64) -> Result<File> {
    let path = segment_path(dir, first_seq);
    let tmp = path.with_extension("seg.tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .mode(0o600)
        .write(true)
        .read(true)
        .open(&tmp)
        .map_err(|e| Error::io("create segment", &tmp, e))?;
    let written = file
        .write_all(&encode_header(first_seq, now))
        .and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write segment header", &tmp, e));
    }
    // A fresh file may replace an empty segment of the same name (see `append/rollover.rs`).
    let replaces = path.exists();
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("rename segment", &path, e));
    }
    if let Err(e) = sync_dir(dir) {
        if !replaces {
            let _ = fs::remove_file(&path);
        }
        return Err(e);
    }
    Ok(file)
}

/// Whether the segment `path` (of `len` bytes) holds at least one intact record.
pub(crate) fn holds_a_record(
    path: &Path,
    first_seq: Seq,
    len: u64,
    max_payload: usize,
) -> Result<bool> {
    let mut scanner = SegmentScanner::open(path.to_path_buf(), first_seq, max_payload)?;
    scanner.set_limit(len, None);
    loop {
        match scanner.next()? {
            ScanItem::Record { .. } => return Ok(true),
            ScanItem::Damaged { .. } => {}
            ScanItem::End => return Ok(false),
        }
    }
}

/// One step of a [`SegmentScanner`].
#[derive(Debug)]
pub(crate) enum ScanItem {
    /// An intact record.
    Record {
        offset: u64,
        seq: Seq,
        timestamp: u64,
        kind: RecordKind,
        payload: Bytes,
    },
    /// `len` bytes at `offset` that are not intact records; scanning resumes after them at
    /// the next intact record (or at the limit).
    Damaged { offset: u64, len: u64 },
    /// Nothing more before the limit.
    End,
}

/// Reads the records of one segment in order, up to a limit the caller moves forward as
/// the appender publishes more. After damage it resynchronises at the next intact record:
/// the next occurrence of the record magic whose length fits, whose sequence number is
/// plausible and whose checksum matches.
pub(crate) struct SegmentScanner {
    path: PathBuf,
    file: File,
    first_seq: Seq,
    buf: Bytes,
    buf_start: u64,
    pos: u64,
    limit: u64,
    max_payload: usize,
    last_seq: Option<Seq>,
    /// Exclusive upper bound for plausible sequence numbers, when known.
    seq_end: Option<Seq>,
    /// See [`SegmentScanner::tolerate_unreadable`].
    tolerate_unreadable: bool,
    /// Pages (by offset) that failed every try: they read as zeros.
    unreadable: BTreeSet<u64>,
}

impl SegmentScanner {
    pub(crate) fn open(path: PathBuf, first_seq: Seq, max_payload: usize) -> Result<Self> {
        let file = File::open(&path).map_err(|e| Error::io("open segment", &path, e))?;
        Ok(SegmentScanner {
            path,
            file,
            first_seq,
            buf: Bytes::new(),
            buf_start: 0,
            pos: SEGMENT_HEADER_LEN as u64,
            limit: SEGMENT_HEADER_LEN as u64,
            max_payload,
            last_seq: None,
            seq_end: None,
            tolerate_unreadable: false,
            unreadable: BTreeSet::new(),
        })
    }

    /// For readers: a page that still fails with `EIO` after every try reads as zeros — as
    /// damage, which the reader skips and reports as a `wal_corrupt` gap bounded by the
    /// intact records around it — instead of failing every read from here on. (Recovery and
    /// the tools keep the error: they must not cut or judge what they could not read.)
    pub(crate) fn tolerate_unreadable(&mut self) {
        self.tolerate_unreadable = true;
    }

    pub(crate) fn first_seq(&self) -> Seq {
        self.first_seq
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes up to `limit` may be interpreted; the caller guarantees they are written.
    pub(crate) fn set_limit(&mut self, limit: u64, seq_end: Option<Seq>) {
        self.limit = limit.max(self.limit);
        self.seq_end = seq_end;
    }

    /// Starts at `offset` (a record boundary the caller knows) with `last_seq` before it.
    pub(crate) fn seek(&mut self, offset: u64, last_seq: Option<Seq>) {
        self.pos = offset;
        self.last_seq = last_seq;
    }

    /// The sequence number of an intact record at `offset`, if there is one.
    pub(crate) fn peek_seq(&mut self, offset: u64) -> Result<Option<Seq>> {
        let saved = self.last_seq.take();
        let found = self.record_at(offset)?.map(|(seq, ..)| seq);
        self.last_seq = saved;
        Ok(found)
    }

    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    pub(crate) fn next(&mut self) -> Result<ScanItem> {
        if self.pos >= self.limit {
            return Ok(ScanItem::End);
        }
        let at = self.pos;
        let mut found = self.record_at(at)?;
        if found.is_none() {
            // Read the bytes again from the file before calling them damaged: what was read
            // once may have been a passing fault, and a wal_corrupt gap record is final.
            self.buf = Bytes::new();
            self.buf_start = at;
            found = self.record_at(at)?;
        }
        if let Some((seq, timestamp, kind, total)) = found {
            let start = (at - self.buf_start) as usize;
            let payload = self.buf.slice(start + RECORD_HEADER_LEN..start + total);
            self.pos = at + total as u64;
            self.last_seq = Some(seq);
            return Ok(ScanItem::Record {
                offset: at,
                seq,
                timestamp,
                kind,
                payload,
            });
        }
        let next = self.resync(at + 1)?.unwrap_or(self.limit);
        self.pos = next;
        Ok(ScanItem::Damaged {
            offset: at,
            len: next - at,
        })
    }

    /// The intact, plausible record at `at`, if there is one, leaving it buffered.
    fn record_at(&mut self, at: u64) -> Result<Option<(Seq, u64, RecordKind, usize)>> {
        let mut need = RECORD_HEADER_LEN;
        loop {
            if at + need as u64 > self.limit {
                return Ok(None);
            }
            self.fill(at, need)?;
            let avail = (self.buf_end() - at) as usize;
            if avail < need {
                return Ok(None);
            }
            let window = &self.buf[(at - self.buf_start) as usize..];
            match record::decode(window, self.max_payload) {
                Decoded::Record {
                    seq,
                    timestamp,
                    kind,
                    total,
                } => {
                    return Ok(self.plausible(seq).then_some((seq, timestamp, kind, total)));
                }
                Decoded::Incomplete { need: n } => {
                    if n <= need {
                        return Ok(None);
                    }
                    need = n;
                }
                Decoded::Malformed(_) => return Ok(None),
            }
        }
    }

    fn plausible(&self, seq: Seq) -> bool {
        seq >= self.first_seq
            && self.last_seq.is_none_or(|l| seq > l)
            && self.seq_end.is_none_or(|end| seq < end)
    }

    /// The offset of the next intact record at or after `from`, if any before the limit.
    fn resync(&mut self, from: u64) -> Result<Option<u64>> {
        let mut s = from;
        while s + (RECORD_HEADER_LEN as u64) <= self.limit {
            self.fill(s, READ_CHUNK)?;
            let end = self.buf_end();
            if end <= s {
                return Ok(None);
            }
            let window = &self.buf[(s - self.buf_start) as usize..];
            match memchr::memmem::find(window, &RECORD_MAGIC) {
                Some(i) => {
                    let candidate = s + i as u64;
                    if self.record_at(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    s = candidate + 1;
                }
                // The magic may straddle the end of the window.
                None => s = end.saturating_sub(RECORD_MAGIC.len() as u64 - 1).max(s + 1),
            }
        }
        Ok(None)
    }

    fn buf_end(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Makes the buffer hold `[at, at + n)`, or as much of it as lies before the limit.
    fn fill(&mut self, at: u64, n: usize) -> Result<()> {
        let want_end = (at + n as u64).min(self.limit);
        if at >= self.buf_start && want_end <= self.buf_end() {
            return Ok(());
        }
        let read_end = (at + n.max(READ_CHUNK) as u64).min(self.limit);
        let want = (read_end - at) as usize;
        let mut fresh = Vec::with_capacity(want);
        if at >= self.buf_start && at < self.buf_end() {
            fresh.extend_from_slice(&self.buf[(at - self.buf_start) as usize..]);
        }
        let mut filled = fresh.len();
        if filled < want && !self.known_bad(at + filled as u64, want - filled) {
            // The common case reads straight into the buffer's spare capacity (no zero-fill
            // of 256 KiB per read); a short read (the end of the file, an error) leaves the
            // rest to the careful loop below, which retries and tells unreadable pages apart.
            filled += self.read_uninit(&mut fresh, at + filled as u64, want - filled);
        }
        fresh.resize(want, 0);
        while filled < fresh.len() {
            let n = self.read_some(&mut fresh[filled..], at + filled as u64)?;
            if n == 0 {
                // The file is shorter than the limit: nothing beyond can be read.
                self.limit = at + filled as u64;
                break;
            }
            filled += n;
        }
        fresh.truncate(filled);
        self.buf = Bytes::from(fresh);
        self.buf_start = at;
        Ok(())
    }
}

impl SegmentScanner {
    /// Reads at `pos` into `buf` (some bytes, 0 at the end of the file), trying a failed
    /// read again; with [`SegmentScanner::tolerate_unreadable`], a page that never reads
    /// comes back as zeros and the pages around it as they are.
    /// Whether a page of `[pos, pos + len)` is known to be unreadable.
    fn known_bad(&self, pos: u64, len: usize) -> bool {
        let first_page = pos / READ_PAGE * READ_PAGE;
        self.unreadable
            .range(first_page..pos + len as u64)
            .next()
            .is_some()
    }

    /// Appends up to `len` bytes read at `pos` to `vec` without zero-filling its spare
    /// capacity first (`Read::read_to_end` on a `File` reads into uninitialised memory).
    /// Returns how many it got; a short count (end of file, an error) leaves the rest to
    /// [`SegmentScanner::read_some`].
    fn read_uninit(&mut self, vec: &mut Vec<u8>, pos: u64, len: usize) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let before = vec.len();
        let mut file = &self.file;
        if file.seek(SeekFrom::Start(pos)).is_err() {
            return 0;
        }
        // An error keeps what was read before it; the careful path reads the rest again.
        let _ = file.take(len as u64).read_to_end(vec);
        vec.len() - before
    }

    fn read_some(&mut self, buf: &mut [u8], pos: u64) -> Result<usize> {
        let first_page = pos / READ_PAGE * READ_PAGE;
        let known_bad = self.known_bad(pos, buf.len());
        if !known_bad {
            match read_retrying(&self.file, buf, pos) {
                Ok(n) => return Ok(n),
                Err(e) if self.tolerate_unreadable && e.raw_os_error() == Some(EIO) => {}
                Err(e) => return Err(Error::io("read segment", &self.path, e)),
            }
        }
        let piece_len = ((first_page + READ_PAGE - pos) as usize).min(buf.len());
        let piece = &mut buf[..piece_len];
        if !self.unreadable.contains(&first_page) {
            match read_retrying(&self.file, piece, pos) {
                Ok(n) => return Ok(n),
                Err(e) if e.raw_os_error() == Some(EIO) => {
                    tracing::error!(path = %self.path.display(), offset = first_page, bytes = READ_PAGE, tries = READ_RETRY_PAUSES.len() + 1, "WAL segment block unreadable; the records it holds will be reported lost");
                    self.unreadable.insert(first_page);
                }
                Err(e) => return Err(Error::io("read segment", &self.path, e)),
            }
        }
        piece.fill(0);
        Ok(piece_len)
    }
}

/// `read_at`, tried again after each of [`READ_RETRY_PAUSES`] while it fails with `EIO`.
fn read_retrying(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut pauses = READ_RETRY_PAUSES.iter();
    loop {
        match file.read_at(buf, pos) {
            Err(e) if e.raw_os_error() == Some(EIO) => match pauses.next() {
                Some(pause) => std::thread::sleep(*pause),
                None => return Err(e),
            },
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_read_damaged_once_is_read_again_before_it_is_called_damaged() {
        // The first read of record 2 returned bad bytes (a passing fault: the file is
        // repaired before the scanner reaches it, as a retried read would find it).
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = encode_header(1, 0).to_vec();
        let mut offsets = Vec::new();
        for seq in 1..=3u64 {
            offsets.push(bytes.len());
            record::encode_into(&mut bytes, seq, 0, RecordKind::Event, &[b'p'; 100]);
        }
        let good = bytes.clone();
        bytes[offsets[1] + RECORD_HEADER_LEN + 10] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let mut scanner = SegmentScanner::open(path.clone(), 1, 1 << 20).unwrap();
        scanner.set_limit(bytes.len() as u64, None);
        let ScanItem::Record { seq: 1, .. } = scanner.next().unwrap() else {
            panic!("record 1 first");
        };
        fs::write(&path, &good).unwrap();
        for want in 2..=3u64 {
            match scanner.next().unwrap() {
                ScanItem::Record { seq, .. } => assert_eq!(seq, want),
                other => panic!("expected record {want}, got {other:?}"),
            }
        }
        // Bytes that are damaged on disk stay damaged.
        fs::write(&path, &bytes).unwrap();
        let mut scanner = SegmentScanner::open(path, 1, 1 << 20).unwrap();
        scanner.set_limit(bytes.len() as u64, None);
        assert!(matches!(
            scanner.next().unwrap(),
            ScanItem::Record { seq: 1, .. }
        ));
        assert!(matches!(scanner.next().unwrap(), ScanItem::Damaged { .. }));
        assert!(matches!(
            scanner.next().unwrap(),
            ScanItem::Record { seq: 3, .. }
        ));
    }
}
