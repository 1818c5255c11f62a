//! Mounting, the power cut and clean unmounting: the [`MountHandle`] a test or the
//! `durafs` binary holds. Owns the FUSE session and the mount point; the file system's
//! state is `tree.rs`'s, what the cut writes is `durable.rs`'s.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};
use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::fs::{lock, DuraFs};
use crate::overlay::CutMode;
use crate::rng::seed_from_time;
use crate::tree::State;

/// Options of [`DuraFs::mount`].
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Seeds the choices of `torn` and `pages` cuts. By default, one from the clock; the
    /// seed in use is [`MountHandle::seed`].
    pub seed: Option<u64>,
}

/// What the mount counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `fsync` and `fdatasync` calls on files, failed ones included.
    pub fsyncs: u64,
    /// `fsync` calls on directories.
    pub fsyncdirs: u64,
    /// Bytes written but not synced, counted by whole 4 KiB pages.
    pub bytes_pending: u64,
    /// Cuts (0 or 1: a cut ends the mount).
    pub cuts: u64,
    /// How many times an injected fault fired.
    pub faults_fired: u64,
}

impl Stats {
    /// One line of JSON, as the control socket's `stats` answers.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"fsyncs":{},"fsyncdirs":{},"bytes_pending":{},"cuts":{},"faults_fired":{}}}"#,
            self.fsyncs, self.fsyncdirs, self.bytes_pending, self.cuts, self.faults_fired
        )
    }
}

/// What a cut did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutReport {
    /// The mode of the cut.
    pub mode: CutMode,
    /// The seed of the mount, which replays the cut's choices.
    pub seed: u64,
    /// Unsynced bytes that the mode let survive.
    pub kept_bytes: u64,
}

/// A mounted durafs. Dropping it unmounts cleanly: everything is synced first, as a
/// machine that shuts down properly would. [`MountHandle::cut`] is the power cut.
pub struct MountHandle {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    /// The mount's device number as the kernel numbers FUSE connections.
    connection: u64,
    seed: u64,
}

impl DuraFs {
    /// Mounts `backing` on `mountpoint` (both existing directories). Everything already in
    /// `backing` counts as durable. Needs root (or a `/dev/fuse` the caller may mount with).
    pub fn mount(
        backing: impl AsRef<Path>,
        mountpoint: impl AsRef<Path>,
        opts: MountOptions,
    ) -> Result<MountHandle> {
        let seed = opts.seed.unwrap_or_else(seed_from_time);
        let state = Arc::new(Mutex::new(State::load(backing.as_ref(), seed)?));
        let mountpoint = mountpoint.as_ref();
        let mountpoint = mountpoint
            .canonicalize()
            .map_err(|e| Error::io("open mount point", mountpoint, e))?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("durafs".into()),
            MountOption::Subtype("durafs".into()),
        ];
        let fs = DuraFs {
            state: state.clone(),
        };
        let session = fuser::spawn_mount(fs, &mountpoint, &config)
            .map_err(|e| Error::io("mount", &mountpoint, e))?;
        let mut handle = MountHandle {
            state,
            session: Some(session),
            mountpoint: mountpoint.clone(),
            connection: 0,
            seed,
        };
        let dev = fs::metadata(&mountpoint)
            .map_err(|e| Error::io("stat mount point", &mountpoint, e))?
            .dev();
        handle.connection = kernel_dev(dev);
        Ok(handle)
    }
}

impl MountHandle {
    /// The seed that replays this mount's cut.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Arms a fault (or clears them all with [`Fault::Clear`]).
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.arm(fault);
    }

    /// What the mount counted so far.
    pub fn stats(&self) -> Stats {
        let st = lock(&self.state);
        Stats {
            fsyncs: st.counters.fsyncs,
            fsyncdirs: st.counters.fsyncdirs,
            bytes_pending: st.pending_bytes(),
            cuts: st.counters.cuts,
            faults_fired: st.faults.fired,
        }
    }

    /// The power cut:
    /// 1. under the state's lock, so that no operation is half done, the file system
    ///    stops serving (every later request fails with `EIO`);
    /// 2. each durably named file gets what `mode` lets survive of its unsynced pages;
    ///    the staging directory and every live-only name and page are forgotten;
    /// 3. the mount goes away (lazily, and with the FUSE connection aborted, if something
    ///    still holds a file open on it), and the session thread is joined.
    ///
    /// When it returns the backing directory holds the durable state and the mount point
    /// is free to mount again.
    pub fn cut(mut self, mode: CutMode) -> Result<CutReport> {
        let kept_bytes = {
            let mut st = lock(&self.state);
            if st.cut {
                return Err(Error::AlreadyCut);
            }
            let backing = st.backing.clone();
            st.cut(mode).map_err(|e| Error::io("cut", backing, e))?
        };
        self.stop()?;
        Ok(CutReport {
            mode,
            seed: self.seed,
            kept_bytes,
        })
    }

    /// A clean unmount: every live file and directory is synced, then unmounted.
    pub fn unmount(mut self) -> Result<()> {
        self.sync_and_stop()
    }

    fn sync_and_stop(&mut self) -> Result<()> {
        let synced = {
            let mut st = lock(&self.state);
            let was_cut = st.cut;
            st.cut = true;
            let backing = st.backing.clone();
            if was_cut {
                Ok(())
            } else {
                st.sync_everything()
                    .map_err(|e| Error::io("sync at unmount", backing, e))
            }
        };
        self.stop()?;
        synced
    }

    fn stop(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let mp = self.mountpoint.clone();
        match umount2(&mp, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {
                umount2(&mp, MntFlags::MNT_DETACH)
                    .map_err(|e| Error::io("unmount (lazily)", &mp, e.into()))?;
                abort_connection(self.connection)?;
            }
            Err(e) => return Err(Error::io("unmount", &mp, e.into())),
        }
        session
            .join()
            .map_err(|e| Error::io("end FUSE session", &mp, e))
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let _ = self.sync_and_stop();
    }
}

/// The kernel's `dev_t` (`major << 20 | minor`) of a `st_dev`, which names the FUSE
/// connection under `/sys/fs/fuse/connections`.
fn kernel_dev(st_dev: u64) -> u64 {
    let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
    let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
    (major << 20) | minor
}

/// Aborts a FUSE connection through fusectl (mounting fusectl if it is not), so that
/// the session ends although descriptors on the lazily unmounted file system are open.
fn abort_connection(connection: u64) -> Result<()> {
    let root = Path::new("/sys/fs/fuse/connections");
    let dir = root.join(connection.to_string());
    if !dir.exists() {
        nix::mount::mount(
            Some("fusectl"),
            root,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| Error::io("mount fusectl", root, io::Error::from(e)))?;
    }
    let abort = dir.join("abort");
    fs::write(&abort, "1").map_err(|e| Error::io("abort FUSE connection", abort, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_of_small_and_large_minors() {
        assert_eq!(kernel_dev(0x2d), 0x2d);
        // st_dev 0:300 is encoded as 0x10002c.
        assert_eq!(kernel_dev(0x10_002c), 300);
    }

    #[test]
    fn stats_are_one_line_of_json() {
        let s = Stats {
            fsyncs: 1,
            fsyncdirs: 2,
            bytes_pending: 3,
            cuts: 0,
            faults_fired: 4,
        };
        assert_eq!(
            s.to_json(),
            r#"{"fsyncs":1,"fsyncdirs":2,"bytes_pending":3,"cuts":0,"faults_fired":4}"#
        );
    }
}
