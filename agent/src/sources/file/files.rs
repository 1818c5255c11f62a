//! Which files the source follows: the scan turns glob matches into open files (new,
//! resumed from a checkpoint, or found again under a new name), notices renames and files
//! that left the globs; the poll finds truncations and rewrites and closes files that are
//! done. Reading them is `append`'s business.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checkpoint::Entry;
use super::fingerprint::{
    self, anchor_holds, read_anchor, read_full_at, read_head, FileId, Fingerprint,
};
use super::scan::{is_absent, Found};
use super::tail::{Change, Tailed};
use super::Source;
use crate::config::ReadFrom;

/// How far back `read_from = "end"` looks for the last line end.
const END_LOOKBACK: u64 = 64 << 10;

/// Why a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A glob matched it.
    Glob,
    /// Its checkpoint was found under a new name outside the globs.
    Rotated,
}

impl Source {
    /// Walks the globs: notices renames, files that left and files that changed while
    /// waiting for a descriptor, then hands out descriptors ([`Source::admit`]). A place
    /// that cannot be listed is no information: what is followed there stays as it is.
    pub(super) fn scan(&mut self, now: Instant) {
        self.scans += 1;
        let mark = self.scans;
        let mut found = self.matcher.find();
        self.note_matches(found.paths.len(), now);
        let mut seen_ids = HashSet::new();
        let mut renamed: HashMap<u64, PathBuf> = HashMap::new();
        let mut new_paths = Vec::new();
        for path in &found.paths {
            let meta = match fs::metadata(path) {
                Ok(meta) => meta,
                Err(e) if is_absent(&e) => continue,
                Err(e) => {
                    found.unlisted.push((path.clone(), e));
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            let id = FileId::of(&meta);
            seen_ids.insert(id);
            if let Some(&key) = self.by_id.get(&id) {
                if let Some(f) = self.files.get_mut(&key) {
                    f.scan_mark = mark;
                    if f.path == *path {
                        f.path_mark = mark;
                    } else {
                        renamed.entry(key).or_insert_with(|| path.clone());
                    }
                    if !f.is_open() {
                        f.observe(&meta, now);
                    }
                }
                continue;
            }
            if mark == 1 && self.first_start && self.config.read_from == ReadFrom::End {
                // Present at the very first start: read from where it ends now, even if
                // it has to wait for a descriptor.
                self.end_at.insert(id, meta.len());
            }
            new_paths.push(path.clone());
        }
        self.note_unlisted(&found);
        for (key, path) in renamed {
            if let Some(f) = self.files.get_mut(&key) {
                if f.path_mark != mark {
                    tracing::info!(
                        source = %self.name,
                        from = %f.path.display(),
                        to = %path.display(),
                        offset = f.read,
                        "file renamed; following it under its new name",
                    );
                    f.rename(path);
                    f.path_mark = mark;
                    self.dirty = true;
                }
            }
        }
        let mut lost_track = Vec::new();
        for (&key, f) in self.files.iter_mut() {
            if f.scan_mark == mark {
                if f.gone_since.take().is_some() {
                    tracing::info!(
                        source = %self.name,
                        path = %f.path.display(),
                        "file matches the globs again",
                    );
                }
            } else if found.unsure(&f.path) {
                // Not seen because its directory could not be listed: no information.
                f.scan_mark = mark;
            } else if f.gone_since.is_none() {
                if !f.is_open() {
                    lost_track.push(key);
                    continue;
                }
                tracing::info!(
                    source = %self.name,
                    path = %f.path.display(),
                    offset = f.read,
                    size = f.size,
                    "file rotated away or deleted; reading it to its end, then releasing it",
                );
                f.gone_since = Some(now);
            }
        }
        for key in lost_track {
            self.relocate(key, now);
        }
        self.unopenable
            .retain(|p| found.paths.binary_search(p).is_ok());
        self.end_at.retain(|id, _| seen_ids.contains(id));
        if mark == 1 {
            self.find_rotated(&mut seen_ids, now);
            self.first_start = false;
            self.dirty = true;
        }
        let name = &self.name;
        let lost = &mut self.lost_bytes;
        self.restored.retain(|id, e| {
            if seen_ids.contains(id) || found.unsure(Path::new(&e.path)) {
                return true;
            }
            if e.size > e.offset {
                // Rotated away and deleted before it was read to its end.
                tracing::warn!(
                    source = %name,
                    path = %e.path,
                    offset = e.offset,
                    size = e.size,
                    "a file was deleted before it was read to its end; a source_overflow gap record says how many bytes",
                );
                *lost += e.size - e.offset;
            } else {
                tracing::info!(
                    source = %name,
                    path = %e.path,
                    offset = e.offset,
                    "checkpointed file is gone; forgetting it",
                );
            }
            false
        });
        self.admit(new_paths, now);
    }

    /// Warns once for each directory that starts failing to list (or fails otherwise),
    /// and says when it can be listed again.
    fn note_unlisted(&mut self, found: &Found) {
        let now: HashMap<PathBuf, String> = found
            .unlisted
            .iter()
            .map(|(p, e)| (p.clone(), format!("{:?}", e.kind())))
            .collect();
        for (path, e) in &found.unlisted {
            let kind = format!("{:?}", e.kind());
            if self.unlisted.get(path) != Some(&kind) {
                tracing::warn!(
                    source = %self.name,
                    path = %path.display(),
                    error = %e,
                    "cannot look into this directory; the files followed in it are kept as they are (none is taken for deleted or read again) until it can be",
                );
            }
        }
        for path in self.unlisted.keys() {
            if !now.contains_key(path) {
                tracing::info!(source = %self.name, path = %path.display(), "directory can be looked into again");
            }
        }
        self.unlisted = now;
    }

    /// A followed file without a descriptor is no longer at its path: looks for it in its
    /// directory (renamed out of the globs) so that what it grew by is still read, or
    /// forgets it if it was deleted.
    fn relocate(&mut self, key: u64, now: Instant) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        let dir = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let found = match fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().find_map(|entry| {
                let meta = fs::metadata(entry.path()).ok()?;
                (meta.is_file() && FileId::of(&meta) == f.id).then(|| (entry.path(), meta))
            }),
            Err(e) if !is_absent(&e) => return, // no information
            Err(_) => None,
        };
        match found {
            Some((path, meta)) => {
                tracing::info!(
                    source = %self.name,
                    from = %f.path.display(),
                    to = %path.display(),
                    offset = f.durable,
                    "file renamed out of the globs while it waited for a descriptor; reading it to its end, then releasing it",
                );
                f.rename(path);
                f.observe(&meta, now);
                f.gone_since = Some(now);
            }
            None => {
                if f.size > f.durable {
                    tracing::warn!(
                        source = %self.name,
                        path = %f.path.display(),
                        offset = f.durable,
                        size = f.size,
                        "a file was deleted while it waited for a descriptor, before it was read to its end; a source_overflow gap record says how many bytes",
                    );
                    self.lost_bytes += f.size - f.durable;
                } else {
                    tracing::info!(
                        source = %self.name,
                        path = %f.path.display(),
                        offset = f.durable,
                        "file deleted after it was read to its end; forgetting it",
                    );
                }
                let id = f.id;
                self.files.remove(&key);
                self.by_id.remove(&id);
                self.dirty = true;
            }
        }
    }

