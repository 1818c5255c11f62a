//! One followed file: its open descriptor, its identity and its offsets, and what a poll
//! of it finds (growth, truncation, a rewrite, deletion). The source loop owns the set of
//! files, the reading and the appends; this owns the per-file rules.
//!
//! A followed file may give its descriptor back (it has been idle for `close_inactive`, or
//! the descriptor budget is needed elsewhere) while everything read of it is durable. It
//! stays followed by identity: the scan's `stat` of its path tells whether it changed, and
//! [`Tailed::reopen`] checks device, inode, first bytes and anchor before reading on.
//!
//! Offsets, always `durable <= read <= seen`:
//! - `durable`: every byte before it is in the WAL (its append completed). Checkpointed.
//! - `read`: every byte before it is in a batch, appended or on its way. The next chunk
//!   starts here, so a partial last line is simply read again.
//! - `seen`: bytes before it were looked at; there is nothing new until the file grows
//!   past it.
//!
//! `read_anchor` and `durable_anchor` are the fingerprints of the bytes just before `read`
//! and `durable` (`fingerprint.rs`): a poll and every chunk check the first, the
//! checkpoint keeps the second, so bytes before an offset that change (a rewrite in place
//! that kept the first bytes and grew past the offset) start the file over instead of
//! skipping its new lines.
//!
//! The `generation` changes whenever the file's content starts over (copytruncate, a
//! rewrite) or one of its appends failed: completions of appends from an older generation
//! then no longer move `durable`, so it only ever advances over a contiguous prefix.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::Entry;
use super::fingerprint::{anchor_holds, read_head, FileId, Fingerprint};

/// A file being followed.
#[derive(Debug)]
pub struct Tailed {
    /// Where it was last seen.
    pub path: PathBuf,
    /// `path` as the events' `file` field.
    pub path_str: Arc<str>,
    /// The open descriptor: reading goes on through it after a rename or delete. `None`
    /// while the file waits for a descriptor (see the module doc).
    pub file: Option<Arc<File>>,
    /// Chunks read since it was last opened.
    pub reads_since_open: u32,
    /// When a chunk of it was last read (or it was opened).
    pub read_at: Instant,
    /// Device and inode.
    pub id: FileId,
    /// Birth time, if known.
    pub created: Option<u64>,
    /// Of its first bytes.
    pub fp: Fingerprint,
    /// See the module doc.
    pub generation: u64,
    /// See the module doc.
    pub durable: u64,
    /// See the module doc.
    pub read: u64,
    /// See the module doc.
    pub seen: u64,
    /// See the module doc.
    pub read_anchor: Fingerprint,
    /// See the module doc.
    pub durable_anchor: Fingerprint,
    /// Its size at the last look.
    pub size: u64,
    /// Size and mtime at the last poll: a poll that finds them unchanged does nothing.
    stamp: (u64, i64, i64),
    /// There may be bytes after `seen`.
    pub more: bool,
    /// The last chunk ended inside an over-long line.
    pub continuing: bool,
    /// The last chunk emitted a partial last line; its late line end is to be skipped.
    pub after_partial: bool,
    /// When its size last changed (or it was opened).
    pub grown_at: Instant,
    /// Since when it is out of the globs or deleted; `None` while a glob matches it.
    pub gone_since: Option<Instant>,
    /// Its appends not completed yet.
    pub in_flight: usize,
    /// The last scan that found it, and the last that found it under `path`.
    pub scan_mark: u64,
    /// See `scan_mark`.
    pub path_mark: u64,
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing, or growth.
    None,
    /// It shrank below `read`: copytruncate. Reading starts over at 0.
    Truncated {
        /// The offset reading was at.
        was_at: u64,
    },
    /// Its first bytes changed: rewritten in place. Reading starts over at 0.
    Rewritten {
        /// The offset reading was at.
        was_at: u64,
    },
    /// Its last link is gone: deleted while open.
    Deleted,
}

