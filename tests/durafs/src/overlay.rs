//! One regular file's contents: the durable bytes in its backing file, and over them the
//! unsynced writes in memory, page by page. Owns read merging, writes, truncation, the
//! flush that `fsync` does, the forgetting a failed `fsync` does, and what a cut keeps.
//! Knows nothing of names: where the backing file lives is the namespace's business.
//!
//! - `durable_len` is the backing file's length: what survives a cut.
//! - `len` is the live length that `stat` shows.
//! - `base_len` is how much of the backing file is still part of the live view: a truncate
//!   below `durable_len` is pending until the next `fsync`, and bytes past it read as zeros.
//! - `pages` holds every page written since the last `fsync`, as the live view has it.
//!   Invariant: live bytes at or past `len` are zero, in pages and in reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::rng::Rng;

/// The page size at which unsynced data is tracked and at which `pages` cuts choose.
pub const PAGE: u64 = 4096;

/// How a cut treats the writes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Every unsynced write is lost.
    Drop,
    /// Each file keeps a random prefix of its unsynced bytes, taken in offset order: as if
    /// the disk wrote the dirty pages front to back and lost power partway.
    Torn,
    /// Each unsynced 4 KiB page of each file survives, or not, by a coin toss.
    Pages,
}

impl std::str::FromStr for CutMode {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(CutMode::Drop),
            "torn" => Ok(CutMode::Torn),
            "pages" => Ok(CutMode::Pages),
            _ => Err("the cut mode is drop, torn or pages"),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct FileData {
    /// The backing file, once it has one (created on the first `fsync` or directory sync).
    pub backing: Option<File>,
    pub durable_len: u64,
    pub base_len: u64,
    pub len: u64,
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl FileData {
    /// A file whose backing file holds `len` bytes, all durable.
    pub fn durable(len: u64) -> Self {
        FileData {
            backing: None,
            durable_len: len,
            base_len: len,
            len,
            pages: BTreeMap::new(),
        }
    }

    /// Bytes written (or zeroed) since the last sync, counted by whole dirty pages.
    pub fn pending_bytes(&self) -> u64 {
        self.dirty_ranges().map(|(_, b)| b.len() as u64).sum()
    }

    /// Reads the live view. `backing` must be open if `base_len > 0`.
    pub fn read(&self, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let base_end = self.base_len.min(end);
        if offset < base_end {
            if let Some(f) = &self.backing {
                read_fully_at(f, &mut out[..(base_end - offset) as usize], offset)?;
            }
        }
        for (&p, page) in self.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let (from, to) = ((p * PAGE).max(offset), ((p + 1) * PAGE).min(end));
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - p * PAGE) as usize..(to - p * PAGE) as usize]);
        }
        Ok(out)
    }

    /// Writes into the live view; the bytes are unsynced until [`FileData::sync`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        for p in offset / PAGE..=(end - 1) / PAGE {
            self.dirty(p)?;
            let (from, to) = ((p * PAGE).max(offset), ((p + 1) * PAGE).min(end));
            if let Some(page) = self.pages.get_mut(&p) {
                page[(from - p * PAGE) as usize..(to - p * PAGE) as usize]
                    .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            }
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Changes the live length (`ftruncate`, `set_len`, `fallocate` growing the file).
    pub fn set_len(&mut self, new: u64) -> io::Result<()> {
        if new < self.len {
            self.pages.retain(|&p, _| p * PAGE < new);
            if !new.is_multiple_of(PAGE) {
                let p = new / PAGE;
                self.dirty(p)?;
                if let Some(page) = self.pages.get_mut(&p) {
                    page[(new % PAGE) as usize..].fill(0);
                }
            }
            self.base_len = self.base_len.min(new);
        }
        self.len = new;
        Ok(())
    }

    /// `fsync`: makes the live view durable in `backing` (which the caller has opened).
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(f) = &self.backing else {
            return Err(io::Error::other("sync of a file without a backing file"));
        };
        if self.base_len < self.durable_len {
            f.set_len(self.base_len)?;
        }
        for (at, bytes) in self.dirty_ranges() {
            f.write_all_at(bytes, at)?;
        }
        f.set_len(self.len)?;
        f.sync_data()?;
        self.pages.clear();
        self.durable_len = self.len;
        self.base_len = self.len;
        Ok(())
    }

    /// A failed `fsync`: the unsynced writes are gone for good, and the live view falls
    /// back to the durable bytes, so that no later `fsync` can make them durable.
    pub fn forget_unsynced(&mut self) {
        self.pages.clear();
        self.len = self.durable_len;
        self.base_len = self.durable_len;
    }

    /// The power cut: writes to the backing file those unsynced bytes that `mode` lets
    /// survive, growing it where they lie past its end. A pending truncate is never
    /// applied. Returns the number of unsynced bytes kept.
    pub fn cut(&mut self, mode: CutMode, rng: &mut Rng) -> io::Result<u64> {
        let Some(f) = &self.backing else {
            return Ok(0);
        };
        let mut kept = 0;
        match mode {
            CutMode::Drop => {}
            CutMode::Torn => {
                let mut budget = rng.up_to(self.pending_bytes());
                for (at, bytes) in self.dirty_ranges() {
                    let n = budget.min(bytes.len() as u64) as usize;
                    if n == 0 {
                        break;
                    }
                    f.write_all_at(&bytes[..n], at)?;
                    kept += n as u64;
                    budget -= n as u64;
                }
            }
            CutMode::Pages => {
                for (at, bytes) in self.dirty_ranges() {
                    if rng.coin() {
                        f.write_all_at(bytes, at)?;
                        kept += bytes.len() as u64;
                    }
                }
            }
        }
        self.pages.clear();
        Ok(kept)
    }

    /// Each dirty page's live bytes, cut at `len`, in offset order.
    fn dirty_ranges(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.pages.iter().filter_map(|(&p, page)| {
            let at = p * PAGE;
            (at < self.len).then(|| (at, &page[..(self.len - at).min(PAGE) as usize]))
        })
    }

    /// Makes page `p` dirty, loading what the live view holds there.
    fn dirty(&mut self, p: u64) -> io::Result<()> {
        if self.pages.contains_key(&p) {
            return Ok(());
        }
        let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
        let at = p * PAGE;
        if at < self.base_len {
            if let Some(f) = &self.backing {
                let n = (self.base_len - at).min(PAGE) as usize;
                read_fully_at(f, &mut page[..n], at)?;
            }
        }
        self.pages.insert(p, page);
        Ok(())
    }
}

