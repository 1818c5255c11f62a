//! Shared set-up for durafs's tests: a backing directory and a mount point in temp dirs,
//! and the few file calls the tests make, each syncing only when asked to.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use durafs::{CutMode, CutReport, DuraFs, MountHandle, MountOptions};
use tempfile::TempDir;

/// A mounted durafs over a fresh backing directory. Fields drop in order: the mount goes
/// before the directories under it.
pub struct Rig {
    handle: Option<MountHandle>,
    pub backing: TempDir,
    pub mnt: TempDir,
    seed: u64,
}

impl Rig {
    pub fn new() -> Rig {
        Rig::with_seed(42)
    }

    pub fn with_seed(seed: u64) -> Rig {
        let backing = tempfile::tempdir().unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let mut rig = Rig {
            handle: None,
            backing,
            mnt,
            seed,
        };
        rig.remount();
        rig
    }

    /// Mounts again (after a cut) with the same seed.
    pub fn remount(&mut self) {
        assert!(self.handle.is_none(), "still mounted");
        let h = DuraFs::mount(
            self.backing.path(),
            self.mnt.path(),
            MountOptions {
                seed: Some(self.seed),
            },
        )
        .unwrap_or_else(|e| {
            panic!("mounting durafs needs root and /dev/fuse (CI runs as root): {e}")
        });
        self.handle = Some(h);
    }

    pub fn handle(&self) -> &MountHandle {
        self.handle.as_ref().expect("mounted")
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }

    /// A path inside the backing directory.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.path().join(rel)
    }

    pub fn cut(&mut self, mode: CutMode) -> CutReport {
        self.handle.take().expect("mounted").cut(mode).unwrap()
    }

    /// Cuts with `mode` and mounts again.
    pub fn cut_and_remount(&mut self, mode: CutMode) -> CutReport {
        let r = self.cut(mode);
        self.remount();
        r
    }
}

/// Creates or truncates `path` and writes `data`, without any sync.
pub fn write(path: &Path, data: &[u8]) {
    File::create(path).unwrap().write_all(data).unwrap();
}

/// Creates or truncates `path`, writes `data` and fsyncs the file (not its directory).
pub fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Appends `data` to `path` (O_APPEND), without any sync.
pub fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// fsync of a directory: its entries become durable.
pub fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// A file whose bytes say where they are, so a kept prefix or page can be recognised.
pub fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) | 1)
        .collect()
}
