//! # gapless-wal: the write-ahead log under gapless
//!
//! Every event gapless accepts is written here before anything else happens to it, and
//! stays here until every consumer has acknowledged it. **An append completes only once
//! its bytes are as durable as configured — by default after `fdatasync` — and a
//! completed append is never lost: not to `kill -9`, not to a torn write, not to a full
//! disk, and under `durability = always` not to a power cut.**
//!
//! ## Main types
//! - [`Wal`] opens a directory, recovers it and hands out the rest.
//! - [`Appender`] (cheap to clone) queues [`AppendBatch`]es; one appender thread turns
//!   everything queued into one `write` and one `fdatasync` (group commit) and completes
//!   each producer with its [`SeqRange`].
//! - [`Cursor`] is a named, durable read position: [`Cursor::read`] streams records onward
//!   and wakes as soon as records are published; [`Cursor::ack`] persists the position.
//! - [`Record`] is what readers get: an event or a gap ([`Gap`]).
//! - [`ReadOnlyWal`] opens a log to look at it (stats, [`VerifyReport`], readers) without
//!   changing any file: for tools.
//!
//! ```no_run
//! # async fn demo() -> gapless_wal::Result<()> {
//! use gapless_wal::{AppendBatch, Wal, WalOptions};
//! let wal = Wal::open("/var/lib/gapless/wal", WalOptions::default())?;
//! let mut cursor = wal.cursor("platform")?;
//! let mut batch = AppendBatch::new();
//! batch.push(b"hello");
//! let range = wal.appender().append(batch).await?; // durable now
//! let records = cursor.read(1000, 1 << 20).await?;
//! cursor.ack(records.last().map_or(range.last, |r| r.seq))?;
//! # Ok(()) }
//! ```
//!
//! ## On disk
//! One directory holds `wal.lock`, segment files `{first_seq:020}.seg` and cursor files
//! `{name}.cursor`. Anything else in it is ignored. Segments are append-only; a record
//! never spans two. The byte layouts are documented where they are encoded: the record in
//! `record.rs`, the segment header in `segment.rs`, the cursor file in `cursor_file.rs`.
//! Every record carries a CRC32C, its sequence number (one more than the previous record's,
//! never reused, not even after restarts or deleted segments), its append time and a kind.
//!
//! ## Durability modes ([`Durability`])
//! - `always` (default): an append completes after `fdatasync` of its bytes. One sync
//!   covers every append queued while the previous one ran, so many producers share it.
//! - `interval`: completes after `write()`; the appender thread syncs at least every
//!   `sync_interval`, on a timer, not on the next write. Survives `kill -9`; a power cut
//!   may lose up to one interval.
//! - `never`: completes after `write()`; the OS writes back. Survives `kill -9`; a power
//!   cut may lose whatever the OS had not written back, and — readers having seen it —
//!   seqs the cut took back are handed out again with new records.
//!
//! Readers only see published records: under `always` and `interval` after the sync (so a
//! reader never passes on a record a power cut can take back, and a seq it passed on is
//! never reused), under `never` after the write. A segment is synced before it is sealed,
//! whatever the mode.
//!
//! ## Cursors and retention
//! Cursor state lives in a small file with two checksummed slots written alternately and
//! synced: crash-atomic without renames, never ahead of what was acknowledged. (A separate
//! embedded database such as `redb` would add a second durability mechanism to get the same
//! 44 bytes right; sled was measured and rejected — see the README.) A cursor remembers the
//! byte offset of its next record, so resuming does not scan. A sealed segment is deleted
//! once every cursor has passed it; with no cursor at all, nothing is deleted.
//!
//! ## When full ([`WhenFull`])
//! `max_bytes` bounds all segments together. `block` makes appends wait (and
//! [`Appender::try_append`] fail with [`Error::Full`]); `drop_oldest` deletes the oldest
//! segments, acknowledged or not; `drop_newest` refuses new records. **No drop is silent**:
//! the log appends a gap record (kind [`RecordKind::Gap`], payload [`Gap`]) stating the
//! reason, the dropped sequence range (or count), bytes and time span, so every reader sees
//! the gap in-band. `drop_oldest` writes and syncs that record before deleting anything.
//!
//! ## Recovery rules
//! 1. Open takes an exclusive lock on `wal.lock`; a second process gets
//!    [`Error::Locked`] naming the directory. [`ReadOnlyWal::open`] takes it shared and
//!    gets [`Error::InUse`] while a writer holds it.
//! 2. Only the active (newest) segment is scanned. What follows its last intact record is
//!    weighed (`recovery/tail.rs`): damaged records keep their seqs only on evidence that
//!    they were written — a header right where the next record starts, carrying exactly the
//!    next seq, with its bytes all present (bit rot, not a torn write), and a damaged run
//!    from such a record to the end of a segment trimmed at close. Everything else — a torn
//!    write, bytes in the zeros reserved ahead of the appender, garbage after the last
//!    intact record — is a torn or dirty tail: it costs no seq, and a read-write open cuts
//!    it. So is everything from a lost page on, intact records after it included: damaged
//!    bytes that are zeros up to a page boundary, or a whole aligned page of zeros, are what
//!    a power cut leaves when only some unsynced pages reached the disk, and nothing from
//!    there on was synced, hence acknowledged under `always`. Sealed segments are only
//!    listed, so open time does not grow with the backlog.
//! 3. Damage anywhere else is left in place. A reader that meets it resynchronises at the
//!    next intact record (it scans for the record magic and trusts a candidate only if
//!    its length, sequence number and checksum agree), so a damaged run costs the records it
//!    overlaps and no more. The lost sequence numbers are handed to the reader as a gap
//!    record with reason `wal_corrupt` — never a panic, a loop or a refusal to start.
//!    **A gap names only seqs bounded by evidence**: an intact record or the segment's file
//!    name (its first seq) before, an intact record or the next segment's file name after
//!    — never a seq read from a damaged header or record. A segment whose own header is
//!    damaged is read all the same, its first seq taken from its file name.
//! 4. A full disk (`ENOSPC`) during an append cuts the segment back to where it was; under
//!    `block` the append waits and is retried, otherwise it fails with
//!    [`Error::DiskFull`]. Appending resumes by itself once space returns.
//! 5. A failed `fdatasync` fails the appends it covered, cuts their bytes off and moves
//!    on to a new segment file: a file whose sync (or write) failed is not trusted again —
//!    nothing more is written to it, even when sealing it fails too. Until a new segment
//!    can be created, appends fail (a full disk under `block` makes them wait).
//! 6. A read that fails with `EIO` is tried again (three times, within a quarter second):
//!    an I/O error is no proof of damage. A block of a segment that still cannot be read
//!    is, for readers, damage like any other (rule 3): the records it holds become a
//!    `wal_corrupt` gap and reading goes on after them. Opening the log does not guess: an
//!    unreadable active segment fails the open with the I/O error.

#![deny(missing_docs)]

mod append;
mod batch;
mod cursor;
mod cursor_file;
mod error;
mod options;
mod read_only;
mod record;
mod recovery;
mod retention;
mod segment;
mod shared;
mod stats;
mod syncer;
mod verify;
mod wal;

pub use append::{Appender, PendingAppend};
pub use batch::{AppendBatch, SeqRange};
pub use cursor::Cursor;
pub use error::{Error, Result};
pub use options::{Durability, WalOptions, WhenFull};
pub use read_only::ReadOnlyWal;
pub use record::{Gap, GapReason, Record, RecordKind, Seq, RECORD_HEADER_LEN};
pub use recovery::LOCK_FILE;
pub use segment::{FORMAT_VERSION, SEGMENT_HEADER_LEN};
pub use stats::{CursorStats, Stats};
pub use verify::{DamagedRange, SegmentReport, TailReport, VerifyReport};
pub use wal::Wal;
