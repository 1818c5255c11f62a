//! The state the appender, the cursors and retention share: the list of segments, the
//! registered cursors and the published end of the log. One mutex guards it; nobody holds
//! it across I/O.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

use crate::batch::{AppendBatch, SeqRange};
use crate::error::{Error, Result};
use crate::options::WalOptions;
use crate::record::{Gap, Seq};
use crate::segment::segment_path;
use crate::syncer::SyncQueue;

/// What the log knows about one segment file.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub first_seq: Seq,
    /// Bytes written, header included.
    pub len: u64,
    /// Bytes readers may interpret (equal to `len` once sealed).
    pub published_len: u64,
    pub sealed: bool,
    /// Append time of its first record, when known.
    pub first_ts: Option<u64>,
    /// Append time of its last record, when known.
    pub last_ts: Option<u64>,
}

/// A cursor as the log sees it: where it stands durably.
#[derive(Debug, Clone)]
pub(crate) struct CursorEntry {
    /// The first sequence number not yet acknowledged (persisted).
    pub next: Seq,
    /// Where the record `next` starts, when known: (segment first seq, offset).
    pub hint: Option<(Seq, u64)>,
    pub open: bool,
}

pub(crate) struct AppendRequest {
    pub batch: AppendBatch,
    /// `try_append`: fail with `Full` instead of waiting.
    pub no_wait: bool,
    pub done: oneshot::Sender<Result<SeqRange>>,
}

/// Counters since open, for stats.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub appended_records: u64,
    pub appended_bytes: u64,
    pub syncs: u64,
    pub sync_nanos: u64,
    pub dropped_oldest_records: u64,
    pub dropped_newest_records: u64,
    pub disk_full_errors: u64,
}

pub(crate) struct State {
    /// Oldest first; the last one is the active segment.
    pub segments: VecDeque<SegmentMeta>,
    pub queue: VecDeque<AppendRequest>,
    /// Requests whose write must be redone, before anything in `queue`.
    pub retry: VecDeque<AppendRequest>,
    pub closing: bool,
    pub cursors: BTreeMap<String, CursorEntry>,
    /// Missing records below this were deleted by `drop_oldest`, which wrote a gap record
    /// for them: readers skip such holes without a gap of their own.
    pub dropped_below: Seq,
    /// Sequence number the next published record gets; readers see everything below it.
    pub published_next: Seq,
    /// Recent `drop_oldest` drops, oldest first (bounded), so that a reader jumping over
    /// a dropped range can say how many bytes and which time span it lost.
    pub drops: VecDeque<Gap>,
    /// Bumped whenever space is freed, to wake an appender waiting for it.
    pub space_epoch: u64,
    pub counters: Counters,
}

impl State {
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn segment_index(&self, first_seq: Seq) -> Option<usize> {
        self.segments
            .binary_search_by_key(&first_seq, |s| s.first_seq)
            .ok()
    }

    /// The last sequence number a segment holds (or would hold): one before the next
    /// segment's first, or before `published_next` for the active one.
    pub fn segment_seq_end(&self, idx: usize) -> Seq {
        self.segments
            .get(idx + 1)
            .map_or(self.published_next, |s| s.first_seq)
    }

    /// The index of the segment that holds `seq`, or the first segment after it.
    pub fn locate(&self, seq: Seq) -> Option<usize> {
        let idx = self.segments.partition_point(|s| s.first_seq <= seq);
        if idx == 0 {
            (!self.segments.is_empty()).then_some(0)
        } else {
            Some(idx - 1)
        }
    }

    /// Remembers a drop for readers (see `drops`).
    pub fn remember_drop(&mut self, gap: Gap) {
        const KEEP: usize = 1024;
        if self.drops.len() == KEEP {
            self.drops.pop_front();
        }
        self.drops.push_back(gap);
    }

    /// Bytes and time span of the remembered drops overlapping `first ..= last`.
    pub fn dropped_in(&self, first: Seq, last: Seq) -> (u64, u64, u64) {
        let mut bytes = 0;
        let mut from = u64::MAX;
        let mut to = 0;
        for g in &self.drops {
            if let Some((a, b)) = g.seqs {
                if a <= last && first <= b {
                    bytes += g.bytes;
                    from = from.min(g.from);
                    to = to.max(g.to);
                }
            }
        }
        (bytes, if from == u64::MAX { 0 } else { from }, to)
    }

    /// The smallest `next` of all cursors; `None` when there is no cursor.
    pub fn min_cursor(&self) -> Option<Seq> {
        self.cursors.values().map(|c| c.next).min()
    }
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: WalOptions,
    pub max_payload: usize,
    pub state: Mutex<State>,
    /// Wakes the appender thread: a new request, freed space, or close.
    pub appender_wake: Condvar,
    /// Carries `published_next`; readers wait on it for new records.
    pub published: watch::Sender<Seq>,
    /// Held by whoever deletes segments (retention, `drop_oldest`), one at a time.
    pub deleting: Mutex<()>,
    /// Groups written under `durability = always` waiting for their `fdatasync`.
    pub syncer: SyncQueue,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on with it
        // rather than turning one bug into a crash loop.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn deleting(&self) -> MutexGuard<'_, ()> {
        self.deleting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn segment_path(&self, first_seq: Seq) -> PathBuf {
        segment_path(&self.dir, first_seq)
    }

    /// Makes the active segment's records up to `published_len` (seqs below `next`)
    /// visible to readers.
    pub fn publish(
        &self,
        published_len: u64,
        next: Seq,
        first_now: u64,
        last_now: u64,
        records: u64,
        bytes: u64,
    ) {
        {
            let mut st = self.lock();
            if let Some(active) = st.segments.back_mut() {
                active.published_len = published_len;
                active.first_ts.get_or_insert(first_now);
                active.last_ts = Some(last_now);
            }
            st.published_next = next;
            st.counters.appended_records += records;
            st.counters.appended_bytes += bytes;
        }
        self.published.send_replace(next);
    }

    /// Hands requests back to the appender to write again, ahead of new ones and in their
    /// order (a retry after a full disk).
    pub fn requeue_front(&self, reqs: Vec<AppendRequest>) {
        if reqs.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.retry.extend(reqs);
        drop(st);
        self.appender_wake.notify_one();
    }

    pub fn submit(&self, req: AppendRequest) -> Result<()> {
        let mut st = self.lock();
        if st.closing {
            return Err(Error::Closed);
        }
        st.queue.push_back(req);
        drop(st);
        self.appender_wake.notify_one();
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
