//! What makes a file the same file: its device and inode ([`FileId`]), its birth time
//! where the file system reports one, and a [`Fingerprint`] of its first bytes. Never its
//! path. Owns only the reading and comparing; the tailer decides what a mismatch means.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::UNIX_EPOCH;

/// How many leading bytes a full fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 1024;

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

    /// Whether the file's current first bytes `head` (read up to [`FINGERPRINT_BYTES`])
    /// still start with what this fingerprint covered.
    pub fn matches(&self, head: &[u8]) -> bool {
        let len = self.len as usize;
        head.len() >= len && fnv1a(&head[..len]) == self.hash
    }
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
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
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
