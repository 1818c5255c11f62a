//! The file source: follows the files that globs match, across rotation, and appends their
//! lines to the WAL. Offsets are checkpointed only once the lines are durable.
//!
//! ## Constraints
//! - Polling is the source of truth: every `poll_interval` the globs are walked again
//!   (`scan.rs`, `files.rs`) and every open file is `fstat`ed (`tail.rs`). No inotify.
//! - A file is identified by device + inode, birth time (where the file system has one)
//!   and a fingerprint of its first bytes (`fingerprint.rs`); never by its path. So:
//!   - a rename (`app.log` → `app.log.1`) keeps the file and its offset; it is read to its
//!     end under its new name — even when the rename happened while the agent was stopped
//!     and the new name is outside the globs (it is looked for in the old directory);
//!   - a new `app.log` is a new file, read from its beginning;
//!   - copytruncate (the size falls below our offset) and a rewrite in place (the first
//!     bytes change) start the file over at 0, with a warning;
//!   - a reused inode has other first bytes (or another birth time): a new file, read
//!     from 0, never skipped.
//! - A file that left the globs or was deleted is read through its open descriptor to its
//!   end; once it has not grown for `max(2 × poll_interval, partial_line_timeout)` and all
//!   of it is durable, the descriptor is closed.
//! - `read_from = "end"` applies only to the files present at the very first start (no
//!   checkpoint file yet). Files appearing later are read from their beginning, so a
//!   rotation never loses the lines written between the rename and the next scan.
//!
//! - A directory that cannot be listed (`EACCES`, `EMFILE`, `EIO`) is no information: the
//!   files followed there are kept as they are, never taken for deleted (`scan.rs`).
//! - Descriptors are budgeted (`budget.rs`): at most `max_open_files` followed files are
//!   open; the others wait, followed by identity, and idle files close after
//!   `close_inactive`. The cap never loses or repeats a line.
//!
//! ## Reading and appending
//! A chunk (1 MiB) is read and encoded into one batch off the async threads
//! (`chunk.rs`), and appended (`append.rs`). Up to [`MAX_IN_FLIGHT`] appends (and
//! [`IN_FLIGHT_BYTES`]) are in flight while the next chunk is read. Their results are taken strictly in order, so a file's
//! `durable` offset advances over a contiguous prefix only. A failed append (other than
//! the WAL closing) moves no offset: the file is read again from `durable` after a pause —
//! duplicates at worst, never a gap. An append the WAL finds too large makes later batches
//! and lines smaller.
//! When the WAL is full under `block`, the append waits and so does the file.
//!
//! ## Checkpoints
//! After every completed append the positions are written (`checkpoint.rs`): in place to
//! `state_dir/checkpoints.live.json`, and at most once a second (and at shutdown) synced to
//! `state_dir/checkpoints.json`, crash-atomic by rename; the newer valid one loads. `kill -9`
//! therefore costs at most the in-flight batches, read again at the next start. At start,
//! each file that still exists with the same identity resumes exactly at its offset;
//! entries whose file is gone are forgotten.
//!
//! ## Files
//! `mod.rs` the loop and shutdown · `files.rs` which files are followed · `budget.rs`
//! which of them hold a descriptor · `tail.rs` one
//! file's offsets and rules · `append.rs` chunks to the WAL, in order · `chunk.rs` bytes to
//! events · `fingerprint.rs` identity · `checkpoint.rs` the checkpoint file · `scan.rs`
//! globs · `tests.rs` the source against real files and a real WAL.

mod append;
mod budget;
mod checkpoint;
mod chunk;
mod files;
mod fingerprint;
mod scan;
mod tail;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gapless_wal::Appender;

use self::append::{front, InFlight};
use self::checkpoint::{CheckpointFile, Entry};
use self::chunk::{Limits, BATCH_BYTES, READ_BYTES};
use self::fingerprint::FileId;
use self::scan::Matcher;
use self::tail::Tailed;
use crate::config::FileSourceConfig;
use crate::event::EventEncoder;
use crate::metrics::Metrics;
use crate::sources::SourceContext;