    /// At start: looks for checkpointed files the globs no longer match under another
    /// name in their old directory (`app.log` rotated to `app.log.1` while stopped), so
    /// their unread tail is not lost.
    fn find_rotated(&mut self, seen_ids: &mut HashSet<FileId>, now: Instant) {
        let mut wanted: HashMap<PathBuf, Vec<(FileId, PathBuf)>> = HashMap::new();
        for (id, e) in &self.restored {
            if !seen_ids.contains(id) {
                let old = PathBuf::from(&e.path);
                if let Some(dir) = old.parent() {
                    wanted
                        .entry(dir.to_path_buf())
                        .or_default()
                        .push((*id, old.clone()));
                }
            }
        }
        for (dir, ids) in wanted {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = fs::metadata(&path) else {
                    continue;
                };
                let id = FileId::of(&meta);
                // Still under its old name, it was left out of the globs on purpose.
                let moved = ids.iter().any(|(i, old)| *i == id && *old != path);
                if meta.is_file() && moved && !self.by_id.contains_key(&id) {
                    seen_ids.insert(id);
                    if let Some(key) = self.open_file(&path, now, Origin::Rotated) {
                        if let Some(f) = self.files.get_mut(&key) {
                            f.gone_since = Some(now);
                        }
                    }
                }
            }
        }
    }

    /// Opens a file not followed yet and decides where to start reading it.
    pub(super) fn open_file(&mut self, path: &Path, now: Instant, origin: Origin) -> Option<u64> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if super::budget::out_of_descriptors(&e) => {
                self.out_of_descriptors(now);
                return None;
            }
            Err(e) => {
                if self.unopenable.insert(path.to_path_buf()) {
                    tracing::warn!(
                        source = %self.name,
                        path = %path.display(),
                        error = %e,
                        "cannot open file; skipping it until it can be",
                    );
                }
                return None;
            }
        };
        if self.unopenable.remove(path) {
            tracing::info!(source = %self.name, path = %path.display(), "file can be opened now");
        }
        let meta = file.metadata().ok()?;
        let id = FileId::of(&meta);
        if !meta.is_file() || self.by_id.contains_key(&id) {
            return None;
        }
        if let Err(e) = read_head(&file, &mut self.head) {
            tracing::warn!(
                source = %self.name,
                path = %path.display(),
                error = %e,
                "cannot read file; skipping it for now",
            );
            return None;
        }
        let size = meta.len();
        let start = match self.restored.remove(&id) {
            Some(entry) => self.resume_at(&entry, path, &meta, &file),
            None if origin == Origin::Glob && self.end_at.contains_key(&id) => {
                let at_start = self.end_at.remove(&id).unwrap_or(size).min(size);
                let offset = end_offset(&file, at_start);
                let anchor = read_anchor(&file, offset, &mut self.scratch)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Start::at(offset, anchor, "read_from = end at first start")
            }
            None => Start::at(0, Fingerprint::default(), "new file"),
        };
        let offset = start.offset;
        let mut tailed = Tailed::new(
            path.to_path_buf(),
            file,
            offset,
            start.anchor,
            &self.head,
            now,
        )?;
        tailed.after_partial = start.after_partial;
        tracing::info!(
            source = %self.name,
            path = %path.display(),
            offset,
            size,
            how = start.how,
            "following file",
        );
        let key = self.next_key;
        self.next_key += 1;
        self.by_id.insert(id, key);
        self.files.insert(key, tailed);
        self.dirty = true;
        Some(key)
    }

    /// Where to resume a checkpointed file: at its offset if it is the same file with the
    /// same bytes before the offset (the identity rule in `fingerprint.rs`), else at 0.
    /// `self.head` holds its first bytes.
    fn resume_at(&mut self, entry: &Entry, path: &Path, meta: &fs::Metadata, file: &File) -> Start {
        let created = fingerprint::created_nanos(meta);
        let name = &self.name;
        let warn = |why: &str| {
            tracing::warn!(
                source = %name,
                path = %path.display(),
                checkpoint_offset = entry.offset,
                size = meta.len(),
                why,
                "checkpoint does not fit the file; reading it from its start (lines before the offset may arrive twice, none are lost)",
            );
        };
        let from_start = |how| Start::at(0, Fingerprint::default(), how);
        if entry.created.is_some() && created.is_some() && entry.created != created {
            warn("another birth time: the inode was reused by a new file");
            return from_start("inode reused");
        }
        if !entry.fingerprint().matches(&self.head) {
            warn("its first bytes differ: rewritten, or the inode was reused");
            return from_start("first bytes differ");
        }
        if entry.offset > meta.len() {
            warn("it is shorter than the checkpoint: truncated while stopped");
            return from_start("truncated while stopped");
        }
        let offset = entry.offset;
        let (anchor, last_byte) = match entry.anchor() {
            Some(anchor) => match anchor_holds(file, offset, &anchor, &mut self.scratch) {
                Ok(true) => (anchor, self.scratch.last().copied()),
                Ok(false) => {
                    warn("the bytes before the checkpoint offset changed: rewritten in place");
                    return from_start("bytes before the offset differ");
                }
                Err(e) => {
                    warn(&format!(
                        "the bytes before the checkpoint offset cannot be read ({e}), so it cannot be told whether they changed"
                    ));
                    return from_start("cannot check the bytes before the offset");
                }
            },
            // An older checkpoint without an anchor: the first-bytes fingerprint vouches
            // for the offset only when it covers it.
            None if offset <= u64::from(entry.fp_len) => {
                let before = &self.head[..offset as usize];
                (
                    fingerprint::anchor_of(before, offset),
                    before.last().copied(),
                )
            }
            None => {
                warn("the checkpoint records no anchor (written by an older version), so it cannot be told whether the bytes before the offset changed");
                return from_start("no anchor to check");
            }
        };
        Start {
            offset,
            anchor,
            // The durable bytes end inside a line (emitted as partial, or cut as too long):
            // its rest is flagged and a lone line end skipped.
            after_partial: last_byte.is_some_and(|b| b != b'\n'),
            how: "resumed at checkpoint",
        }
    }

    /// Polls every open file; closes those that are done.
    pub(super) fn poll_files(&mut self, now: Instant) {
        let mut release = Vec::new();
        for (&key, f) in &mut self.files {
            match f.poll(now, &mut self.head, &mut self.scratch) {
                Change::None => {}
                Change::Truncated { was_at } => {
                    tracing::info!(
                        source = %self.name,
                        path = %f.path.display(),
                        offset = was_at,
                        size = f.size,
                        "file shrank below the read offset (copytruncate?); reading it again from its start",
                    );
                    self.dirty = true;
                }
                Change::Rewritten { was_at } => {
                    tracing::warn!(
                        source = %self.name,
                        path = %f.path.display(),
                        offset = was_at,
                        "file's first bytes or the bytes before the read offset changed (rewritten in place?); reading it again from its start",
                    );
                    self.dirty = true;
                }
                Change::Deleted => {
                    tracing::info!(
                        source = %self.name,
                        path = %f.path.display(),
                        offset = f.read,
                        size = f.size,
                        "file deleted; reading it to its end, then releasing it",
                    );
                }
            }
            if f.releasable(now, self.release_after) {
                release.push(key);
            }
        }
        for key in release {
            if let Some(f) = self.files.remove(&key) {
                self.by_id.remove(&f.id);
                tracing::info!(
                    source = %self.name,
                    path = %f.path.display(),
                    offset = f.durable,
                    "file read to its end and released",
                );
                self.dirty = true;
            }
        }
    }
}

/// Where reading a newly opened file starts, and why.
struct Start {
    offset: u64,
    /// The fingerprint of the bytes just before `offset`.
    anchor: Fingerprint,
    /// The bytes before `offset` end inside a line.
    after_partial: bool,
    how: &'static str,
}

impl Start {
    fn at(offset: u64, anchor: Fingerprint, how: &'static str) -> Self {
        Start {
            offset,
            anchor,
            after_partial: false,
            how,
        }
    }
}

/// Where `read_from = "end"` starts: after the last line end, so a line being written is
/// emitted whole.
fn end_offset(file: &File, size: u64) -> u64 {
    let from = size.saturating_sub(END_LOOKBACK);
    let mut tail = vec![0; (size - from) as usize];
    match read_full_at(file, &mut tail, from) {
        Ok(n) => memchr::memrchr(b'\n', &tail[..n]).map_or(size, |i| from + i as u64 + 1),
        Err(_) => size,
    }
}
