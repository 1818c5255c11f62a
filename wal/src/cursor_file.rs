//! The durable state of one cursor: a small file with two slots, written alternately.
//! An update rewrites the older slot in place and `fdatasync`s it, so a crash at any
//! moment leaves at least one intact slot; the intact slot with the highest generation
//! wins. No rename, no directory sync per acknowledgement.
//!
//! # Layout (`{name}.cursor`, little-endian)
//!
//! ```text
//! slot A at offset 0, slot B at offset 512, each:
//! offset  size  field
//!      0     8  magic       "GAPLCUR1"
//!      8     8  generation  +1 per update; slot = generation % 2
//!     16     8  next        first sequence number not yet acknowledged
//!     24     8  hint_seg    first seq of the segment holding `next` (0: unknown)
//!     32     8  hint_off    offset of `next` in that segment
//!     40     4  crc32c      CRC32C of bytes 0 .. 40
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::record::Seq;
use crate::segment::sync_dir;

const MAGIC: [u8; 8] = *b"GAPLCUR1";
const SLOT_LEN: usize = 44;
const SLOT_STRIDE: u64 = 512;

/// The suffix of cursor files.
pub(crate) const CURSOR_SUFFIX: &str = ".cursor";

/// What a cursor file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CursorPosition {
    pub next: Seq,
    pub hint: Option<(Seq, u64)>,
}

pub(crate) struct CursorFile {
    path: PathBuf,
    file: File,
    generation: u64,
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(crate) fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{CURSOR_SUFFIX}"))
}

fn encode_slot(generation: u64, pos: CursorPosition) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    b[16..24].copy_from_slice(&pos.next.to_le_bytes());
    let (seg, off) = pos.hint.unwrap_or((0, 0));
    b[24..32].copy_from_slice(&seg.to_le_bytes());
    b[32..40].copy_from_slice(&off.to_le_bytes());
    let crc = crc32c::crc32c(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8]) -> Option<(u64, CursorPosition)> {
    if b.len() < SLOT_LEN || b[0..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([b[40], b[41], b[42], b[43]]);
    if crc32c::crc32c(&b[..40]) != crc {
        return None;
    }
    let u = |at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    let seg = u(24);
    Some((
        u(8),
        CursorPosition {
            next: u(16),
            hint: (seg != 0).then(|| (seg, u(32))),
        },
    ))
}

impl CursorFile {
    /// Reads a cursor file. `Ok(None)` means neither slot is intact: the position is
    /// unknown and the caller falls back to the oldest record (duplicates, never a loss).
    pub(crate) fn load(path: &Path) -> Result<(CursorFile, Option<CursorPosition>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open cursor", path, e))?;
        let best = newest_slot(&file, path)?;
        let generation = best.map_or(0, |(g, _)| g);
        Ok((
            CursorFile {
                path: path.to_path_buf(),
                file,
                generation,
            },
            best.map(|(_, p)| p),
        ))
    }

    /// Creates a cursor file holding `pos`, durably (file and directory entry).
    pub(crate) fn create(dir: &Path, name: &str, pos: CursorPosition) -> Result<CursorFile> {
        let path = cursor_path(dir, name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("create cursor", &path, e))?;
        let mut cf = CursorFile {
            path,
            file,
            generation: 0,
        };
        cf.store(pos)?;
        sync_dir(dir)?;
        Ok(cf)
    }

    /// Persists `pos` crash-atomically: the other slot keeps the previous position until
    /// this one is on disk.
    pub(crate) fn store(&mut self, pos: CursorPosition) -> Result<()> {
        let generation = self.generation + 1;
        let slot = encode_slot(generation, pos);
        self.file
            .write_all_at(&slot, (generation % 2) * SLOT_STRIDE)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("write cursor", &self.path, e))?;
        self.generation = generation;
        Ok(())
    }
}

/// Reads a cursor file's position without opening it for writing (for a read-only open
/// and for recovery). `Ok(None)`: neither slot is intact, as for [`CursorFile::load`].
pub(crate) fn read_position(path: &Path) -> Result<Option<CursorPosition>> {
    let file = File::open(path).map_err(|e| Error::io("open cursor", path, e))?;
    Ok(newest_slot(&file, path)?.map(|(_, p)| p))
}

/// The intact slot with the highest generation, if any.
fn newest_slot(file: &File, path: &Path) -> Result<Option<(u64, CursorPosition)>> {
    let mut best: Option<(u64, CursorPosition)> = None;
    for slot in 0..2 {
        let mut b = [0u8; SLOT_LEN];
        let n = read_fully_at(file, &mut b, slot * SLOT_STRIDE)
            .map_err(|e| Error::io("read cursor", path, e))?;
        if let Some((generation, pos)) = decode_slot(&b[..n]) {
            if best.is_none_or(|(g, _)| generation > g) {
                best = Some((generation, pos));
            }
        }
    }
    Ok(best)
}

fn read_fully_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins_and_a_torn_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let pos = |next| CursorPosition { next, hint: None };
        let mut cf = CursorFile::create(dir.path(), "sink", pos(5)).unwrap();
        cf.store(pos(9)).unwrap();
        let path = cursor_path(dir.path(), "sink");
        assert_eq!(CursorFile::load(&path).unwrap().1, Some(pos(9)));
        // Tear the newest slot (generation 2 lives in slot 0).
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xAB; 10], 12).unwrap();
        assert_eq!(CursorFile::load(&path).unwrap().1, Some(pos(5)));
    }

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        assert!(valid_name("platform-1.eu_west"));
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
