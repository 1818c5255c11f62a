//! Capacity: what the appender does with appends that do not fit under `max_bytes` —
//! wait (`block`), delete the oldest segments (`drop_oldest`) or refuse them
//! (`drop_newest`) — and the gap records that make every drop visible in-band.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{complete, SegmentWriter};
use crate::batch::AppendBatch;
use crate::error::Error;
use crate::options::WhenFull;
use crate::record::{Gap, GapReason, RecordKind};
use crate::retention;
use crate::shared::{now_nanos, AppendRequest, SegmentMeta, State};

/// How long refusals accumulate before their gap record is written even while the log
/// stays full (a gap record may go past `max_bytes`; this bounds how many do).
pub(super) const REFUSED_GAP_EVERY: Duration = Duration::from_secs(1);

/// Records refused by `drop_newest` that no gap record describes yet.
#[derive(Default)]
pub(super) struct Refused {
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) since: Option<Instant>,
}

impl SegmentWriter {
    pub(super) fn refused_due(&self) -> bool {
        self.refused
            .since
            .is_some_and(|t| t.elapsed() >= REFUSED_GAP_EVERY)
    }

    /// Splits `pending` into what fits now (returned) and what waits, failing what must
    /// not wait, and applying the `when_full` policy.
    pub(super) fn admit(&mut self, closing: bool) -> Vec<AppendRequest> {
        let max = self.shared.opts.max_bytes;
        let mut used = self.shared.lock().total_bytes();
        let mut admitted_bytes = 0;
        let mut admitted = Vec::new();
        let mut waiting = VecDeque::new();
        let mut blocked = false;
        while let Some(req) = self.pending.pop_front() {
            let size = req.batch.encoded_len();
            if !blocked && used + admitted_bytes + size <= max {
                admitted_bytes += size;
                admitted.push(req);
                continue;
            }
            match self.shared.opts.when_full {
                _ if closing => complete(req, Err(Error::Closed)),
                WhenFull::Block | WhenFull::DropOldest if req.no_wait && blocked => {
                    complete(req, Err(Error::Full { used, max }))
                }
                WhenFull::Block if req.no_wait => complete(req, Err(Error::Full { used, max })),
                WhenFull::Block => {
                    blocked = true;
                    waiting.push_back(req);
                }
                WhenFull::DropNewest => {
                    self.refuse(&req.batch);
                    let records = req.batch.len();
                    complete(req, Err(Error::DroppedNewest { records }));
                }
                WhenFull::DropOldest => {
                    let want = (used + admitted_bytes + size).saturating_sub(max);
                    self.drop_oldest(want);
                    used = self.shared.lock().total_bytes();
                    // Whatever could be dropped is gone; the batch fits now (a batch is at
                    // most half of max_bytes and a segment a quarter) or this one cycle
                    // overshoots.
                    admitted_bytes += size;
                    admitted.push(req);
                }
            }
        }
        if blocked {
            tracing::debug!(
                waiting = waiting.len(),
                used,
                max,
                "WAL full; appends wait for space"
            );
        }
        self.pending = waiting;
        self.blocked = blocked;
        admitted
    }

    pub(super) fn refuse(&mut self, batch: &AppendBatch) {
        let now = now_nanos();
        let r = &mut self.refused;
        if r.records == 0 {
            r.from = now;
            r.since = Some(Instant::now());
        }
        r.records += batch.len() as u64;
        r.bytes += batch.encoded_len();
        r.to = now;
        self.shared.lock().counters.dropped_newest_records += batch.len() as u64;
    }

    pub(super) fn write_refused_gap(&mut self) {
        let r = std::mem::take(&mut self.refused);
        let gap = Gap {
            reason: GapReason::DropNewest,
            seqs: None,
            records: r.records,
            bytes: r.bytes,
            from: r.from,
            to: r.to,
        };
        tracing::warn!(
            records = r.records,
            bytes = r.bytes,
            "WAL full: new records refused (drop_newest); gap record written"
        );
        if let Err(e) = self.write_internal(RecordKind::Gap, &gap.encode()) {
            tracing::error!(error = %e, "could not write the gap record for refused records; will retry");
            self.refused = r;
        }
    }

    /// `drop_oldest`: deletes the oldest segments, unacknowledged or not, until `want`
    /// bytes are free. The gap record describing them is written and synced first, so a
    /// crash in between leaves a record that over-reports, never a silent hole.
    pub(super) fn drop_oldest(&mut self, want: u64) {
        let shared = self.shared.clone();
        let _deleting = shared.deleting();
        let mut victims = pick_oldest(&self.shared.lock(), want);
        if victims.is_empty() {
            if let Err(e) = self.rollover() {
                tracing::error!(error = %e, "drop_oldest could not seal the active segment");
                return;
            }
            victims = pick_oldest(&self.shared.lock(), want);
        }
        let Some(first) = victims.first() else {
            return;
        };
        let (first_seq, seq_end, to) = {
            let st = self.shared.lock();
            let first_seq = first.first_seq;
            let last_victim = victims.last().map_or(first_seq, |v| v.first_seq);
            let idx = st.segment_index(last_victim).unwrap_or(0);
            (
                first_seq,
                st.segment_seq_end(idx),
                victims.last().and_then(|v| v.last_ts),
            )
        };
        let from = first.first_ts.unwrap_or(0);
        let bytes: u64 = victims.iter().map(|v| v.len).sum();
        let records = seq_end - first_seq;
        let gap = Gap {
            reason: GapReason::DropOldest,
            seqs: (records > 0).then_some((first_seq, seq_end - 1)),
            records,
            bytes,
            from,
            to: to.unwrap_or(0),
        };
        if let Err(e) = self.write_internal(RecordKind::Gap, &gap.encode()) {
            tracing::error!(error = %e, "drop_oldest could not write its gap record; nothing dropped");
            return;
        }
        tracing::warn!(
            first_seq,
            last_seq = seq_end.saturating_sub(1),
            records,
            bytes,
            "WAL full: dropped oldest unacknowledged records (drop_oldest); gap record written"
        );
        {
            let mut st = self.shared.lock();
            st.remember_drop(gap);
            st.counters.dropped_oldest_records += records;
        }
        retention::delete_segments(&self.shared, &victims, Some(seq_end));
    }
}

/// Sealed segments from the oldest on, until they hold `want` bytes.
fn pick_oldest(st: &State, want: u64) -> Vec<SegmentMeta> {
    let mut freed = 0;
    st.segments
        .iter()
        .take_while(|s| s.sealed)
        .take_while(|s| {
            let take = freed < want;
            freed += s.len;
            take
        })
        .cloned()
        .collect()
}
