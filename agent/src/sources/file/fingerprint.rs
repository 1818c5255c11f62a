//! What makes a file the same file: its device and inode ([`FileId`]), its birth time
//! where the file system reports one, a [`Fingerprint`] of its first bytes, and an anchor:
//! a fingerprint of the bytes just before the offset reading resumes at. Never its path.
//! Owns only the reading and comparing; the tailer decides what a mismatch means.
//!
//! The identity rule: a file is resumed at an offset only when its device, inode and birth
//! time are the ones recorded, its first bytes still start with the recorded fingerprint,
//! **and** the [`ANCHOR_BYTES`] bytes before the offset are the ones read there. The last
//! check catches a file truncated and rewritten in place whose new content starts like the
//! old one and has already grown past the old offset. When the check cannot be made (the
//! bytes cannot be read, or an older checkpoint recorded no anchor) the file is read again
//! from its start: duplicates, never a gap.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::UNIX_EPOCH;

/// How many leading bytes a full fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 1024;

/// How many bytes before an offset its anchor covers (fewer near the start of a file).
pub const ANCHOR_BYTES: usize = 1024;

/// Device and inode: unique among the files that exist at one moment. While we hold a
/// file open its inode cannot be reused, so for an open file this alone is its identity;
/// across restarts it needs the [`Fingerprint`] beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity in `meta`.
    pub fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Birth time in nanoseconds since the epoch, where the file system keeps one (statx
/// `btime`). A reused inode gets a new one, which catches reuse even when the new file's
/// first bytes equal the old file's.
pub fn created_nanos(meta: &Metadata) -> Option<u64> {
    let t = meta.created().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_nanos() as u64)
}

/// A 64-bit FNV-1a hash of the first `len` bytes of a file. `len` is the file's size when
/// it was taken, up to [`FINGERPRINT_BYTES`]; a fingerprint of a short file is widened as
/// the file grows, after checking that its old prefix is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u32,
    /// FNV-1a 64 of those bytes.
    pub hash: u64,
}

impl Default for Fingerprint {
    /// The fingerprint of an empty file: every file matches it.
    fn default() -> Self {
        Fingerprint::of(&[])
    }
}

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Fingerprint {
            len: bytes.len() as u32,
            hash: fnv1a(bytes),
        }
    }

    /// The fingerprint of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = FNV_OFFSET;
        let mut len = 0;
        for p in parts {
            h = fnv1a_from(h, p);
            len += p.len();
        }
        Fingerprint {
            len: len as u32,
            hash: h,
        }
    }

    /// Whether the file's current first bytes `head` (read up to [`FINGERPRINT_BYTES`])
    /// still start with what this fingerprint covered.
    pub fn matches(&self, head: &[u8]) -> bool {
        let len = self.len as usize;
        head.len() >= len && fnv1a(&head[..len]) == self.hash
    }
}

/// The bytes an anchor at `offset` covers: `[offset - len, offset)` with
/// `len = min(offset, ANCHOR_BYTES)`.
pub fn anchor_len(offset: u64) -> usize {
    offset.min(ANCHOR_BYTES as u64) as usize
}

/// The anchor of `data`, which ends at the anchor's offset: the fingerprint of its last
/// `anchor_len(offset)` bytes. `data` must hold at least that many.
pub fn anchor_of(data: &[u8], offset: u64) -> Fingerprint {
    let len = anchor_len(offset).min(data.len());
    Fingerprint::of(&data[data.len() - len..])
}

/// Reads the anchor of `file` at `offset` (the fingerprint of the bytes just before it).
/// `Ok(None)` when the file is shorter than `offset`.
pub fn read_anchor(file: &File, offset: u64, buf: &mut Vec<u8>) -> io::Result<Option<Fingerprint>> {
    let len = anchor_len(offset);
    buf.clear();
    buf.resize(len, 0);
    let n = read_full_at(file, buf, offset - len as u64)?;
    if n < len {
        return Ok(None);
    }
    Ok(Some(Fingerprint::of(buf)))
}

/// Whether the bytes of `file` just before `offset` are still the ones `anchor` recorded.
/// `Ok(false)` when they differ or the file is shorter than `offset`.
pub fn anchor_holds(
    file: &File,
    offset: u64,
    anchor: &Fingerprint,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    let len = anchor.len as usize;
    if len as u64 > offset {
        return Ok(false);
    }
    buf.clear();
    buf.resize(len, 0);
    let n = read_full_at(file, buf, offset - len as u64)?;
    Ok(n == len && fnv1a(buf) == anchor.hash)
}

/// Reads up to [`FINGERPRINT_BYTES`] from the start of `file` into `buf` (cleared first).
pub fn read_head(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    buf.resize(FINGERPRINT_BYTES, 0);
    let n = read_full_at(file, buf, 0)?;
    buf.truncate(n);
    Ok(())
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher), which a
/// value persisted in checkpoints needs; fast enough for 1 KiB a few times a second.
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a continued from the state `h`.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            Fingerprint::of_parts(&[b"foo", b"", b"bar"]),
            Fingerprint::of(b"foobar")
        );
    }

    #[test]
    fn a_fingerprint_matches_a_head_that_starts_with_its_bytes() {
        let fp = Fingerprint::of(b"2024-01-01 first line\n");
        assert!(fp.matches(b"2024-01-01 first line\nsecond line\n"));
        assert!(!fp.matches(b"2024-01-02 first line\nsecond line\n"));
        assert!(!fp.matches(b"2024-01-01"), "a shorter head was truncated");
        assert!(Fingerprint::default().matches(b"anything"));
    }

    #[test]
    fn an_anchor_covers_the_bytes_just_before_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut text = vec![b'H'; 1100];
        text.extend_from_slice(b"\nold-1\n");
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = Vec::new();
        let at = text.len() as u64;
        let anchor = read_anchor(&file, at, &mut buf).unwrap().unwrap();
        assert_eq!(anchor.len, 1024);
        assert_eq!(anchor, anchor_of(&text, at));
        assert!(anchor_holds(&file, at, &anchor, &mut buf).unwrap());
        // Truncated and rewritten with the same first 1,100 bytes, grown past the offset.
        let mut new = vec![b'H'; 1100];
        new.extend_from_slice(b"\nnew-1\nnew-2\nnew-3\n");
        std::fs::write(&path, &new).unwrap();
        assert!(Fingerprint::of(&text[..1024]).matches(&new[..1024]));
        assert!(!anchor_holds(&file, at, &anchor, &mut buf).unwrap());
        // Near the start, the anchor is as long as the offset.
        assert_eq!(read_anchor(&file, 3, &mut buf).unwrap().unwrap().len, 3);
        assert_eq!(read_anchor(&file, 10_000, &mut buf).unwrap(), None);
        assert!(!anchor_holds(&file, 10_000, &anchor, &mut buf).unwrap());
    }

    #[test]
    fn read_head_reads_at_most_the_fingerprint_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 3000]).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = Vec::new();
        read_head(&file, &mut buf).unwrap();
        assert_eq!(buf.len(), FINGERPRINT_BYTES);
        std::fs::write(&path, b"short").unwrap();
        read_head(&file, &mut buf).unwrap();
        assert_eq!(buf, b"short");
    }
}
