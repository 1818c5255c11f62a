//! What reaches the backing directory, and when. The backing directory holds exactly the
//! durable state, plus the staging directory for durable content that has no durable name
//! yet. Three things change it:
//!
//! 1. `fsync` of a file writes its unsynced pages and length into its backing file and
//!    syncs that (a file with no backing file yet gets one in the staging directory).
//! 2. `fsyncdir` of a directory makes its backing directory list exactly its live entries:
//!    names gone from the live directory are unlinked, new names are linked (hard links
//!    for files, so a file renamed to another directory durably has both names until the
//!    other directory is synced too; a directory moves, so it leaves its old parent at
//!    once — the one place where this is kinder than the strictest POSIX reading).
//! 3. The cut writes what the cut mode lets survive of the unsynced pages, removes the
//!    staging directory, and forgets every live-only name, inode and page.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::overlay::CutMode;
use crate::rng::Rng;
use crate::tree::{Body, State, ROOT};

impl State {
    /// `fsync`/`fdatasync` of a file.
    pub fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        self.open_backing(ino)?;
        let needs_file = matches!(&self.node(ino)?.body, Body::File(f) if f.backing.is_none());
        if needs_file {
            let path = self.staging_path(ino);
            fs::create_dir_all(self.staging_dir())?;
            let file = self.create_backing_file(ino, &path)?;
            let node = self.node_mut(ino)?;
            node.staged = true;
            if let Body::File(f) = &mut node.body {
                f.backing = Some(file);
            }
        }
        self.file_mut(ino)?.sync()
    }

    /// `fsyncdir`: the backing directory gets the live entries of `dir`.
    pub fn sync_dir(&mut self, dir: u64) -> io::Result<()> {
        if self.backing_path(dir).is_none() {
            self.stage(dir)?;
        }
        let d = self.dir(dir)?;
        let removed: Vec<(OsString, u64)> = d
            .durable
            .iter()
            .filter(|(n, i)| d.entries.get(*n) != Some(i))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        let added: Vec<(OsString, u64)> = d
            .entries
            .iter()
            .filter(|(n, i)| d.durable.get(*n) != Some(i))
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        // Staging first gives every inode to be linked a path that the removals cannot
        // take away (it may be renamed over its own old name).
        for (_, ino) in &added {
            self.stage(*ino)?;
        }
        for (name, ino) in &removed {
            self.unlink_durable(dir, name.clone(), *ino)?;
        }
        for (name, ino) in &added {
            self.link_durable(dir, name.clone(), *ino)?;
        }
        for (_, ino) in &added {
            self.unstage(*ino)?;
        }
        if let Some(path) = self.backing_path(dir) {
            File::open(path)?.sync_all()?;
        }
        Ok(())
    }

    /// Gives `ino` a durable path in the staging directory (a hard link, a moved
    /// directory, or a new empty file or directory if it has no durable content).
    fn stage(&mut self, ino: u64) -> io::Result<()> {
        if self.node(ino)?.staged {
            return Ok(());
        }
        let to = self.staging_path(ino);
        fs::create_dir_all(self.staging_dir())?;
        let from = self.backing_path(ino);
        if self.node(ino)?.is_dir() {
            match from {
                Some(from) => {
                    fs::rename(&from, &to)?;
                    let links = std::mem::take(&mut self.node_mut(ino)?.durable_links);
                    for (parent, name) in links {
                        self.dir_mut(parent)?.durable.remove(&name);
                    }
                }
                None => {
                    let perm = self.node(ino)?.meta.perm;
                    fs::DirBuilder::new().mode(u32::from(perm)).create(&to)?;
                }
            }
        } else {
            match from {
                Some(from) => fs::hard_link(from, &to)?,
                None => {
                    let file = self.create_backing_file(ino, &to)?;
                    let data = self.file_mut(ino)?;
                    data.backing = Some(file);
                    data.durable_len = 0;
                    data.base_len = 0;
                }
            }
        }
        self.node_mut(ino)?.staged = true;
        Ok(())
    }

    fn unstage(&mut self, ino: u64) -> io::Result<()> {
        let node = self.node(ino)?;
        if node.staged && !node.durable_links.is_empty() {
            if !node.is_dir() {
                fs::remove_file(self.staging_path(ino))?;
            }
            self.node_mut(ino)?.staged = false;
        }
        Ok(())
    }

    /// Removes the durable entry `name` (naming `ino`) from directory `dir`. A file or
    /// directory that is still live elsewhere keeps its durable content in staging.
    fn unlink_durable(&mut self, dir: u64, name: OsString, ino: u64) -> io::Result<()> {
        self.dir_mut(dir)?.durable.remove(&name);
        let link = (dir, name.clone());
        if !self.node(ino)?.durable_links.contains(&link) {
            return Ok(()); // a directory that staging already moved away
        }
        let Some(path) = self.backing_path(dir).map(|p| p.join(&name)) else {
            return Ok(());
        };
        let node = self.node(ino)?;
        let live = node.parent.is_some();
        let last = node.durable_links.len() == 1 && !node.staged;
        if node.is_dir() {
            if live {
                fs::create_dir_all(self.staging_dir())?;
                fs::rename(&path, self.staging_path(ino))?;
                self.node_mut(ino)?.staged = true;
            } else {
                let children: Vec<(OsString, u64)> = self
                    .dir(ino)?
                    .durable
                    .iter()
                    .map(|(n, i)| (n.clone(), *i))
                    .collect();
                for (n, i) in children {
                    self.unlink_durable(ino, n, i)?;
                }
                fs::remove_dir(&path)?;
            }
        } else {
            if live && last {
                fs::create_dir_all(self.staging_dir())?;
                fs::hard_link(&path, self.staging_path(ino))?;
                self.node_mut(ino)?.staged = true;
            }
            // An open file keeps its data through its descriptor, as an unlinked file does.
            self.open_backing(ino)?;
            fs::remove_file(&path)?;
        }
        self.node_mut(ino)?.durable_links.retain(|l| *l != link);
        Ok(())
    }

    /// Links staged `ino` into directory `dir` as `name`.
    fn link_durable(&mut self, dir: u64, name: OsString, ino: u64) -> io::Result<()> {
        let Some(path) = self.backing_path(dir).map(|p| p.join(&name)) else {
            return Ok(());
        };
        let staged = self.staging_path(ino);
        if self.node(ino)?.is_dir() {
            fs::rename(&staged, &path)?;
            let node = self.node_mut(ino)?;
            node.staged = false;
            node.durable_links = vec![(dir, name.clone())];
        } else {
            fs::hard_link(&staged, &path)?;
            self.node_mut(ino)?.durable_links.push((dir, name.clone()));
        }
        self.dir_mut(dir)?.durable.insert(name, ino);
        Ok(())
    }

    fn create_backing_file(&self, ino: u64, path: &std::path::Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(u32::from(self.node(ino)?.meta.perm))
            .open(path)
    }

    /// The power cut. Afterwards the backing directory holds the durable state (plus what
    /// `mode` let survive of unsynced pages) and every operation fails with `EIO`.
    /// Returns the number of unsynced bytes that survived.
    pub fn cut(&mut self, mode: CutMode) -> io::Result<u64> {
        self.cut = true;
        self.counters.cuts += 1;
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        let mut kept = 0;
        for ino in inos {
            let durable = self.node(ino)?.durable_links.iter().any(|(d, _)| {
                self.backing_path(*d)
                    .is_some_and(|p| !p.starts_with(self.staging_dir()))
            });
            if !durable {
                continue;
            }
            let mut rng = Rng::new(self.rng.next_u64());
            if let Body::File(f) = &mut self.node_mut(ino)?.body {
                if f.pending_bytes() > 0 {
                    if f.backing.is_none() {
                        self.open_backing(ino)?;
                    }
                    if let Body::File(f) = &mut self.node_mut(ino)?.body {
                        kept += f.cut(mode, &mut rng)?;
                    }
                }
            }
        }
        self.inodes.clear();
        let staging = self.staging_dir();
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        Ok(kept)
    }

    /// A clean shutdown: every live file and directory is synced, top down.
    pub fn sync_everything(&mut self) -> io::Result<()> {
        let mut queue = vec![ROOT];
        while let Some(dir) = queue.pop() {
            self.sync_dir(dir)?;
            let children: Vec<u64> = self.dir(dir)?.entries.values().copied().collect();
            for c in children {
                if self.node(c)?.is_dir() {
                    queue.push(c);
                } else {
                    self.sync_file(c)?;
                }
            }
        }
        Ok(())
    }

    /// Unsynced bytes over all files.
    pub fn pending_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|n| match &n.body {
                Body::File(f) => f.pending_bytes(),
                Body::Dir(_) => 0,
            })
            .sum()
    }
}