/// Fills `buf` from `at`; bytes past the end of the file stay as they were (zeros).
fn read_fully_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backed(content: &[u8]) -> (tempfile::TempDir, FileData) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let mut d = FileData::durable(content.len() as u64);
        d.backing = Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap(),
        );
        (dir, d)
    }

    #[test]
    fn reads_merge_unsynced_writes_over_durable_bytes() {
        let (_dir, mut d) = backed(&[1u8; 10_000]);
        d.write(4090, &[2u8; 20]).unwrap();
        let r = d.read(4085, 30).unwrap();
        assert_eq!(&r[..5], &[1u8; 5]);
        assert_eq!(&r[5..25], &[2u8; 20]);
        assert_eq!(&r[25..], &[1u8; 5]);
    }

    #[test]
    fn truncate_then_grow_reads_zeros_where_durable_bytes_were() {
        let (_dir, mut d) = backed(&[7u8; 9000]);
        d.set_len(100).unwrap();
        d.set_len(9000).unwrap();
        let r = d.read(0, 9000).unwrap();
        assert_eq!(&r[..100], &[7u8; 100]);
        assert!(r[100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sync_makes_the_live_view_the_backing_file() {
        let (dir, mut d) = backed(&[7u8; 9000]);
        d.set_len(50).unwrap();
        d.write(8000, b"tail").unwrap();
        let live = d.read(0, 10_000).unwrap();
        d.sync().unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), live);
        assert_eq!(d.pending_bytes(), 0);
    }

    #[test]
    fn torn_cut_keeps_a_prefix_of_the_unsynced_bytes() {
        let (dir, mut d) = backed(b"durable");
        d.write(7, &[9u8; 20_000]).unwrap();
        d.cut(CutMode::Torn, &mut Rng::new(3)).unwrap();
        let after = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&after[..7], b"durable");
        assert!(after[7..].iter().all(|&b| b == 9));
    }
}
