//! The inode table: every file and directory the mount knows, with its live name (what
//! `ls` shows now) and its durable names (what the backing directory holds). Owns loading
//! the backing directory at mount, paths, attributes and creating inodes. What happens to
//! the backing directory on `fsync`, `fsyncdir` and at the cut is in `durable.rs`.
//!
//! Inode numbers are handed out from 2 upwards as the mount meets files (1 is the root)
//! and stay the same for the whole mount; a later mount of the same backing directory may
//! number them differently.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::overlay::FileData;
use crate::rng::Rng;

/// The root directory's inode number.
pub(crate) const ROOT: u64 = 1;
/// The directory, at the top of the backing directory, that holds the durable bytes of
/// files and directories that have no durable name yet. Removed at every mount and cut:
/// on a real disk these would be orphans that the next mount's recovery throws away.
pub(crate) const STAGING: &str = ".durafs-staging";

#[derive(Debug, Default)]
pub(crate) struct DirData {
    /// The live entries.
    pub entries: BTreeMap<OsString, u64>,
    /// The entries of the backing directory (its durable entries).
    pub durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
pub(crate) enum Body {
    File(FileData),
    Dir(DirData),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Meta {
    pub fn new(perm: u16, uid: u32, gid: u32) -> Self {
        let now = SystemTime::now();
        Meta {
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn of(md: &fs::Metadata) -> Self {
        let t = |s: i64, ns: i64| {
            UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32)
        };
        Meta {
            perm: (md.mode() & 0o7777) as u16,
            uid: md.uid(),
            gid: md.gid(),
            atime: t(md.atime(), md.atime_nsec()),
            mtime: t(md.mtime(), md.mtime_nsec()),
            ctime: t(md.ctime(), md.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inode {
    pub body: Body,
    pub meta: Meta,
    /// The live name; `None` for the root and for unlinked files and directories.
    pub parent: Option<(u64, OsString)>,
    /// The names it has in the backing directory: (directory inode, name).
    pub durable_links: Vec<(u64, OsString)>,
    /// Whether its durable content sits in the staging directory under its number.
    pub staged: bool,
}

impl Inode {
    pub fn new(body: Body, meta: Meta, parent: Option<(u64, OsString)>) -> Self {
        Inode {
            body,
            meta,
            parent,
            durable_links: Vec::new(),
            staged: false,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }
}

/// What the mount counted; `stats` on the control socket shows it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub fsyncs: u64,
    pub fsyncdirs: u64,
    pub cuts: u64,
}

pub(crate) struct State {
    pub backing: PathBuf,
    pub inodes: HashMap<u64, Inode>,
    next_ino: u64,
    pub faults: Faults,
    pub counters: Counters,
    /// Set by the cut: from then on every operation fails with `EIO`.
    pub cut: bool,
    pub rng: Rng,
}

impl State {
    /// Reads the backing directory: everything in it is durable.
    pub fn load(backing: &Path, seed: u64) -> Result<State> {
        let backing = backing
            .canonicalize()
            .map_err(|e| Error::io("open backing directory", backing, e))?;
        let staging = backing.join(STAGING);
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(|e| Error::io("remove staging directory", &staging, e))?;
        }
        let md = fs::metadata(&backing).map_err(|e| Error::io("stat", &backing, e))?;
        let mut st = State {
            backing: backing.clone(),
            inodes: HashMap::new(),
            next_ino: ROOT + 1,
            faults: Faults::default(),
            counters: Counters::default(),
            cut: false,
            rng: Rng::new(seed),
        };
        st.inodes.insert(
            ROOT,
            Inode::new(Body::Dir(DirData::default()), Meta::of(&md), None),
        );
        let mut by_host_ino = HashMap::new();
        st.load_dir(ROOT, &backing, &mut by_host_ino)?;
        Ok(st)
    }

    fn load_dir(
        &mut self,
        dir: u64,
        path: &Path,
        by_host_ino: &mut HashMap<u64, u64>,
    ) -> Result<()> {
        let rd = fs::read_dir(path).map_err(|e| Error::io("list backing directory", path, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("list backing directory", path, e))?;
            let child_path = entry.path();
            let md =
                fs::symlink_metadata(&child_path).map_err(|e| Error::io("stat", &child_path, e))?;
            let name = entry.file_name();
            let link = (dir, name.clone());
            let ino = if md.is_dir() {
                let ino = self.add(Inode::new(
                    Body::Dir(DirData::default()),
                    Meta::of(&md),
                    Some(link.clone()),
                ));
                self.load_dir(ino, &child_path, by_host_ino)?;
                ino
            } else if md.is_file() {
                if let Some(&ino) = by_host_ino.get(&md.ino()) {
                    ino
                } else {
                    let ino = self.add(Inode::new(
                        Body::File(FileData::durable(md.len())),
                        Meta::of(&md),
                        Some(link.clone()),
                    ));
                    by_host_ino.insert(md.ino(), ino);
                    ino
                }
            } else {
                continue; // symlinks, sockets and the like are not served
            };
            if let Some(node) = self.inodes.get_mut(&ino) {
                node.durable_links.push(link);
            }
            if let Some(Body::Dir(d)) = self.inodes.get_mut(&dir).map(|n| &mut n.body) {
                d.entries.insert(name.clone(), ino);
                d.durable.insert(name, ino);
            }
        }
        Ok(())
    }

    pub fn add(&mut self, inode: Inode) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        ino
    }

    pub fn node(&self, ino: u64) -> io::Result<&Inode> {
        self.inodes.get(&ino).ok_or_else(enoent)
    }

    pub fn node_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(enoent)
    }

    pub fn dir(&self, ino: u64) -> io::Result<&DirData> {
        match &self.node(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    pub fn dir_mut(&mut self, ino: u64) -> io::Result<&mut DirData> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    pub fn file_mut(&mut self, ino: u64) -> io::Result<&mut FileData> {
        match &mut self.node_mut(ino)?.body {
            Body::File(f) => Ok(f),
            Body::Dir(_) => Err(errno(libc::EISDIR)),
        }
    }

    pub fn child(&self, dir: u64, name: &OsStr) -> io::Result<u64> {
        self.dir(dir)?.entries.get(name).copied().ok_or_else(enoent)
    }

    /// The live path inside the mount, for fault filters and messages.
    pub fn live_path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while let Some((parent, name)) = self.inodes.get(&at).and_then(|n| n.parent.as_ref()) {
            parts.push(name.to_string_lossy().into_owned());
            at = *parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The live path of `name` in directory `dir`.
    pub fn live_child_path(&self, dir: u64, name: &OsStr) -> String {
        let p = self.live_path(dir);
        let sep = if p.ends_with('/') { "" } else { "/" };
        format!("{p}{sep}{}", name.to_string_lossy())
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.backing.join(STAGING)
    }

    pub fn staging_path(&self, ino: u64) -> PathBuf {
        self.staging_dir().join(ino.to_string())
    }

    /// Where the durable content of `ino` is in the backing directory, if anywhere.
    pub fn backing_path(&self, ino: u64) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(self.backing.clone());
        }
        let node = self.inodes.get(&ino)?;
        for (dir, name) in &node.durable_links {
            if let Some(p) = self.backing_path(*dir) {
                return Some(p.join(name));
            }
        }
        node.staged.then(|| self.staging_path(ino))
    }

    /// Opens the backing file of `ino`, if it has one and it is not open yet.
    pub fn open_backing(&mut self, ino: u64) -> io::Result<()> {
        let path = self.backing_path(ino);
        let file = self.file_mut(ino)?;
        if file.backing.is_some() {
            return Ok(());
        }
        if let Some(path) = path {
            file.backing = Some(OpenOptions::new().read(true).write(true).open(path)?);
        }
        Ok(())
    }

    pub fn attr(&self, ino: u64) -> io::Result<FileAttr> {
        let node = self.node(ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File(f) => (
                FileType::RegularFile,
                f.len,
                u32::from(node.parent.is_some()),
            ),
            Body::Dir(d) => {
                let subdirs = d
                    .entries
                    .values()
                    .filter(|c| self.inodes.get(c).is_some_and(Inode::is_dir))
                    .count() as u32;
                (FileType::Directory, 4096, 2 + subdirs)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.meta.atime,
            mtime: node.meta.mtime,
            ctime: node.meta.ctime,
            crtime: node.meta.ctime,
            kind,
            perm: node.meta.perm,
            nlink,
            uid: node.meta.uid,
            gid: node.meta.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Whether `ino` is `ancestor` or lies below it in the live tree.
    pub fn is_within(&self, mut ino: u64, ancestor: u64) -> bool {
        loop {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).and_then(|n| n.parent.as_ref()) {
                Some((p, _)) => ino = *p,
                None => return false,
            }
        }
    }

    /// Sets the permission bits of a backing file or directory to the live ones.
    pub fn chmod_backing(&self, ino: u64) -> io::Result<()> {
        if let (Some(path), Ok(node)) = (self.backing_path(ino), self.node(ino)) {
            fs::set_permissions(path, fs::Permissions::from_mode(u32::from(node.meta.perm)))?;
        }
        Ok(())
    }
}

pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn enoent() -> io::Error {
    errno(libc::ENOENT)
}
