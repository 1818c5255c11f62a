//! The descriptor budget. At start the soft `RLIMIT_NOFILE` is raised to the hard limit (as
//! servers commonly do); part of the limit is kept in reserve for what the agent cannot do
//! without — the WAL's segments and lock, cursors, checkpoints, sockets to sinks and from
//! clients, the API — and the rest is shared among the file sources, which cap their open
//! followed files at it (`max_open_files`). Owns the numbers only; the file source decides
//! which files hold a descriptor.

use std::sync::OnceLock;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Highest soft limit asked for when the hard limit is unlimited (Linux's default
/// `fs.nr_open`).
const CEILING: u64 = 1 << 20;
/// Fewest descriptors kept for everything but followed files.
const MIN_RESERVE: u64 = 32;
/// Most descriptors kept for everything but followed files.
const MAX_RESERVE: u64 = 1024;
/// Fewest followed files a file source may keep open, whatever the limit.
const MIN_FILES: u64 = 4;

static LIMIT: OnceLock<u64> = OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20) and remembers the
/// result; later calls return the remembered limit. A refused raise keeps the soft limit
/// and is logged.
pub fn raise_nofile_limit() -> u64 {
    *LIMIT.get_or_init(|| {
        let now = getrlimit(Resource::Nofile);
        let soft = now.current.unwrap_or(CEILING);
        let hard = now.maximum.unwrap_or(CEILING).min(CEILING);
        if hard <= soft {
            return soft;
        }
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: now.maximum,
            },
        ) {
            Ok(()) => {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-files limit; keeping the soft limit");
                soft
            }
        }
    })
}

/// The open-files limit in force (raised first, if that was not done yet).
pub fn nofile_limit() -> u64 {
    raise_nofile_limit()
}

/// Descriptors kept for everything but followed files under `limit`: a quarter of it,
/// between 32 and 1024.
pub fn reserve(limit: u64) -> u64 {
    (limit / 4).clamp(MIN_RESERVE, MAX_RESERVE)
}

/// The default `max_open_files` of each of `file_sources` file sources under `limit`:
/// what the reserve leaves, shared equally, and at least 4.
pub fn default_max_open_files(limit: u64, file_sources: usize) -> usize {
    let share = limit.saturating_sub(reserve(limit)) / (file_sources.max(1) as u64);
    share.max(MIN_FILES) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_and_the_share_follow_the_limit() {
        assert_eq!(default_max_open_files(64, 1), 32);
        assert_eq!(default_max_open_files(1024, 1), 768);
        assert_eq!(default_max_open_files(1024, 2), 384);
        assert_eq!(default_max_open_files(1 << 20, 1), (1 << 20) - 1024);
        assert_eq!(default_max_open_files(20, 3), 4, "never fewer than 4");
    }

    #[test]
    fn the_raised_limit_is_at_least_the_soft_limit() {
        let before = getrlimit(Resource::Nofile).current.unwrap_or(CEILING);
        assert!(raise_nofile_limit() >= before.min(CEILING));
        assert_eq!(raise_nofile_limit(), nofile_limit());
    }
}