impl Tailed {
    /// A file just opened, to be read from `offset`; `head` holds its first bytes and
    /// `anchor` is the fingerprint of the bytes just before `offset`.
    pub fn new(
        path: PathBuf,
        file: File,
        offset: u64,
        anchor: Fingerprint,
        head: &[u8],
        now: Instant,
    ) -> Option<Self> {
        let meta = file.metadata().ok()?;
        let size = meta.len();
        Some(Tailed {
            path_str: path.to_string_lossy().into(),
            path,
            id: FileId::of(&meta),
            created: super::fingerprint::created_nanos(&meta),
            fp: Fingerprint::of(head),
            file: Some(Arc::new(file)),
            reads_since_open: 0,
            read_at: now,
            generation: 0,
            durable: offset,
            read: offset,
            seen: offset,
            read_anchor: anchor,
            durable_anchor: anchor,
            size,
            stamp: (size, meta.mtime(), meta.mtime_nsec()),
            more: size > offset,
            continuing: false,
            after_partial: false,
            grown_at: now,
            gone_since: None,
            in_flight: 0,
            scan_mark: 0,
            path_mark: 0,
        })
    }

    /// Follows it under a new name.
    pub fn rename(&mut self, path: PathBuf) {
        self.path_str = path.to_string_lossy().into();
        self.path = path;
    }

