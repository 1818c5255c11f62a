//! The one error type of the agent library. The binary's edge (`cli`) turns it into a
//! message and an exit code.

use std::io;
use std::path::PathBuf;

/// Everything that can stop a part of the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key and the line.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The write-ahead log failed.
    #[error("WAL: {0}")]
    Wal(#[from] gapless_wal::Error),
    /// A file or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file, directory or address involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be built (TLS material, proxy settings).
    #[error("sink {sink}: {reason}")]
    Client {
        /// The sink's name.
        sink: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// An I/O error with what was being done and to what.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of the agent library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