/// Appends of one source waiting for the WAL at once: many small ones (many files with a
/// few lines each share one fsync by group commit)...
pub const MAX_IN_FLIGHT: usize = 32;
/// ...holding no more than this beyond two (two chunks of a busy file are always allowed,
/// so memory stays where it was with one file).
pub const IN_FLIGHT_BYTES: u64 = 2 << 20;
/// Checkpoint writes are spaced by this much per followed file...
const SAVE_SPACING_PER_FILE: Duration = Duration::from_micros(10);
/// ...up to this (a `kill -9` then reads at most this much of input again).
const MAX_SAVE_SPACING: Duration = Duration::from_millis(100);
/// Least time between scans brought forward for files waiting for a descriptor.
const EARLY_SCAN_AFTER: Duration = Duration::from_millis(5);
/// How long shutdown waits for in-flight appends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The files (and directories) the globs of `config` reach that this process cannot read
/// now, with why: what `gapless validate` warns about.
pub fn unreadable(config: &FileSourceConfig) -> Vec<(PathBuf, std::io::Error)> {
    let found = Matcher::new(&config.include, &config.exclude).find();
    let mut out = found.unlisted;
    for path in found.paths {
        if let Err(e) = std::fs::File::open(&path) {
            if !scan::is_absent(&e) {
                out.push((path, e));
            }
        }
    }
    out
}

/// How many files `config`'s globs match now (for `gapless validate`'s warning about an
/// `include` that matches nothing).
pub fn matched_files(config: &FileSourceConfig) -> usize {
    Matcher::new(&config.include, &config.exclude)
        .find()
        .paths
        .len()
}

/// Follows the files of `config` until shutdown.
pub async fn run(mut ctx: SourceContext, config: FileSourceConfig) -> crate::Result<()> {
    let mut source = Source::open(&ctx, config)?;
    ctx.mark_started();
    let result = source.follow(&mut ctx).await;
    source.finish().await;
    match result {
        Err(_) if ctx.stopping() => Ok(()),
        other => other,
    }
}

/// The state of one file source.
struct Source {
    name: String,
    config: FileSourceConfig,
    matcher: Matcher,
    checkpoints: CheckpointFile,
    first_start: bool,
    /// `read_from = "end"`: files present at the very first start, with their size then;
    /// reading them starts at their last line end before it.
    end_at: HashMap<FileId, u64>,
    /// Checkpoint entries loaded at start and not yet matched to an open file.
    restored: HashMap<FileId, Entry>,
    files: BTreeMap<u64, Tailed>,
    by_id: HashMap<FileId, u64>,
    next_key: u64,
    /// The file read last, for round-robin.
    last_key: u64,
    /// Paths that could not be opened (warned once).
    unopenable: HashSet<PathBuf>,
    /// Directories that could not be listed at the last scan, with the error kind (warned
    /// once per directory and kind).
    unlisted: HashMap<PathBuf, String>,
    /// Which files hold a descriptor.
    budget: budget::Budget,
    in_flight: VecDeque<InFlight>,
    limits: Limits,
    encoder: Arc<EventEncoder>,
    appender: Appender,
    metrics: Arc<Metrics>,
    /// Read buffer, lent to the blocking reader.
    buf: Vec<u8>,
    /// Scratch for first bytes.
    head: Vec<u8>,
    /// Scratch for the bytes before an offset.
    scratch: Vec<u8>,
    scans: u64,
    next_poll: Instant,
    paused_until: Option<Instant>,
    release_after: Duration,
    /// The checkpoint is behind the files' offsets.
    dirty: bool,
    /// When the checkpoint was last written.
    last_save: Option<Instant>,
    store_failing: bool,
    /// Bytes of files deleted before they were read to their end, not yet reported.
    lost_bytes: u64,
    /// Since when the globs match no file (and none is followed), and whether that was
    /// said: a source that reads nothing must not look healthy in silence.
    matched_nothing_since: Option<Instant>,
    warned_nothing: bool,
}

/// How long a file source may match no file before it says so.
const NOTHING_MATCHED_WARNING: Duration = Duration::from_secs(60);