    /// Looks at the open descriptor: growth, truncation, a changed start or changed bytes
    /// before the read offset, deletion. On a truncation or rewrite, reading starts over at
    /// 0. `head` and `scratch` are scratch buffers.
    pub fn poll(&mut self, now: Instant, head: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Change {
        let Some(file) = self.file.clone() else {
            return Change::None;
        };
        let Ok(meta) = file.metadata() else {
            return Change::None;
        };
        let mut change = Change::None;
        if meta.nlink() == 0 && self.gone_since.is_none() {
            self.gone_since = Some(now);
            change = Change::Deleted;
        }
        let size = meta.len();
        let stamp = (size, meta.mtime(), meta.mtime_nsec());
        if stamp == self.stamp {
            return change;
        }
        self.stamp = stamp;
        if size != self.size {
            self.grown_at = now;
        }
        self.size = size;
        if read_head(&file, head).is_err() {
            return change;
        }
        // An error reading the anchor is no information: the next chunk checks it again.
        let verdict = self
            .judge(&file, size, head, scratch)
            .unwrap_or(Change::None);
        if self.settle(verdict, head) {
            return verdict;
        }
        // A shrunken partial last line: look again from where the file now ends.
        self.seen = self.seen.min(size);
        if size > self.seen {
            self.more = true;
        }
        change
    }

    /// For a file without a descriptor: what the scan's `stat` of its path says. A change
    /// of size or mtime makes it want its descriptor back.
    pub fn observe(&mut self, meta: &std::fs::Metadata, now: Instant) {
        let stamp = (meta.len(), meta.mtime(), meta.mtime_nsec());
        if stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        if meta.len() != self.size {
            self.grown_at = now;
        }
        self.size = meta.len();
        self.more = true;
    }

    /// Whether it holds a descriptor.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Whether its descriptor can be given back without losing anything: nothing in
    /// flight, everything read is durable, and (if it was deleted or left the globs) read
    /// to its end — a deleted file cannot be opened again.
    pub fn closable(&self) -> bool {
        self.file.is_some()
            && self.in_flight == 0
            && self.durable == self.read
            && (self.gone_since.is_none() || self.read >= self.size)
    }

    /// Idle: nothing to read, nothing pending.
    pub fn idle(&self) -> bool {
        !self.more && self.read == self.seen && self.read >= self.size
    }

    /// Gives the descriptor back; reading resumes at `durable` after [`Tailed::reopen`].
    pub fn close(&mut self) {
        self.file = None;
        self.read = self.durable;
        self.seen = self.durable;
        self.read_anchor = self.durable_anchor;
    }

    /// Takes a descriptor opened at its path back, after checking that it is the same
    /// file with the same bytes before the offset. A different file there is `Err` (the
    /// descriptor is dropped); a truncated or rewritten one starts over at 0.
    pub fn reopen(
        &mut self,
        file: File,
        now: Instant,
        head: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<Change, std::io::Error> {
        let meta = file.metadata()?;
        if FileId::of(&meta) != self.id {
            return Err(std::io::Error::other("another file is at its path now"));
        }
        read_head(&file, head)?;
        let size = meta.len();
        let verdict = self.judge(&file, size, head, scratch)?;
        self.stamp = (size, meta.mtime(), meta.mtime_nsec());
        if size != self.size {
            self.grown_at = now;
        }
        self.size = size;
        self.file = Some(Arc::new(file));
        self.reads_since_open = 0;
        self.read_at = now;
        self.more = size > self.seen;
        self.settle(verdict, head);
        Ok(verdict)
    }

    /// What the content of `file` (`size` bytes, first bytes `head` read just now) says:
    /// shorter than the read offset (truncated), other first bytes or other bytes just
    /// before the read offset (rewritten), or the same file read on. `Err` only when the
    /// bytes before the offset cannot be read.
    fn judge(
        &self,
        file: &File,
        size: u64,
        head: &[u8],
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<Change> {
        let was_at = self.read;
        if size < self.read {
            return Ok(Change::Truncated { was_at });
        }
        if !self.fp.matches(head) || !anchor_holds(file, self.read, &self.read_anchor, scratch)? {
            return Ok(Change::Rewritten { was_at });
        }
        Ok(Change::None)
    }

    /// Acts on a [`Tailed::judge`] verdict: a truncated or rewritten file starts over at 0
    /// (returns `true`); the same file widens its fingerprint to the first bytes it has now.
    fn settle(&mut self, verdict: Change, head: &[u8]) -> bool {
        if matches!(verdict, Change::Truncated { .. } | Change::Rewritten { .. }) {
            self.restart(head);
            return true;
        }
        if head.len() > self.fp.len as usize {
            self.fp = Fingerprint::of(head);
        }
        false
    }

    /// The content started over: read from 0 and let older appends no longer count.
    pub fn restart(&mut self, head: &[u8]) {
        self.generation += 1;
        self.durable = 0;
        self.read = 0;
        self.seen = 0;
        self.read_anchor = Fingerprint::default();
        self.durable_anchor = Fingerprint::default();
        self.continuing = false;
        self.after_partial = false;
        self.more = true;
        self.fp = Fingerprint::of(head);
    }

    /// An append of it failed: read again from `durable` (nothing after it is known to be
    /// in the WAL), and let appends already on their way no longer count.
    pub fn rewind(&mut self, continuing: bool, after_partial: bool) {
        self.generation += 1;
        self.read = self.durable;
        self.seen = self.durable;
        self.read_anchor = self.durable_anchor;
        self.continuing = continuing;
        self.after_partial = after_partial;
        self.more = true;
    }

    /// Whether a read would produce something: unseen bytes, or a partial last line whose
    /// timeout has passed.
    pub fn has_work(&self, now: Instant, partial_line_timeout: Duration) -> bool {
        self.more || (self.read < self.seen && self.partial_due(now, partial_line_timeout))
    }

    /// The file has not grown for `partial_line_timeout`.
    pub fn partial_due(&self, now: Instant, partial_line_timeout: Duration) -> bool {
        now.saturating_duration_since(self.grown_at) >= partial_line_timeout
    }

    /// Out of the globs (or deleted) for `idle`, not grown for `idle`, read to its end and
    /// all of it durable: its descriptor can be closed.
    pub fn releasable(&self, now: Instant, idle: Duration) -> bool {
        self.gone_since
            .is_some_and(|t| now.saturating_duration_since(t) >= idle)
            && now.saturating_duration_since(self.grown_at) >= idle
            && self.in_flight == 0
            && self.read >= self.size
            && self.durable == self.read
    }

    /// Its checkpoint entry.
    pub fn entry(&self) -> Entry {
        Entry {
            dev: self.id.dev,
            ino: self.id.ino,
            created: self.created,
            fp_len: self.fp.len,
            fp_hash: self.fp.hash,
            path: self.path_str.to_string(),
            offset: self.durable,
            before_len: Some(self.durable_anchor.len),
            before_hash: Some(self.durable_anchor.hash),
            size: self.size,
        }
    }
}
