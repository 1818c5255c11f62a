//! Which followed files hold a descriptor. A file source keeps at most `max_open_files`
//! open (`crate::descriptors` derives the default from the open-files limit); the others
//! wait, followed by identity. Each scan:
//! 1. files idle for `close_inactive` (read to their end, everything durable) give their
//!    descriptor back;
//! 2. if files wait (new matches, or followed files that changed while closed), open files
//!    that can close without losing anything — idle ones first, then those that have had
//!    a read since they were opened, least recently read first — make room;
//! 3. waiting files get descriptors, followed files before new ones.
//!
//! Nothing is lost or read twice because of the cap: a closed file resumes at its durable
//! offset after [`Tailed::reopen`] checks its identity. If `open` still fails with
//! `EMFILE`/`ENFILE` (other parts of the process hold more than the reserve), the cap
//! shrinks to what is open for a while; that is logged once, and while files wait a
//! summary is logged every [`SUMMARY_EVERY`].

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::tail::Change;
use super::Source;

/// How often a summary of waiting files is logged while some wait.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How long the cap stays lowered after the process ran out of descriptors.
const SHORTAGE_FOR: Duration = Duration::from_secs(30);

/// `EMFILE` or `ENFILE`: the process or the system has no descriptor left.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The budget's state in one source.
#[derive(Debug)]
pub struct Budget {
    /// `max_open_files`.
    pub max_open: usize,
    /// `close_inactive`.
    pub close_inactive: Duration,
    /// Lowered cap after `EMFILE`, and until when.
    shortage: Option<(usize, Instant)>,
    /// Files that waited for a descriptor at the last scan.
    pub waiting: usize,
    /// Followed files with a descriptor at the last scan.
    pub open: usize,
    last_summary: Option<Instant>,
}

impl Budget {
    /// A budget of `max_open` descriptors.
    pub fn new(max_open: usize, close_inactive: Duration) -> Self {
        Budget {
            max_open: max_open.max(1),
            close_inactive,
            shortage: None,
            waiting: 0,
            open: 0,
            last_summary: None,
        }
    }

    /// Whether the process ran out of descriptors a short while ago.
    pub fn short(&self, now: Instant) -> bool {
        self.shortage.is_some_and(|(_, t)| now < t)
    }

    fn cap(&mut self, now: Instant) -> usize {
        match self.shortage {
            Some((cap, until)) if now < until => cap.min(self.max_open),
            Some(_) => {
                self.shortage = None;
                self.max_open
            }
            None => self.max_open,
        }
    }
}

