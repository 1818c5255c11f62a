//! The journald source: reads the systemd journal through a `journalctl` child process and
//! acknowledges an entry (saves its `__CURSOR`, [`cursor`]) only once its WAL append
//! completed. Owns the child's arguments, its restarts and the cursor rule; the mapping of
//! entries to events is [`entry`]'s.
//!
//! Each round runs two children (all with `--merge --output=json --all --no-tail`, plus
//! the configured matches):
//! 1. Catch up, without `--follow`: from the saved cursor with `--cursor=C` (so the first
//!    entry shows whether C still exists), or from the journal's start when there is none.
//!    If the first entry is not C, the journal was vacuumed past it while the agent was
//!    stopped: a `source_overflow` gap record goes into the WAL before the entries.
//! 2. Follow from the last entry read, `--follow --after-cursor=C`.
//!
//! Why not one `--follow`: `--follow` alone starts with only the last 10 entries;
//! without `--merge` it follows only the newest boot; and `--follow --after-cursor=C`
//! with C in an older boot (without `--merge`) skips the rest of that boot and the first
//! entry of the next. `--after-cursor` with a vacuumed C also skips the oldest entry left,
//! which `--cursor` does not.
//!
//! A following child that prints nothing for [`HANG_CHECK`] while a one-shot
//! `journalctl --after-cursor=C --lines=1` shows a newer entry, and still nothing within
//! [`HANG_GRACE`], is hung: it is killed. A child that exits (or cannot start, or hung) is
//! restarted with backoff, logged (once per
//! distinct error while it keeps failing), counted in
//! `gapless_source_journalctl_restarts_total` and shown in `/status`.
//! `read_from = "end"` at the very first start saves the cursor of the newest matching
//! entry (`--lines=1`) before reading; later starts always resume from the saved cursor.

pub mod cursor;
pub mod entry;

use std::process::Stdio;
use std::time::Duration;

use gapless_wal::{AppendBatch, PendingAppend};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::{JournaldSourceConfig, ReadFrom};
use crate::metrics::{ReasonLabel, SourceLabel};
use crate::sources::SourceContext;
use cursor::CursorFile;
use entry::Entry;

/// Most entries in one WAL append.
const MAX_BATCH: usize = 4096;
/// How long a started batch waits for more entries before it is appended.
const LINGER: Duration = Duration::from_millis(5);
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A following child silent this long is checked: does the journal hold newer entries?
const HANG_CHECK: Duration = Duration::from_secs(10);
/// How long it then has to print one before it counts as hung and is killed.
const HANG_GRACE: Duration = Duration::from_secs(2);
/// Bytes of a child's stderr kept for the log and `/status`.
const STDERR_TAIL: usize = 2048;

/// Which child to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Follow,
}

/// How a child's run ended.
enum End {
    /// Shutdown began.
    Stopped,
    /// The child exited (or could not start): what it said.
    Exited { ok: bool, error: String },
}

