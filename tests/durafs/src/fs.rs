//! The FUSE side: each kernel request turned into a change of the live view (in `tree.rs`
//! and `overlay.rs`) or of the durable state (`durable.rs`). Every reply carries a zero
//! cache time and every file is opened with direct I/O, so the kernel keeps nothing that
//! could hide a cut, a fault or a short write. Locks (`flock`, `fcntl`) are left to the
//! kernel, which handles them locally for a file system that does not implement them.

use std::ffi::OsStr;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::overlay::FileData;
use crate::tree::{errno, Body, DirData, Inode, Meta, State, ROOT, STAGING};

const TTL: Duration = Duration::ZERO;

/// The file system as the kernel sees it. Build one with [`DuraFs::mount`].
pub struct DuraFs {
    pub(crate) state: Arc<Mutex<State>>,
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DuraFs {
    /// Runs `f` on the state unless the power is off.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> Result<T, Errno> {
        let mut st = lock(&self.state);
        if st.cut {
            return Err(Errno::EIO);
        }
        f(&mut st).map_err(Errno::from)
    }
}

fn check_name(parent: u64, name: &OsStr) -> io::Result<()> {
    if parent == ROOT && name == STAGING {
        return Err(errno(libc::EPERM));
    }
    Ok(())
}

fn no_space(st: &mut State, path: &str) -> io::Result<()> {
    if st.faults.no_space(path) {
        return Err(errno(libc::ENOSPC));
    }
    Ok(())
}

