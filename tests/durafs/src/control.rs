//! The control socket: a line protocol on a Unix socket, one client at a time, one answer
//! line per command line. Commands:
//!
//! | line | answer |
//! | --- | --- |
//! | `cut drop\|torn\|pages` | `ok` once the mount is gone and the backing directory holds the durable state; then the server returns |
//! | `fault fsync-eio <count> [path-substring]` | `ok` |
//! | `fault enospc on\|off [path-substring]` | `ok` |
//! | `fault short-write <count>` | `ok` |
//! | `fault read-eio <path-substring> <offset> <len>` | `ok` |
//! | `fault clear` | `ok` |
//! | `stats` | one line of JSON: `fsyncs`, `fsyncdirs`, `bytes_pending`, `cuts`, `faults_fired` |
//!
//! A `path-substring` ending in `$` matches the end of paths only (see `fault.rs`). A line
//! that does not parse, or a cut that fails, is answered `error: <reason>`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::mount::{CutReport, MountHandle};
use crate::overlay::CutMode;

/// One command of the control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `cut <mode>`.
    Cut(CutMode),
    /// `fault …`.
    Fault(Fault),
    /// `stats`.
    Stats,
}

impl Command {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<Command> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = |reason| Error::BadCommand {
            line: line.to_string(),
            reason,
        };
        match words.first().copied() {
            Some("cut") => match words.get(1).map(|m| m.parse()) {
                Some(Ok(mode)) if words.len() == 2 => Ok(Command::Cut(mode)),
                _ => Err(bad("cut takes one mode: drop, torn or pages")),
            },
            Some("fault") => Fault::parse(line, &words[1..]).map(Command::Fault),
            Some("stats") => Ok(Command::Stats),
            _ => Err(bad("commands are cut, fault and stats")),
        }
    }
}

/// Serves the control socket at `socket` until a `cut` succeeds; returns what it did.
pub fn serve(handle: MountHandle, socket: &Path) -> Result<CutReport> {
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|e| Error::io("bind control socket", socket, e))?;
    let mut handle = Some(handle);
    for conn in listener.incoming() {
        let conn = conn.map_err(|e| Error::io("accept on control socket", socket, e))?;
        let mut out = conn
            .try_clone()
            .map_err(|e| Error::io("control connection", socket, e))?;
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            let (answer, report) = match (Command::parse(&line), handle.as_ref()) {
                (Err(e), _) => (format!("error: {e}"), None),
                (Ok(_), None) => (format!("error: {}", Error::AlreadyCut), None),
                (Ok(Command::Stats), Some(h)) => (h.stats().to_json(), None),
                (Ok(Command::Fault(f)), Some(h)) => {
                    h.inject(f);
                    ("ok".to_string(), None)
                }
                (Ok(Command::Cut(mode)), Some(_)) => match handle.take().map(|h| h.cut(mode)) {
                    Some(Ok(report)) => ("ok".to_string(), Some(report)),
                    Some(Err(e)) => (format!("error: {e}"), None),
                    None => (format!("error: {}", Error::AlreadyCut), None),
                },
            };
            let _ = out.write_all(format!("{answer}\n").as_bytes());
            if let Some(report) = report {
                let _ = std::fs::remove_file(socket);
                return Ok(report);
            }
        }
    }
    Err(Error::io(
        "control socket closed",
        socket,
        std::io::ErrorKind::UnexpectedEof.into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_parse_into_commands() {
        assert_eq!(
            Command::parse("cut torn").unwrap(),
            Command::Cut(CutMode::Torn)
        );
        assert_eq!(Command::parse("stats").unwrap(), Command::Stats);
        assert_eq!(
            Command::parse("fault short-write 3").unwrap(),
            Command::Fault(Fault::ShortWrite { count: 3 })
        );
        assert!(Command::parse("cut").is_err());
        assert!(Command::parse("cut gently").is_err());
        assert!(Command::parse("reboot").is_err());
    }
}
