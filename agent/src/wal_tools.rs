//! `gapless wal inspect|verify|dump|forget-cursor`: looking into a WAL directory from the
//! command line. `inspect`, `verify` and `dump` open it read-only ([`ReadOnlyWal`]): they
//! change no file, and refuse, naming the directory, while an agent has it open.
//! `forget-cursor` writes, so it opens the WAL for writing, and refuses likewise.

use std::io::Write;
use std::path::Path;

use gapless_wal::{ReadOnlyWal, RecordKind, Wal, WalOptions};
use serde_json::json;

use crate::error::Result;
use crate::event::{split_payload, Timestamp};
use crate::pipeline::wal_dir;

/// Large bounds: a tool must never refuse or drop anything because of its own options.
fn tool_options() -> WalOptions {
    WalOptions {
        max_bytes: u64::MAX / 4,
        ..WalOptions::default()
    }
}

/// The WAL directory of `data_dir`, which must exist.
fn existing_wal_dir(data_dir: &Path) -> Result<std::path::PathBuf> {
    let dir = wal_dir(data_dir);
    if !dir.exists() {
        return Err(crate::Error::io(
            "open WAL",
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no WAL here (is --data-dir right?)",
            ),
        ));
    }
    Ok(dir)
}

fn open_read_only(data_dir: &Path) -> Result<ReadOnlyWal> {
    Ok(ReadOnlyWal::open(
        existing_wal_dir(data_dir)?,
        tool_options(),
    )?)
}

/// Segments, sizes, sequence numbers, cursors and their backlog, as JSON.
pub fn inspect(data_dir: &Path, out: &mut dyn Write) -> Result<()> {
    let wal = open_read_only(data_dir)?;
    let s = wal.stats()?;
    let cursors: Vec<_> = s
        .cursors
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "next_seq": c.next,
                "backlog_records": c.backlog_records,
                "backlog_bytes": c.backlog_bytes,
                "oldest_unacked": c.oldest_unacked.map(|t| Timestamp::from_unix_nanos(t).as_str().to_string()),
            })
        })
        .collect();
    let v = json!({
        "dir": wal.dir().display().to_string(),
        "segments": s.segments,
        "bytes": s.bytes,
        "first_seq": s.first_seq,
        "last_seq": s.next_seq.saturating_sub(1),
        "cursors": cursors,
    });
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    Ok(())
}

/// Checks every segment header and record; prints damaged headers and ranges with the
/// seqs they cost, and bytes after the last record of the active segment that hold no
/// record (a torn write or a dirty tail, which cost no seq). Returns whether the WAL is
/// free of damage (a dirty tail is not damage).
pub fn verify(data_dir: &Path, out: &mut dyn Write) -> Result<bool> {
    let wal = open_read_only(data_dir)?;
    let spinner = crate::progress::spinner("checking every record of the WAL");
    let report = wal.verify();
    spinner.finish_and_clear();
    let report = report?;
    for seg in &report.segments {
        if seg.header_damaged {
            let _ = writeln!(
                out,
                "DAMAGED {} header (offset 0 length 32): records read by the first seq in the file name, {}",
                seg.path.display(),
                seg.first_seq
            );
        }
        for d in &seg.damaged {
            let lost = d
                .lost
                .map(|(a, b)| format!("seqs {a}..={b} lost"))
                .unwrap_or_else(|| "no record lost".into());
            let _ = writeln!(
                out,
                "DAMAGED {} offset {} length {}: {}",
                seg.path.display(),
                d.offset,
                d.len,
                lost
            );
        }
        if let Some(t) = seg.tail.filter(|t| t.dirty > 0) {
            let _ = writeln!(
                out,
                "TAIL {} offset {}: dirty tail of {} after the last record, holding no record (a torn write or stray bytes), then {} of zeros reserved; the agent cuts them when it starts",
                seg.path.display(),
                t.offset,
                bytes(t.dirty),
                bytes(t.reserved)
            );
        }
    }
    let records: u64 = report.segments.iter().map(|s| s.records).sum();
    let clean = report.is_clean();
    let damage = report
        .segments
        .iter()
        .map(|s| s.damaged.len() + usize::from(s.header_damaged))
        .sum::<usize>();
    let dirty = report.dirty_tail_bytes();
    let _ = writeln!(
        out,
        "{}: {} segments, {} intact records, last seq {}{}{}",
        if clean { "OK" } else { "DAMAGED" },
        report.segments.len(),
        records,
        wal.next_seq().saturating_sub(1),
        if clean {
            String::new()
        } else {
            format!(", {damage} damaged ranges")
        },
        if dirty > 0 {
            format!(", dirty tail of {}", bytes(dirty))
        } else {
            String::new()
        }
    );
    Ok(clean)
}

fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

/// Prints records as NDJSON from `from` on, at most `limit`.
pub fn dump(
    data_dir: &Path,
    from: Option<u64>,
    limit: Option<u64>,
    out: &mut dyn Write,
) -> Result<()> {
    let wal = open_read_only(data_dir)?;
    let start = from.unwrap_or(0).max(1);
    let available = wal.next_seq().saturating_sub(start);
    let pb = crate::progress::bar(limit.unwrap_or(available).min(available), "dumping records");
    let mut reader = wal.reader_from(from.unwrap_or(0));
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let batch = reader.try_read(left.min(1000) as usize, 8 << 20)?;
        if batch.is_empty() {
            break;
        }
        for r in batch {
            left = left.saturating_sub(1);
            let ts = Timestamp::from_unix_nanos(r.timestamp).as_str().to_string();
            let line = match (r.kind, r.gap()) {
                (RecordKind::Gap, Some(g)) => json!({
                    "seq": r.seq, "appended": ts, "kind": "gap", "reason": g.reason.as_str(),
                    "first_seq": g.seqs.map(|s| s.0), "last_seq": g.seqs.map(|s| s.1),
                    "events": g.records, "bytes": g.bytes,
                }),
                _ => {
                    let (source, event) =
                        split_payload(&r.payload).unwrap_or((b"", &r.payload[..]));
                    let event: serde_json::Value = serde_json::from_slice(event)
                        .unwrap_or_else(|_| String::from_utf8_lossy(event).into_owned().into());
                    json!({"seq": r.seq, "appended": ts, "kind": "event", "source": String::from_utf8_lossy(source), "event": event})
                }
            };
            let _ = writeln!(out, "{line}");
            pb.inc(1);
            if left == 0 {
                break;
            }
        }
    }
    pb.finish_and_clear();
    Ok(())
}

/// Deletes a cursor (a sink removed from the config), releasing what only it held.
pub fn forget_cursor(data_dir: &Path, name: &str) -> Result<bool> {
    let wal = Wal::open(existing_wal_dir(data_dir)?, tool_options())?;
    Ok(wal.remove_cursor(name)?)
}
