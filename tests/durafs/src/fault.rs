//! Injected faults: which are armed, and whether one fires for a given operation on a
//! given path. Paths are the live paths inside the mount (`/wal/00000000000000000001.seg`);
//! a fault limited to a path fires when that path contains the given substring, or, for a
//! substring ending in `$`, when the path ends with what comes before the `$` (`.json$`
//! hits the rename onto `checkpoints.json` but not the writes to `checkpoints.json.tmp`).

use crate::error::{Error, Result};

/// A fault to arm through [`crate::MountHandle::inject`] or the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `count` `fsync`/`fdatasync` calls (on files whose path contains `path`, or
    /// on any file) fail with `EIO`, and that file's unsynced writes are dropped.
    FsyncEio {
        /// How many calls fail.
        count: u32,
        /// Only files whose path contains this.
        path: Option<String>,
    },
    /// While on, write, create, mkdir, rename, fallocate and growing truncates fail with
    /// `ENOSPC` (on paths containing `path`, or everywhere).
    Enospc {
        /// On or off; off clears it whatever the path.
        on: bool,
        /// Only paths containing this.
        path: Option<String>,
    },
    /// The next `count` writes of more than one byte write only the first half and say so.
    ShortWrite {
        /// How many writes are cut short.
        count: u32,
    },
    /// Reads of files whose path contains `path` that touch `offset .. offset + len` fail
    /// with `EIO`, until cleared.
    ReadEio {
        /// Files whose path contains this.
        path: String,
        /// First byte that cannot be read.
        offset: u64,
        /// How many bytes cannot be read.
        len: u64,
    },
    /// Disarms every fault.
    Clear,
}

impl Fault {
    /// Parses the words after `fault` in a control command.
    pub fn parse(line: &str, words: &[&str]) -> Result<Fault> {
        let bad = |reason| Error::BadCommand {
            line: line.to_string(),
            reason,
        };
        let num = |w: Option<&&str>| -> Result<u64> {
            w.and_then(|w| w.parse().ok())
                .ok_or_else(|| bad("expected a number"))
        };
        let path = |w: Option<&&str>| w.map(|s| s.to_string());
        match words.first().copied() {
            Some("fsync-eio") => Ok(Fault::FsyncEio {
                count: num(words.get(1))? as u32,
                path: path(words.get(2)),
            }),
            Some("enospc") => Ok(Fault::Enospc {
                on: match words.get(1).copied() {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err(bad("enospc takes on or off")),
                },
                path: path(words.get(2)),
            }),
            Some("short-write") => Ok(Fault::ShortWrite {
                count: num(words.get(1))? as u32,
            }),
            Some("read-eio") => Ok(Fault::ReadEio {
                path: path(words.get(1)).ok_or_else(|| bad("read-eio needs a path"))?,
                offset: num(words.get(2))?,
                len: num(words.get(3))?,
            }),
            Some("clear") => Ok(Fault::Clear),
            _ => Err(bad(
                "faults are fsync-eio, enospc, short-write, read-eio and clear",
            )),
        }
    }
}

/// The armed faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    fsync_eio: Option<(u32, Option<String>)>,
    enospc: Option<Option<String>>,
    short_writes: u32,
    read_eio: Vec<(String, u64, u64)>,
    /// How many times a fault fired.
    pub fired: u64,
}

fn matches(filter: &Option<String>, path: &str) -> bool {
    filter.as_deref().is_none_or(|f| path_matches(f, path))
}

/// Whether `path` contains `filter`, or ends with it when `filter` ends in `$`.
fn path_matches(filter: &str, path: &str) -> bool {
    match filter.strip_suffix('$') {
        Some(end) => path.ends_with(end),
        None => path.contains(filter),
    }
}

impl Faults {
    pub fn arm(&mut self, fault: Fault) {
        match fault {
            Fault::FsyncEio { count, path } => self.fsync_eio = Some((count, path)),
            Fault::Enospc { on: true, path } => self.enospc = Some(path),
            Fault::Enospc { on: false, .. } => self.enospc = None,
            Fault::ShortWrite { count } => self.short_writes = count,
            Fault::ReadEio { path, offset, len } => self.read_eio.push((path, offset, len)),
            Fault::Clear => {
                *self = Faults {
                    fired: self.fired,
                    ..Faults::default()
                }
            }
        }
    }

    /// Whether this `fsync` of `path` fails (and uses up one of the armed count).
    pub fn fsync_fails(&mut self, path: &str) -> bool {
        let Some((count, filter)) = &mut self.fsync_eio else {
            return false;
        };
        if *count == 0 || !matches(filter, path) {
            return false;
        }
        *count -= 1;
        self.fired += 1;
        true
    }

    /// Whether an operation that takes space on `path` fails with `ENOSPC`.
    pub fn no_space(&mut self, path: &str) -> bool {
        let hit = self.enospc.as_ref().is_some_and(|f| matches(f, path));
        self.fired += u64::from(hit);
        hit
    }

    /// How many of `len` bytes this write writes.
    pub fn write_len(&mut self, len: usize) -> usize {
        if self.short_writes == 0 || len < 2 {
            return len;
        }
        self.short_writes -= 1;
        self.fired += 1;
        len / 2
    }

    /// Whether a read of `offset .. offset + len` of `path` fails with `EIO`.
    pub fn read_fails(&mut self, path: &str, offset: u64, len: u64) -> bool {
        let hit = self
            .read_eio
            .iter()
            .any(|(p, at, n)| path_matches(p, path) && offset < at + n && *at < offset + len);
        self.fired += u64::from(hit);
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_words_parse_into_faults() {
        let f = |l: &str| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Fault::parse(l, &w)
        };
        assert_eq!(
            f("fsync-eio 2 wal").unwrap(),
            Fault::FsyncEio {
                count: 2,
                path: Some("wal".into())
            }
        );
        assert_eq!(
            f("enospc on").unwrap(),
            Fault::Enospc {
                on: true,
                path: None
            }
        );
        assert_eq!(
            f("read-eio x.seg 10 5").unwrap(),
            Fault::ReadEio {
                path: "x.seg".into(),
                offset: 10,
                len: 5
            }
        );
        assert!(f("enospc maybe").is_err());
        assert!(f("melt").is_err());
    }

    #[test]
    fn fsync_fault_fires_count_times_on_matching_paths_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::FsyncEio {
            count: 2,
            path: Some("seg".into()),
        });
        assert!(!faults.fsync_fails("/a.cursor"));
        assert!(faults.fsync_fails("/1.seg"));
        assert!(faults.fsync_fails("/2.seg"));
        assert!(!faults.fsync_fails("/3.seg"));
    }

    #[test]
    fn a_path_ending_in_a_dollar_matches_the_end_of_paths_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::Enospc {
            on: true,
            path: Some("checkpoints.json$".into()),
        });
        assert!(faults.no_space("/data/sources/app/checkpoints.json"));
        assert!(!faults.no_space("/data/sources/app/checkpoints.json.tmp"));
    }

    #[test]
    fn read_fault_fires_on_overlapping_reads_only() {
        let mut faults = Faults::default();
        faults.arm(Fault::ReadEio {
            path: "f".into(),
            offset: 100,
            len: 10,
        });
        assert!(!faults.read_fails("/f", 0, 100));
        assert!(faults.read_fails("/f", 95, 10));
        assert!(!faults.read_fails("/f", 110, 10));
    }
}