/// Inserts a new inode as `name` in `parent`.
fn make(
    st: &mut State,
    req: &Request,
    parent: u64,
    name: &OsStr,
    perm: u32,
    body: Body,
) -> io::Result<u64> {
    check_name(parent, name)?;
    if st.dir(parent)?.entries.contains_key(name) {
        return Err(errno(libc::EEXIST));
    }
    no_space(st, &st.live_child_path(parent, name))?;
    let meta = Meta::new((perm & 0o7777) as u16, req.uid(), req.gid());
    let ino = st.add(Inode::new(body, meta, Some((parent, name.to_os_string()))));
    st.dir_mut(parent)?.entries.insert(name.to_os_string(), ino);
    Ok(ino)
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for DuraFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|st| st.attr(st.child(parent.0, name)?)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|st| st.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.with(|st| {
            let ino = ino.0;
            if let Some(size) = size {
                if size > st.file_mut(ino)?.len {
                    no_space(st, &st.live_path(ino))?;
                }
                st.open_backing(ino)?;
                st.file_mut(ino)?.set_len(size)?;
                st.node_mut(ino)?.meta.mtime = SystemTime::now();
            }
            let node = st.node_mut(ino)?;
            if let Some(mode) = mode {
                node.meta.perm = (mode & 0o7777) as u16;
            }
            node.meta.uid = uid.unwrap_or(node.meta.uid);
            node.meta.gid = gid.unwrap_or(node.meta.gid);
            if let Some(t) = atime {
                node.meta.atime = time(t);
            }
            if let Some(t) = mtime {
                node.meta.mtime = time(t);
            }
            node.meta.ctime = SystemTime::now();
            if mode.is_some() {
                st.chmod_backing(ino)?;
            }
            st.attr(ino)
        });
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.with(|st| {
            let body = Body::Dir(DirData::default());
            let ino = make(st, req, parent.0, name, mode & !umask, body)?;
            st.attr(ino)
        });
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.with(|st| {
            let ino = st.child(parent.0, name)?;
            if st.node(ino)?.is_dir() {
                return Err(errno(libc::EISDIR));
            }
            st.dir_mut(parent.0)?.entries.remove(name);
            st.node_mut(ino)?.parent = None;
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.with(|st| {
            let ino = st.child(parent.0, name)?;
            if !st.dir(ino)?.entries.is_empty() {
                return Err(errno(libc::ENOTEMPTY));
            }
            st.dir_mut(parent.0)?.entries.remove(name);
            st.node_mut(ino)?.parent = None;
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.with(|st| {
            let (parent, newparent) = (parent.0, newparent.0);
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return Err(errno(libc::EINVAL));
            }
            check_name(newparent, newname)?;
            let src = st.child(parent, name)?;
            st.dir(newparent)?;
            no_space(st, &st.live_child_path(newparent, newname))?;
            let src_dir = st.node(src)?.is_dir();
            if src_dir && st.is_within(newparent, src) {
                return Err(errno(libc::EINVAL));
            }
            if let Some(&target) = st.dir(newparent)?.entries.get(newname) {
                if target == src {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(errno(libc::EEXIST));
                }
                match (src_dir, &st.node(target)?.body) {
                    (true, Body::File(_)) => return Err(errno(libc::ENOTDIR)),
                    (false, Body::Dir(_)) => return Err(errno(libc::EISDIR)),
                    (true, Body::Dir(d)) if !d.entries.is_empty() => {
                        return Err(errno(libc::ENOTEMPTY))
                    }
                    _ => {}
                }
                st.node_mut(target)?.parent = None;
            }
            st.dir_mut(parent)?.entries.remove(name);
            st.dir_mut(newparent)?
                .entries
                .insert(newname.to_os_string(), src);
            st.node_mut(src)?.parent = Some((newparent, newname.to_os_string()));
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.with(|st| {
            st.file_mut(ino.0)?;
            if flags.0 & libc::O_TRUNC != 0 {
                st.open_backing(ino.0)?;
                st.file_mut(ino.0)?.set_len(0)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.with(|st| {
            let ino = match st.dir(parent.0)?.entries.get(name) {
                Some(_) if flags & libc::O_EXCL != 0 => return Err(errno(libc::EEXIST)),
                Some(&ino) => {
                    if flags & libc::O_TRUNC != 0 {
                        st.open_backing(ino)?;
                        st.file_mut(ino)?.set_len(0)?;
                    }
                    ino
                }
                None => {
                    let body = Body::File(FileData::default());
                    make(st, req, parent.0, name, mode & !umask, body)?
                }
            };
            st.file_mut(ino)?;
            st.attr(ino)
        });
        match r {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.with(|st| {
            let path = st.live_path(ino.0);
            if st.faults.read_fails(&path, offset, u64::from(size)) {
                return Err(errno(libc::EIO));
            }
            st.open_backing(ino.0)?;
            st.file_mut(ino.0)?.read(offset, size)
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.with(|st| {
            let ino = ino.0;
            no_space(st, &st.live_path(ino))?;
            let n = st.faults.write_len(data.len());
            st.open_backing(ino)?;
            let file = st.file_mut(ino)?;
            let at = if flags.0 & libc::O_APPEND != 0 {
                file.len
            } else {
                offset
            };
            file.write(at, &data[..n])?;
            st.node_mut(ino)?.meta.mtime = SystemTime::now();
            Ok(n as u32)
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.with(|st| {
            st.counters.fsyncs += 1;
            let path = st.live_path(ino.0);
            if st.faults.fsync_fails(&path) {
                st.file_mut(ino.0)?.forget_unsynced();
                return Err(errno(libc::EIO));
            }
            st.sync_file(ino.0)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|st| st.dir(ino.0).map(|_| ())) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.with(|st| {
            let node = st.node(ino.0)?;
            let up = node.parent.as_ref().map_or(ino.0, |(p, _)| *p);
            let mut list = vec![
                (ino.0, fuser::FileType::Directory, ".".into()),
                (up, fuser::FileType::Directory, "..".into()),
            ];
            for (name, &child) in &st.dir(ino.0)?.entries {
                let kind = if st.node(child)?.is_dir() {
                    fuser::FileType::Directory
                } else {
                    fuser::FileType::RegularFile
                };
                list.push((child, kind, name.clone()));
            }
            Ok(list)
        });
        match r {
            Ok(list) => {
                for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.with(|st| {
            st.counters.fsyncdirs += 1;
            st.sync_dir(ino.0)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let r = self.with(|st| nix::sys::statvfs::statvfs(&st.backing).map_err(io::Error::from));
        match r {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.with(|st| {
            if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
                return Err(errno(libc::EOPNOTSUPP));
            }
            no_space(st, &st.live_path(ino.0))?;
            st.open_backing(ino.0)?;
            let file = st.file_mut(ino.0)?;
            let end = offset.saturating_add(length);
            if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > file.len {
                file.set_len(end)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