impl Source {
    fn open(ctx: &SourceContext, config: FileSourceConfig) -> crate::Result<Self> {
        let mut checkpoints = CheckpointFile::new(&ctx.state_dir);
        let loaded = checkpoints.load()?;
        tracing::info!(
            source = %ctx.name,
            checkpoints = loaded.entries.len(),
            first_start = loaded.first_start,
            "file source starting"
        );
        let restored = loaded.entries.into_iter().map(|e| (e.id(), e)).collect();
        let budget = budget::Budget::new(
            config.max_open_files.unwrap_or_else(|| {
                crate::descriptors::default_max_open_files(crate::descriptors::nofile_limit(), 1)
            }),
            config.close_inactive,
        );
        Ok(Source {
            budget,
            name: ctx.name.clone(),
            matcher: Matcher::new(&config.include, &config.exclude),
            limits: Limits {
                read_bytes: READ_BYTES,
                line_bytes: config.max_line_bytes.max(1),
                batch_bytes: BATCH_BYTES,
            },
            release_after: (config.poll_interval * 2).max(config.partial_line_timeout),
            config,
            checkpoints,
            first_start: loaded.first_start,
            end_at: HashMap::new(),
            restored,
            files: BTreeMap::new(),
            by_id: HashMap::new(),
            next_key: 1,
            last_key: 0,
            unopenable: HashSet::new(),
            unlisted: HashMap::new(),
            in_flight: VecDeque::new(),
            encoder: Arc::new(ctx.encoder.clone()),
            appender: ctx.appender.clone(),
            metrics: ctx.metrics.clone(),
            buf: Vec::new(),
            head: Vec::new(),
            scratch: Vec::new(),
            scans: 0,
            next_poll: Instant::now(),
            paused_until: None,
            lost_bytes: 0,
            matched_nothing_since: None,
            warned_nothing: false,
            dirty: false,
            last_save: None,
            store_failing: false,
        })
    }

    /// Warns once when the globs have matched no file for a minute, and says when they
    /// match again.
    fn note_matches(&mut self, matched: usize, now: Instant) {
        if matched > 0 || !self.files.is_empty() {
            if self.warned_nothing {
                tracing::info!(source = %self.name, files = matched, "include matches files again");
            }
            self.matched_nothing_since = None;
            self.warned_nothing = false;
            return;
        }
        let since = *self.matched_nothing_since.get_or_insert(now);
        if !self.warned_nothing && now.duration_since(since) >= NOTHING_MATCHED_WARNING {
            self.warned_nothing = true;
            tracing::warn!(source = %self.name, include = ?self.config.include, exclude = ?self.config.exclude, "include has matched no file for a minute: this source reads nothing (check the globs and that the files exist)");
        }
    }