/// Runs the source until shutdown.
pub async fn run(mut ctx: SourceContext, config: JournaldSourceConfig) -> crate::Result<()> {
    let file = CursorFile::new(&ctx.state_dir);
    let mut reader = Reader {
        cursor: None,
        saved: None,
        in_flight: None,
        batch: AppendBatch::with_capacity(MAX_BATCH, 1 << 20),
        batch_cursor: None,
        file,
        config,
        last_error: None,
    };
    // Takes input from now on, even while journalctl cannot answer yet (no journal, no
    // permission): that is a restart loop visible in /status, not a never-ready agent.
    ctx.mark_started();
    match reader.file.load()? {
        Some(c) => reader.cursor = c,
        None => {
            if reader.config.read_from == ReadFrom::End {
                match reader.newest_cursor(&mut ctx).await {
                    Some(c) => reader.cursor = c,
                    None => return Ok(()),
                }
            }
            reader.file.save(reader.cursor.as_deref())?;
        }
    }
    reader.saved.clone_from(&reader.cursor);
    ctx.metrics.source_state(&ctx.name, |s| {
        s.journal_cursor.clone_from(&reader.cursor);
        s.journalctl_restarts = Some(0);
    });
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let before = reader.cursor.clone();
        let mut failed = None;
        for phase in [Phase::CatchUp, Phase::Follow] {
            match reader.run_child(&mut ctx, phase).await? {
                End::Stopped => return reader.finish(&ctx).await,
                End::Exited { ok: true, .. } if phase == Phase::CatchUp => {}
                End::Exited { error, .. } => {
                    failed = Some(error);
                    break;
                }
            }
        }
        reader.settle(&ctx).await?;
        if reader.cursor != before {
            backoff = INITIAL_BACKOFF;
        }
        let error = failed.unwrap_or_default();
        ctx.metrics
            .source_journalctl_restarts
            .get_or_create(&SourceLabel {
                source: ctx.name.clone(),
            })
            .inc();
        ctx.metrics.source_state(&ctx.name, |s| {
            *s.journalctl_restarts.get_or_insert(0) += 1;
            s.last_error = Some(error.clone());
        });
        // An empty journal makes `journalctl --follow` exit at once, again and again:
        // say so once, not every round.
        if reader.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(source = %ctx.name, error = %error, retry_in = ?backoff, "journalctl stopped; restarting");
        } else {
            tracing::debug!(source = %ctx.name, error = %error, "journalctl stopped again; restarting");
        }
        reader.last_error = Some(error);
        tokio::select! {
            () = ctx.stopped() => return reader.finish(&ctx).await,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Reader {
    /// The last entry read (appended or in the batch being filled).
    cursor: Option<String>,
    /// The cursor in the cursor file.
    saved: Option<String>,
    /// The append in flight and the cursor of its last entry.
    in_flight: Option<(PendingAppend, u64, u64, String)>,
    batch: AppendBatch,
    batch_cursor: Option<String>,
    file: CursorFile,
    config: JournaldSourceConfig,
    /// The error of the last restart, to log a repeated one quietly.
    last_error: Option<String>,
}

impl Reader {
    fn command(&self, phase: Phase) -> Command {
        let mut cmd = Command::new(&self.config.journalctl_path);
        if let Some(dir) = &self.config.journal_directory {
            cmd.arg(format!("--directory={}", dir.display()));
        }
        cmd.args(["--merge", "--output=json", "--all", "--no-tail", "--quiet"]);
        match (phase, &self.cursor) {
            (Phase::CatchUp, Some(c)) => {
                cmd.arg(format!("--cursor={c}"));
            }
            (Phase::Follow, Some(c)) => {
                cmd.arg(format!("--after-cursor={c}"));
            }
            (_, None) => {}
        }
        if phase == Phase::Follow {
            cmd.arg("--follow");
        }
        cmd.args(self.match_args());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// journalctl ORs matches of one field and ANDs different fields, so units then
    /// each field's values, with no `+`, mean (any unit) and (any value) of every field.
    fn match_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .config
            .units
            .iter()
            .map(|u| format!("_SYSTEMD_UNIT={u}"))
            .collect();
        for (field, values) in &self.config.matches {
            args.extend(values.iter().map(|v| format!("{field}={v}")));
        }
        args
    }

    /// `read_from = "end"` at first start: the cursor of the newest matching entry, or
    /// `Some(None)` if there is none. Retries until journalctl answers; `None` on shutdown.
    async fn newest_cursor(&mut self, ctx: &mut SourceContext) -> Option<Option<String>> {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let mut cmd = Command::new(&self.config.journalctl_path);
            if let Some(dir) = &self.config.journal_directory {
                cmd.arg(format!("--directory={}", dir.display()));
            }
            cmd.args(["--merge", "--output=json", "--all", "--lines=1", "--quiet"])
                .args(self.match_args())
                .stdin(Stdio::null())
                .kill_on_drop(true);
            match cmd.output().await {
                Ok(out) if out.status.success() => {
                    let last = out.stdout.rsplit(|b| *b == b'\n').find_map(Entry::parse);
                    return Some(last.map(|e| e.cursor));
                }
                Ok(out) => {
                    tracing::warn!(source = %ctx.name, status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "journalctl --lines=1 failed; retrying")
                }
                Err(e) => {
                    tracing::warn!(source = %ctx.name, error = %e, "cannot run journalctl; retrying")
                }
            }
            tokio::select! {
                () = ctx.stopped() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Whether the journal holds a matching entry after the last one read (a one-shot
    /// `journalctl --after-cursor=C --lines=1`). `false` when that cannot be told.
    async fn newer_entry_exists(&self) -> bool {
        let mut cmd = Command::new(&self.config.journalctl_path);
        if let Some(dir) = &self.config.journal_directory {
            cmd.arg(format!("--directory={}", dir.display()));
        }
        cmd.args(["--merge", "--output=json", "--all", "--lines=1", "--quiet"]);
        if let Some(c) = &self.cursor {
            cmd.arg(format!("--after-cursor={c}"));
        }
        cmd.args(self.match_args())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match tokio::time::timeout(HANG_GRACE * 5, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => out
                .stdout
                .split(|b| *b == b'\n')
                .any(|l| Entry::parse(l).is_some()),
            _ => false,
        }
    }

    /// Runs one child to its end (or to shutdown), appending what it prints.
    async fn run_child(&mut self, ctx: &mut SourceContext, phase: Phase) -> crate::Result<End> {
        let mut child: Child = match self.command(phase).spawn() {
            Ok(c) => c,
            Err(e) => {
                return Ok(End::Exited {
                    ok: false,
                    error: format!("cannot run {}: {e}", self.config.journalctl_path.display()),
                })
            }
        };
        let stderr = child.stderr.take().map(|mut err| {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf).await;
                let tail = buf.len().saturating_sub(STDERR_TAIL);
                String::from_utf8_lossy(&buf[tail..]).trim().to_string()
            })
        });
        let Some(stdout) = child.stdout.take() else {
            return Ok(End::Exited {
                ok: false,
                error: "journalctl has no stdout".into(),
            });
        };
        let mut lines = BufReader::with_capacity(1 << 20, stdout).split(b'\n');
        // Only a catch-up from a saved cursor checks that the cursor still exists.
        let mut suspect: Option<()> = None;
        let mut expect = match phase {
            Phase::CatchUp => self.cursor.clone(),
            Phase::Follow => None,
        };
        loop {
            let next = if self.batch.is_empty() {
                if self.in_flight.is_some() {
                    // Idle: let the last append complete and save its cursor.
                    self.settle(ctx).await?;
                }
                let check =
                    tokio::time::Instant::now() + suspect.map_or(HANG_CHECK, |_| HANG_GRACE);
                tokio::select! {
                    () = ctx.stopped() => return Ok(End::Stopped),
                    r = lines.next_segment() => r,
                    () = tokio::time::sleep_until(check), if phase == Phase::Follow => {
                        // Silent: is the journal ahead of it? Once yes, it gets a grace
                        // period to print the entry, then it counts as hung.
                        if !self.newer_entry_exists().await {
                            suspect = None;
                        } else if suspect.is_none() {
                            suspect = Some(());
                        } else {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            return Ok(End::Exited {
                                ok: false,
                                error: format!(
                                    "journalctl --follow printed nothing for {HANG_CHECK:?} while the journal holds newer entries; killed as hung"
                                ),
                            });
                        }
                        continue;
                    }
                }
            } else {
                tokio::select! {
                    () = ctx.stopped() => return Ok(End::Stopped),
                    r = tokio::time::timeout(LINGER, lines.next_segment()) => match r {
                        Ok(r) => r,
                        Err(_) => {
                            self.flush(ctx).await?;
                            continue;
                        }
                    },
                }
            };
            let line = match next {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(source = %ctx.name, error = %e, "reading journalctl output failed");
                    break;
                }
            };
            suspect = None;
            let Some(entry) = Entry::parse(&line) else {
                if !line.is_empty() && !line.starts_with(b"-- ") {
                    tracing::warn!(source = %ctx.name, line = %String::from_utf8_lossy(&line[..line.len().min(200)]), "journalctl printed a line that is not an entry; skipped");
                }
                continue;
            };
            if let Some(saved) = expect.take() {
                if entry.cursor == saved {
                    continue;
                }
                self.report_vacuumed(ctx, &saved, entry.realtime_us).await?;
            }
            entry.push(&ctx.encoder, &mut self.batch);
            self.cursor = Some(entry.cursor.clone());
            self.batch_cursor = Some(entry.cursor);
            if self.batch.len() >= MAX_BATCH {
                self.flush(ctx).await?;
            }
        }
        self.flush(ctx).await?;
        let _ = child.start_kill();
        let status = child.wait().await;
        let said = match stderr {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        };
        let ok = status.as_ref().is_ok_and(|s| s.success());
        let status = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let error = if said.is_empty() {
            format!("journalctl {status}")
        } else {
            format!("journalctl {status}: {said}")
        };
        Ok(End::Exited { ok, error })
    }

    /// The saved cursor is gone from the journal: appends a `source_overflow` gap record
    /// (from the cursor's time to the first entry left) before the entries that follow.
    async fn report_vacuumed(
        &mut self,
        ctx: &SourceContext,
        saved: &str,
        first_us: Option<u64>,
    ) -> crate::Result<()> {
        self.flush(ctx).await?;
        let now = crate::event::unix_nanos_now();
        let from = cursor_realtime_us(saved).map_or(now, |us| us.saturating_mul(1000));
        let to = first_us.map_or(now, |us| us.saturating_mul(1000));
        let gap = gapless_wal::Gap {
            reason: gapless_wal::GapReason::SourceOverflow,
            seqs: None,
            records: 0,
            bytes: 0,
            from,
            to: to.max(from),
        };
        let mut batch = AppendBatch::new();
        batch.push_gap(&gap);
        ctx.appender.append(batch).await?;
        ctx.metrics
            .dropped_events
            .get_or_create(&ReasonLabel {
                reason: "source_overflow".into(),
            })
            .inc();
        tracing::warn!(source = %ctx.name, cursor = saved, "the saved journal cursor is gone (journal vacuumed while stopped): entries were lost before collection; reading on from the oldest entry");
        Ok(())
    }

    /// Appends the batch being filled; the previous append completes first, so at most
    /// one is in flight.
    async fn flush(&mut self, ctx: &SourceContext) -> crate::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.batch,
            AppendBatch::with_capacity(MAX_BATCH, 1 << 20),
        );
        let events = batch.len() as u64;
        let bytes = batch.payload_bytes() as u64;
        let cursor = self.batch_cursor.take().unwrap_or_default();
        let pending = ctx.appender.enqueue(batch)?;
        if let Some(prev) = self.in_flight.replace((pending, events, bytes, cursor)) {
            self.complete(ctx, prev).await?;
        }
        Ok(())
    }

    /// Waits for the append in flight and saves its cursor.
    async fn settle(&mut self, ctx: &SourceContext) -> crate::Result<()> {
        if let Some(prev) = self.in_flight.take() {
            self.complete(ctx, prev).await?;
        }
        Ok(())
    }

    async fn complete(
        &mut self,
        ctx: &SourceContext,
        (pending, events, bytes, cursor): (PendingAppend, u64, u64, String),
    ) -> crate::Result<()> {
        pending.await?;
        ctx.metrics.source_appended(&ctx.name, events, bytes);
        // Durable in the WAL: only now may the cursor move past these entries.
        self.file.save(Some(&cursor))?;
        ctx.metrics
            .source_state(&ctx.name, |s| s.journal_cursor = Some(cursor.clone()));
        self.saved = Some(cursor);
        Ok(())
    }

    /// Shutdown: append what is in hand and save the cursor.
    async fn finish(&mut self, ctx: &SourceContext) -> crate::Result<()> {
        self.flush(ctx).await?;
        self.settle(ctx).await
    }
}

/// The `t=` part of a cursor: the entry's realtime in µs, hexadecimal.
fn cursor_realtime_us(cursor: &str) -> Option<u64> {
    cursor
        .split(';')
        .find_map(|part| part.strip_prefix("t="))
        .and_then(|t| u64::from_str_radix(t, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_time_is_read_from_its_t_part() {
        assert_eq!(
            cursor_realtime_us("s=ab;i=a;b=cd;m=3f1;t=60a24181e6328;x=7d"),
            Some(0x0006_0a24_181e_6328)
        );
        assert_eq!(cursor_realtime_us("garbage"), None);
    }
}
