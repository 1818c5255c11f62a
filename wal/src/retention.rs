//! Retention: deleting sealed segments once every cursor has passed them (or when
//! `drop_oldest` gives them up). Never touches the active segment.
//!
//! Crash safety: a cursor is persisted before retention looks at it, and a segment leaves
//! the in-memory list before its file is unlinked, oldest first. Whatever the order in
//! which a crash interrupts "update cursor" and "delete segment", the next open finds a
//! contiguous run of segments and cursors at or before the first of them, which readers
//! treat as "start at the oldest record".

use std::fs;
use std::io;

use crate::record::Seq;
use crate::segment::sync_dir;
use crate::shared::{SegmentMeta, Shared};

/// Deletes every sealed segment whose records all lie below every cursor's position.
/// With no cursor at all nothing is deleted: nobody has consumed anything yet.
pub(crate) fn collect(shared: &Shared) {
    let _deleting = shared.deleting();
    let victims: Vec<SegmentMeta> = {
        let st = shared.lock();
        let Some(min) = st.min_cursor() else {
            return;
        };
        st.segments
            .iter()
            .enumerate()
            .take_while(|(i, s)| s.sealed && st.segment_seq_end(*i) <= min)
            .map(|(_, s)| s.clone())
            .collect()
    };
    if !victims.is_empty() {
        delete_segments(shared, &victims, None);
    }
}

/// Removes `victims` (a prefix of the segment list) from the list, then their files, then
/// syncs the directory. `dropped_below` marks the records as dropped by policy, so that
/// readers do not report the hole a second time.
pub(crate) fn delete_segments(
    shared: &Shared,
    victims: &[SegmentMeta],
    dropped_below: Option<Seq>,
) {
    {
        let mut st = shared.lock();
        for v in victims {
            if st
                .segments
                .front()
                .is_some_and(|s| s.first_seq == v.first_seq && s.sealed)
            {
                st.segments.pop_front();
            }
        }
        if let Some(below) = dropped_below {
            st.dropped_below = st.dropped_below.max(below);
        }
        st.space_epoch += 1;
    }
    shared.appender_wake.notify_one();
    for v in victims {
        let path = shared.segment_path(v.first_seq);
        match fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "deleted WAL segment"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "could not delete WAL segment")
            }
        }
    }
    if let Err(e) = sync_dir(&shared.dir) {
        tracing::error!(error = %e, "could not sync the WAL directory after deleting segments");
    }
}