    /// The loop: scan and poll when due, take finished appends, read the next chunk of
    /// the next file with work, or wait for whichever comes first of the next poll, an
    /// append finishing and shutdown.
    async fn follow(&mut self, ctx: &mut SourceContext) -> crate::Result<()> {
        loop {
            if ctx.stopping() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= self.next_poll {
                self.scan(now);
                self.poll_files(now);
                self.next_poll = now + self.config.poll_interval;
            }
            self.take_finished()?;
            self.report_lost(ctx).await?;
            self.save(self.checkpoints.sync_due());
            if self.paused_until.is_some_and(|t| now >= t) {
                self.paused_until = None;
            }
            if self.paused_until.is_none() {
                if let Some(key) = self.pick(now) {
                    if !self.read_and_append(ctx, key).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
            if self.budget.waiting > 0 && self.in_flight.is_empty() && !self.budget.short(now) {
                // Files wait for a descriptor and every open one is done: hand them out
                // now rather than at the next poll.
                let soon = now + EARLY_SCAN_AFTER;
                if soon < self.next_poll {
                    self.next_poll = soon;
                    continue;
                }
            }
            let mut wake = self
                .paused_until
                .map_or(self.next_poll, |t| t.min(self.next_poll));
            if let (true, Some(t)) = (self.dirty, self.last_save) {
                wake = wake.min(t + MAX_SAVE_SPACING);
            }
            tokio::select! {
                () = ctx.stopped() => return Ok(()),
                () = tokio::time::sleep_until(wake.into()) => {}
                r = front(&mut self.in_flight) => {
                    if let Some(done) = self.in_flight.pop_front() {
                        self.settle(done, r)?;
                    }
                }
            }
        }
    }

    /// Appends a `source_overflow` gap record for input lost before it was read, so the
    /// loss travels downstream in the stream. Only once it is durable does the checkpoint
    /// forget the files (the caller saves after this).
    async fn report_lost(&mut self, ctx: &SourceContext) -> crate::Result<()> {
        if self.lost_bytes == 0 {
            return Ok(());
        }
        let now = crate::event::unix_nanos_now();
        let gap = gapless_wal::Gap {
            reason: gapless_wal::GapReason::SourceOverflow,
            seqs: None,
            records: 0,
            bytes: self.lost_bytes,
            from: now,
            to: now,
        };
        let mut batch = gapless_wal::AppendBatch::new();
        batch.push_gap(&gap);
        ctx.appender.append(batch).await?;
        self.metrics
            .dropped_events
            .get_or_create(&crate::metrics::ReasonLabel {
                reason: "source_overflow".into(),
            })
            .inc();
        self.lost_bytes = 0;
        self.dirty = true;
        Ok(())
    }

    /// Shutdown: let in-flight appends complete (for a while) and write the checkpoint.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while let Some(first) = self.in_flight.front_mut() {
            match tokio::time::timeout_at(deadline, &mut first.fut).await {
                Ok(r) => {
                    if let Some(done) = self.in_flight.pop_front() {
                        let _ = self.settle(done, r);
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        source = %self.name,
                        in_flight = self.in_flight.len(),
                        "shutdown: appends still wait for the WAL; their lines are read again at the next start"
                    );
                    break;
                }
            }
        }
        self.dirty = true;
        self.save(true);
    }

    /// The next file with work after the last one read (round-robin).
    fn pick(&mut self, now: Instant) -> Option<u64> {
        let timeout = self.config.partial_line_timeout;
        let after = self.files.range(self.last_key + 1..);
        let before = self.files.range(..=self.last_key);
        let key = after
            .chain(before)
            .find(|(_, f)| f.is_open() && f.has_work(now, timeout))
            .map(|(&k, _)| k)?;
        self.last_key = key;
        Some(key)
    }

    /// Writes the checkpoint if it is behind (or `sync` asks for a synced copy). With many
    /// files a write costs more, so writes are spaced by [`SAVE_SPACING_PER_FILE`] per
    /// file (a few followed files: after every append); a later call catches up.
    fn save(&mut self, sync: bool) {
        if !self.dirty && !sync {
            return;
        }
        let spacing = SAVE_SPACING_PER_FILE * (self.files.len() + self.restored.len()) as u32;
        if !sync
            && self
                .last_save
                .is_some_and(|t| t.elapsed() < spacing.min(MAX_SAVE_SPACING))
        {
            return;
        }
        self.last_save = Some(Instant::now());
        let entries: Vec<Entry> = self
            .files
            .values()
            .map(Tailed::entry)
            .chain(self.restored.values().cloned())
            .collect();
        self.metrics.source_files(
            &self.name,
            self.files
                .values()
                .map(Tailed::entry)
                .map(|e| crate::metrics::FileState {
                    path: e.path,
                    offset: e.offset,
                    size: e.size,
                })
                .collect(),
        );
        match self.checkpoints.store(&entries, sync) {
            Ok(()) => {
                self.dirty = false;
                if std::mem::take(&mut self.store_failing) {
                    tracing::info!(source = %self.name, "checkpoints are written again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.store_failing, true) {
                    tracing::warn!(
                        source = %self.name,
                        path = %self.checkpoints.path().display(),
                        error = %e,
                        "cannot write checkpoints; a restart would read more lines twice (none are lost)",
                    );
                }
            }
        }
    }
}
