//! The one error type of durafs: what failed, on which path, and why.

use std::io;
use std::path::PathBuf;

/// Everything durafs can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system call on the backing directory, the mount point or the control socket.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What durafs was doing.
        op: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file system was already cut; nothing more can be done with it.
    #[error("the file system was already cut")]
    AlreadyCut,
    /// A control command that does not parse.
    #[error("bad control command {line:?}: {reason}")]
    BadCommand {
        /// The line as received.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
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

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
