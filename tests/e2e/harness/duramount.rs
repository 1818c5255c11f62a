//! [`DuraMount`]: a durafs mount (see `tests/durafs`) to put the agent's data_dir on, so that
//! a test can cut the power under it — everything not fsynced is lost, torn or kept by
//! pages, as the cut's mode says — mount the same backing directory again and start the
//! agent on what survived. Also arms durafs's injected faults (`EIO` on fsync, `ENOSPC`,
//! short writes, unreadable ranges). Served in-process; needs root and `/dev/fuse`.

use std::path::PathBuf;

pub use durafs::{CutMode, Fault};
use durafs::{CutReport, DuraFs, MountHandle, MountOptions};
use tempfile::TempDir;

/// A mounted durafs over a backing directory of its own. Dropping it unmounts cleanly
/// (everything synced, as at an orderly shutdown); the mount goes before the directories.
pub struct DuraMount {
    handle: Option<MountHandle>,
    backing: TempDir,
    mnt: TempDir,
    seed: u64,
    cuts: u64,
}

impl DuraMount {
    /// Mounts a fresh backing directory; `seed` drives the choices of `torn` and `pages`
    /// cuts, so that a failing run replays.
    pub fn new(seed: u64) -> DuraMount {
        let dir = |prefix| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("a temporary directory")
        };
        let mut m = DuraMount {
            handle: None,
            backing: dir("gapless-e2e-durafs-backing-"),
            mnt: dir("gapless-e2e-durafs-mnt-"),
            seed,
            cuts: 0,
        };
        m.mount();
        m
    }

    fn mount(&mut self) {
        assert!(self.handle.is_none(), "durafs is already mounted");
        // A new seed per mount, derived from the test's: every cut chooses differently, and
        // the test's seed still replays them all.
        let seed = self.seed ^ self.cuts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let handle = DuraFs::mount(
            self.backing.path(),
            self.mnt.path(),
            MountOptions { seed: Some(seed) },
        )
        .unwrap_or_else(|e| {
            panic!("mounting durafs needs root and /dev/fuse (CI runs as root): {e}")
        });
        self.handle = Some(handle);
    }

    /// A path inside the mount (the agent's data_dir goes there).
    pub fn join(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }

    /// The power cut: the mount goes away and the backing directory keeps the durable
    /// state only. Nothing may still use the mount (kill the agent first).
    pub fn cut(&mut self, mode: CutMode) -> CutReport {
        let handle = self.handle.take().expect("durafs is mounted");
        self.cuts += 1;
        handle
            .cut(mode)
            .unwrap_or_else(|e| panic!("durafs cut {mode:?}: {e}"))
    }

    /// Mounts the backing directory again (after a cut), as a machine that boots does.
    pub fn remount(&mut self) {
        self.mount();
    }

    /// Arms a fault ([`Fault::Clear`] disarms them all).
    pub fn inject(&self, fault: Fault) {
        self.handle
            .as_ref()
            .expect("durafs is mounted")
            .inject(fault);
    }

    /// How many times an injected fault fired so far on this mount.
    pub fn faults_fired(&self) -> u64 {
        self.handle
            .as_ref()
            .expect("durafs is mounted")
            .stats()
            .faults_fired
    }
}

impl Drop for DuraMount {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.unmount();
        }
    }
}

/// A seed from `var` (to replay a failed run) or from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be a number, not {s:?}")),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("the clock is after 1970");
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        }
    }
}

/// A small seeded generator (xorshift64) for the tests' own random choices: when to kill,
/// which cut mode, how much load.
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `low .. high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}
