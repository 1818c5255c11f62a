//! The one error type of `gapless-wal`. Every variant says where and what, so that a
//! damaged file never looks like a disk fault and a disk fault never looks like damage.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file of the log failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing (`"open segment"`, `"fdatasync"`, …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process (or another `Wal` in this one) holds the directory's lock.
    #[error(
        "WAL directory {dir} is locked by another process (only one gapless may use it at a time)"
    )]
    Locked {
        /// The directory whose lock is taken.
        dir: PathBuf,
    },
    /// A read-only open ([`crate::ReadOnlyWal`]) found the directory in use by a process
    /// that has it open for writing (a running agent): its files change under a reader, so
    /// nothing is read.
    #[error(
        "WAL directory {dir} is in use by a running process (a gapless agent?); stop it to read the WAL from the command line, or use `gapless status`"
    )]
    InUse {
        /// The directory whose lock is taken.
        dir: PathBuf,
    },
    /// A file in the directory was written by a newer, incompatible format.
    #[error("{path} has WAL format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The segment or cursor file.
        path: PathBuf,
        /// The version found in its header.
        found: u16,
        /// The version this build writes and reads.
        supported: u16,
    },
    /// The options given to [`crate::Wal::open`] cannot work.
    #[error("invalid WAL option {option}: {reason}")]
    InvalidOption {
        /// The option's name (`"segment_bytes"`, …).
        option: &'static str,
        /// Why the value was refused.
        reason: String,
    },
    /// A cursor name that cannot become a file name.
    #[error("invalid cursor name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ - .")]
    InvalidCursorName {
        /// The refused name.
        name: String,
    },
    /// The cursor is already open through another handle.
    #[error("cursor {name:?} is already open")]
    CursorBusy {
        /// The cursor's name.
        name: String,
    },
    /// An ack for a sequence number the cursor has not delivered.
    #[error("cursor {name:?} cannot ack seq {seq}: only up to {delivered} has been read")]
    AckBeyondRead {
        /// The cursor's name.
        name: String,
        /// The sequence number acknowledged.
        seq: u64,
        /// The last sequence number the cursor has handed out.
        delivered: u64,
    },
    /// One record is larger than a segment can hold.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The payload size.
        size: usize,
        /// The largest payload a segment accepts.
        max: usize,
    },
    /// The log is full and the append was made with [`crate::Appender::try_append`]
    /// (policy `block`): the caller should answer "busy" and try later.
    #[error("WAL is full ({used} of {max} bytes)")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The configured bound.
        max: u64,
    },
    /// The log is full and the policy `drop_newest` refused these records. The refusal is
    /// recorded in-band as a gap record.
    #[error("WAL is full: {records} new records refused (policy drop_newest)")]
    DroppedNewest {
        /// How many records of this append were refused.
        records: usize,
    },
    /// The file system is out of space; the log is unchanged and appending resumes once
    /// space returns.
    #[error("no space left for the WAL in {dir}")]
    DiskFull {
        /// The log's directory.
        dir: PathBuf,
    },
    /// The log was closed while the operation waited.
    #[error("WAL is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