impl Source {
    /// Hands out descriptors after a scan; `new_paths` are matches not followed yet.
    pub(super) fn admit(&mut self, new_paths: Vec<PathBuf>, now: Instant) {
        let idle_for = self.budget.close_inactive;
        for f in self.files.values_mut() {
            if f.closable()
                && f.idle()
                && f.gone_since.is_none()
                && now.saturating_duration_since(f.grown_at) >= idle_for
                && now.saturating_duration_since(f.read_at) >= idle_for
            {
                tracing::debug!(source = %self.name, path = %f.path.display(), "file inactive; closing it until it grows");
                f.close();
            }
        }
        let wanting: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, f)| !f.is_open() && f.more)
            .map(|(&k, _)| k)
            .collect();
        let open = self.open_files();
        let cap = self.budget.cap(now);
        let wanted = wanting.len() + new_paths.len();
        let mut free = cap.saturating_sub(open);
        if wanted > free {
            free += self.evict(wanted - free);
        }
        let mut waiting = wanted;
        for key in wanting {
            if free == 0 {
                break;
            }
            if self.reopen(key, now) {
                free -= 1;
                waiting -= 1;
            }
        }
        let mark = self.scans;
        for path in new_paths {
            if free == 0 {
                break;
            }
            match self.open_file(&path, now, super::files::Origin::Glob) {
                Some(key) => {
                    free -= 1;
                    waiting -= 1;
                    if let Some(f) = self.files.get_mut(&key) {
                        f.scan_mark = mark;
                        f.path_mark = mark;
                    }
                }
                None if self.budget.shortage.is_some_and(|(_, t)| now < t) => break,
                // Cannot be opened (warned once): it does not wait for a descriptor.
                None => waiting -= 1,
            }
        }
        self.budget.open = self.open_files();
        self.budget.waiting = waiting;
        self.metrics
            .source_descriptors(&self.name, self.budget.open as u64, waiting as u64);
        if waiting > 0
            && self
                .budget
                .last_summary
                .is_none_or(|t| now.saturating_duration_since(t) >= SUMMARY_EVERY)
        {
            self.budget.last_summary = Some(now);
            tracing::info!(
                source = %self.name,
                waiting,
                open = self.budget.open,
                max_open_files = self.budget.max_open,
                "files wait for a descriptor; they are read as others finish (nothing is lost)",
            );
        }
    }

    /// Followed files holding a descriptor now.
    fn open_files(&self) -> usize {
        self.files.values().filter(|f| f.is_open()).count()
    }

    /// Closes up to `n` open files that can close without losing anything; returns how
    /// many it closed.
    fn evict(&mut self, n: usize) -> usize {
        let mut candidates: Vec<(bool, Instant, u64)> = self
            .files
            .iter()
            .filter(|(_, f)| {
                f.closable() && f.gone_since.is_none() && (f.idle() || f.reads_since_open > 0)
            })
            .map(|(&k, f)| {
                let idle = f.idle();
                (!idle, if idle { f.grown_at } else { f.read_at }, k)
            })
            .collect();
        candidates.sort();
        let mut closed = 0;
        for (_, _, key) in candidates.into_iter().take(n) {
            if let Some(f) = self.files.get_mut(&key) {
                f.close();
                closed += 1;
            }
        }
        closed
    }

    /// Gives a followed file its descriptor back; `false` if it could not be opened.
    fn reopen(&mut self, key: u64, now: Instant) -> bool {
        let Some(f) = self.files.get_mut(&key) else {
            return false;
        };
        let file = match File::open(&f.path) {
            Ok(file) => file,
            Err(e) if out_of_descriptors(&e) => {
                self.out_of_descriptors(now);
                return false;
            }
            // Moved or deleted: the next scan finds where it went.
            Err(e) if super::scan::is_absent(&e) => return false,
            Err(e) => {
                if self.unopenable.insert(f.path.clone()) {
                    tracing::warn!(
                        source = %self.name,
                        path = %f.path.display(),
                        error = %e,
                        "cannot open a followed file again; it waits until it can be (nothing is skipped)",
                    );
                }
                return false;
            }
        };
        if self.unopenable.remove(&f.path) {
            tracing::info!(source = %self.name, path = %f.path.display(), "file can be opened now");
        }
        match f.reopen(file, now, &mut self.head, &mut self.scratch) {
            Ok(Change::None) => true,
            Ok(change) => {
                tracing::warn!(
                    source = %self.name,
                    path = %f.path.display(),
                    ?change,
                    "file truncated or rewritten while it waited for a descriptor; reading it again from its start",
                );
                self.dirty = true;
                true
            }
            Err(e) => {
                tracing::debug!(source = %self.name, path = %f.path.display(), error = %e, "could not take the file back yet");
                false
            }
        }
    }

    /// `open` failed for want of descriptors: lower the cap to what is open for a while.
    pub(super) fn out_of_descriptors(&mut self, now: Instant) {
        let open = self.open_files();
        let first = self.budget.shortage.is_none_or(|(_, t)| now >= t);
        self.budget.shortage = Some((open.max(1), now + SHORTAGE_FOR));
        if first {
            tracing::warn!(
                source = %self.name,
                open,
                max_open_files = self.budget.max_open,
                "the process has no descriptor left; following at most the files open now for a while (the others wait, nothing is lost)",
            );
        }
    }
}
