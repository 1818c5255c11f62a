//! # durafs: a test file system that forgets what was not synced
//!
//! A FUSE file system for power-cut tests, in the spirit of Jepsen's LazyFS. It passes
//! operations through to a backing directory, but keeps what has been made **durable**
//! apart from what was only **written**, and on command cuts the power: the mount goes
//! away and the backing directory is left holding the durable state alone. Test code
//! only: nothing of it ships in the `gapless` binary.
//!
//! **The durability rules, strict POSIX reading:** a file's data and length become
//! durable only on `fsync`/`fdatasync` of that file; the creation, rename, unlink, mkdir
//! and rmdir of an entry become durable only on `fsync` of the directory that holds it.
//! So a created file whose directory was never synced vanishes at a cut although its
//! data was synced; a rename without a directory sync is reverted (the old name comes
//! back with its durable content); so is an unlink.
//!
//! ## Design
//! - The backing directory always holds the durable state (`durable.rs`). The only
//!   extra is a staging directory, `.durafs-staging`, for synced content that has no
//!   durable name yet; every mount and every cut removes it.
//! - Unsynced file data lives in memory, per inode, as dirty 4 KiB pages over the backing
//!   file, with the live length and any pending truncate (`overlay.rs`). Reads merge the
//!   pages over the backing file. `fsync` writes them into it and syncs it.
//! - The namespace lives in memory (`tree.rs`): each directory has its live entries and its
//!   durable entries (those of its backing directory). `fsyncdir` makes the backing
//!   directory match the live entries, using hard links so that a file renamed across
//!   directories is durable under both names until both are synced.
//! - Files keep a descriptor on their backing file, so an unlinked file stays readable
//!   and writable through descriptors opened before the unlink.
//! - Inode numbers are stable for the life of a mount; a new mount numbers anew.
//! - Every reply has a zero cache time and files use direct I/O: the kernel caches nothing
//!   that could hide a cut, a fault or a short write. `flock` and `fcntl` locks are left
//!   to the kernel (local to the mount).
//!
//! ## The cut ([`MountHandle::cut`], [`CutMode`])
//! `drop` loses every unsynced write; `torn` keeps, per file, a random prefix (in offset
//! order) of its unsynced pages' bytes; `pages` keeps a random subset of unsynced 4 KiB
//! pages. Surviving bytes past a file's durable end grow it. A pending truncate and every
//! unsynced namespace change are always lost. The choices come from the mount's seed
//! ([`MountHandle::seed`], [`MountOptions::seed`]), so a failure replays.
//!
//! ## Faults ([`Fault`])
//! `EIO` on the next N `fsync`s (and the file's unsynced writes are dropped with it, so a
//! later successful `fsync` cannot make them durable: the fsyncgate lesson), `ENOSPC` on
//! anything that takes space, short writes, and `EIO` on reads of one byte range. Each can
//! be limited to paths containing a substring (or ending with it, written `…$`).
//!
//! ```no_run
//! use durafs::{CutMode, DuraFs, MountOptions};
//! # fn demo() -> durafs::Result<()> {
//! let mount = DuraFs::mount("/tmp/backing", "/tmp/mnt", MountOptions::default())?;
//! std::fs::write("/tmp/mnt/f", b"not synced").unwrap();
//! let report = mount.cut(CutMode::Drop)?; // /tmp/backing has no `f`
//! println!("seed {}", report.seed);
//! # Ok(()) }
//! ```
//!
//! The `durafs` binary mounts one and takes commands on a Unix socket (see `control.rs`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
mod control;
mod durable;
mod error;
mod fault;
mod fs;
mod mount;
mod overlay;
mod rng;
mod tree;

pub use control::{serve, Command};
pub use error::{Error, Result};
pub use fault::Fault;
pub use fs::DuraFs;
pub use mount::{CutReport, MountHandle, MountOptions, Stats};
pub use overlay::{CutMode, PAGE};
