//! The settings of a log: sizes, durability and what to do when full. Validated once in
//! [`WalOptions::validate`], so the rest of the crate can trust them.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::SEGMENT_HEADER_LEN;

/// When an append counts as complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// An append completes only after `fdatasync` of its bytes. Survives power loss.
    #[default]
    Always,
    /// An append completes after `write()`; a timer syncs at least every `sync_interval`,
    /// and readers see records once synced. Survives `kill -9`; a power cut may lose up to
    /// one interval.
    Interval,
    /// An append completes after `write()`; the OS decides when to write back, and readers
    /// see records at once. Survives `kill -9` only: after a power cut, seqs readers had
    /// seen may be handed out again.
    Never,
}

/// What an append does when the log holds `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Wait until consumers acknowledge enough to free space ([`crate::Appender::try_append`]
    /// fails with [`Error::Full`] instead of waiting).
    #[default]
    Block,
    /// Delete the oldest segments, although unacknowledged, and record a gap.
    DropOldest,
    /// Refuse the new records and record a gap.
    DropNewest,
}

/// Options of [`crate::Wal::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct WalOptions {
    /// Target size of one segment file. Default: 64 MiB. Minimum: 64 KiB. If it is larger
    /// than a quarter of `max_bytes`, a quarter of `max_bytes` is used, so that retention
    /// and `drop_oldest` always have sealed segments to delete.
    pub segment_bytes: u64,
    /// Bound on the bytes of all segments. Default: 10 GiB. Minimum: 256 KiB.
    pub max_bytes: u64,
    /// When an append completes. Default: [`Durability::Always`].
    pub durability: Durability,
    /// Longest time unsynced bytes wait under [`Durability::Interval`]. Default: 100 ms.
    pub sync_interval: Duration,
    /// Policy when full. Default: [`WhenFull::Block`].
    pub when_full: WhenFull,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_bytes: 10 << 30,
            durability: Durability::Always,
            sync_interval: Duration::from_millis(100),
            when_full: WhenFull::Block,
        }
    }
}

impl WalOptions {
    /// Checks the options and returns them with the effective segment size.
    pub(crate) fn validate(mut self) -> Result<Self> {
        if self.max_bytes < 256 << 10 {
            return Err(Error::InvalidOption {
                option: "max_bytes",
                reason: format!("{} bytes is below the minimum of 256 KiB", self.max_bytes),
            });
        }
        if self.segment_bytes < 64 << 10 {
            return Err(Error::InvalidOption {
                option: "segment_bytes",
                reason: format!(
                    "{} bytes is below the minimum of 64 KiB",
                    self.segment_bytes
                ),
            });
        }
        self.segment_bytes = self.segment_bytes.min(self.max_bytes / 4);
        if self.durability == Durability::Interval && self.sync_interval.is_zero() {
            return Err(Error::InvalidOption {
                option: "sync_interval",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(self)
    }

    /// The largest payload one record may carry with these options.
    pub fn max_record_bytes(&self) -> usize {
        let seg = self.segment_bytes.min(self.max_bytes / 4);
        (seg as usize).saturating_sub(SEGMENT_HEADER_LEN + crate::record::RECORD_HEADER_LEN)
    }
}
