//! One read of a file turned into one WAL batch: read a large chunk at an offset, split it
//! on `\n` (dropping a `\r` before it), encode every line straight into the batch. Blocking
//! and pure apart from the read, so it runs off the async threads and is tested on its own.
//! Offsets, in-flight appends and checkpoints belong to the tailer.
//!
//! - A line longer than `line_bytes` becomes pieces of at most `line_bytes` (cut at a UTF-8
//!   boundary where one is near), each flagged `"truncated": true`; the rest of such a line
//!   in the next chunk is flagged too. Nothing is dropped.
//! - A last line without `\n` stays in the file (the next read starts at it) until the
//!   tailer says the file has not grown for `partial_line_timeout`; then it is emitted.
//!   If the line end arrives after all, it is skipped rather than read as an empty line.
//! - A chunk stops early once its batch holds `batch_bytes`, so a small WAL (which refuses
//!   batches over half its size) can still take it.
//! - A line emitted by the timeout is flagged `"partial": true`; the first event made of the
//!   rest of that line, when it arrives, is flagged `"continued": true`.
//! - Before reading, the bytes just before `start` are checked against the file's anchor
//!   (`fingerprint.rs`): if they changed, the file was rewritten in place and the chunk
//!   says so instead of reading on from an offset that no longer means anything.

use std::fs::File;
use std::io;
use std::sync::Arc;

use gapless_wal::AppendBatch;

use super::fingerprint::{anchor_len, read_full_at, Fingerprint};
use crate::event::{EventEncoder, Timestamp};

/// Bytes read per chunk, unless a line needs more.
pub const READ_BYTES: usize = 512 << 10;
/// Largest batch, unless the WAL asks for smaller ones.
pub const BATCH_BYTES: u64 = 8 << 20;

/// Sizes one chunk respects.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes to read when they hold a line end.
    pub read_bytes: usize,
    /// Longest event message; longer lines are split.
    pub line_bytes: usize,
    /// Stop adding lines once the batch's encoded size reaches this.
    pub batch_bytes: u64,
}

/// What to read.
pub struct ChunkRequest {
    /// The open file.
    pub file: Arc<File>,
    /// The first byte not yet turned into events.
    pub start: u64,
    /// The previous chunk ended inside an over-long line.
    pub continuing: bool,
    /// The file has not grown for `partial_line_timeout`: a last line without newline is
    /// emitted.
    pub flush_partial: bool,
    /// The previous chunk ended by emitting a partial last line: a line end right at
    /// `start` belongs to it and is skipped.
    pub after_partial: bool,
    /// The fingerprint of the bytes just before `start`, as they were read.
    pub anchor: Fingerprint,
    /// Sizes.
    pub limits: Limits,
    /// The source's encoder.
    pub encoder: Arc<EventEncoder>,
    /// The `file` field of every event.
    pub path: Arc<str>,
}

/// What one read produced.
#[derive(Debug)]
pub struct Chunk {
    /// The events; possibly empty.
    pub batch: AppendBatch,
    /// The offset after the last byte turned into events.
    pub end: u64,
    /// Bytes before this offset were looked at: until the file grows past it there is
    /// nothing more to make of them (only a partial line waiting for its timeout).
    pub seen: u64,
    /// The read reached the end of the file.
    pub at_eof: bool,
    /// It ended inside an over-long line.
    pub continuing: bool,
    /// It ended by emitting a partial last line.
    pub after_partial: bool,
    /// The largest event payload in the batch.
    pub largest: usize,
    /// The fingerprint of the bytes just before `end`.
    pub anchor: Fingerprint,
    /// The bytes before `start` are not the ones read there: the file was rewritten in
    /// place. Nothing else in the chunk is meaningful.
    pub moved: bool,
}

/// Reads and encodes one chunk; `buf` is a reusable read buffer.
pub fn read_chunk(req: &ChunkRequest, buf: &mut Vec<u8>) -> io::Result<Chunk> {
    let limits = req.limits;
    let alen = req.anchor.len as usize;
    let mut before = [0u8; super::fingerprint::ANCHOR_BYTES];
    let before = &mut before[..alen.min(super::fingerprint::ANCHOR_BYTES)];
    let n = if alen as u64 <= req.start {
        read_full_at(&req.file, before, req.start - alen as u64)?
    } else {
        0
    };
    if n != alen || Fingerprint::of(before) != req.anchor {
        return Ok(Chunk {
            batch: AppendBatch::new(),
            end: req.start,
            seen: req.start,
            at_eof: false,
            continuing: req.continuing,
            after_partial: req.after_partial,
            largest: 0,
            anchor: req.anchor,
            moved: true,
        });
    }
    let mut filled = 0;
    let mut target = limits.read_bytes;
    let mut newline = false;
    let at_eof = loop {
        if buf.len() < target {
            buf.resize(target, 0);
        }
        let n = read_full_at(
            &req.file,
            &mut buf[filled..target],
            req.start + filled as u64,
        )?;
        newline = newline || memchr::memchr(b'\n', &buf[filled..filled + n]).is_some();
        filled += n;
        if filled < target {
            break true;
        }
        if newline || filled >= limits.line_bytes {
            break false;
        }
        // One line fills the chunk: read on to its end or to `line_bytes`.
        target = limits.line_bytes;
    };
    let data = &buf[..filled];

    let mut out = Encoder {
        req,
        // Room for the events without growing: a line's event is its text escaped plus the
        // envelope (~150 bytes), under twice the line for lines of the usual size or full of
        // quotes (a 200-byte JSON line: ~370). Pages reserved but not written cost no memory.
        batch: AppendBatch::with_capacity(filled / 128 + 16, filled * 2 + 4096),
        timestamp: Timestamp::now(),
        largest: 0,
        continued: false,
    };
    let mut pos = 0;
    if req.after_partial {
        if data.starts_with(b"\n") {
            pos = 1;
        } else if data.starts_with(b"\r\n") {
            pos = 2;
        }
    }
    let mut continuing = req.continuing;
    let mut full = false;
    // Until the line end arrives, the skip stays pending.
    let mut after_partial = req.after_partial && (filled == 0 || data == b"\r");
    // The rest of a line emitted as partial: its first event says so.
    out.continued = req.after_partial && pos == 0 && !after_partial;
    let skip = pos;
    for nl in memchr::memchr_iter(b'\n', &data[skip..]).map(|i| i + skip) {
        let line = &data[pos..nl];
        out.line(line.strip_suffix(b"\r").unwrap_or(line), continuing);
        continuing = false;
        pos = nl + 1;
        if out.batch.encoded_len() >= limits.batch_bytes {
            full = true;
            break;
        }
    }
    if !full {
        let mut rest = &data[pos..];
        while rest.len() >= limits.line_bytes {
            let cut = utf8_cut(rest, limits.line_bytes);
            out.piece(&rest[..cut]);
            continuing = true;
            pos += cut;
            rest = &rest[cut..];
        }
        if at_eof && req.flush_partial && !rest.is_empty() {
            out.partial(rest, continuing);
            continuing = false;
            after_partial = true;
            pos = filled;
        }
    }
    let end = req.start + pos as u64;
    let need = anchor_len(end);
    let from_data = need.min(pos);
    let from_before = need - from_data;
    let anchor = Fingerprint::of_parts(&[
        &before[before.len() - from_before.min(before.len())..],
        &data[pos - from_data..pos],
    ]);
    Ok(Chunk {
        anchor,
        moved: false,
        end,
        seen: if full { end } else { req.start + filled as u64 },
        at_eof: at_eof && !full,
        continuing,
        after_partial,
        largest: out.largest,
        batch: out.batch,
    })
}

struct Encoder<'a> {
    req: &'a ChunkRequest,
    batch: AppendBatch,
    timestamp: Timestamp,
    largest: usize,
    /// The next event is the rest of a line emitted as partial.
    continued: bool,
}

impl Encoder<'_> {
    /// A whole line (or the rest of an over-long one, when `continuing`).
    fn line(&mut self, line: &[u8], continuing: bool) {
        self.split(line, continuing, false);
    }

    /// A last line without its line end, emitted because the file stopped growing.
    fn partial(&mut self, line: &[u8], continuing: bool) {
        self.split(line, continuing, true);
    }

    /// Emits `line`, in pieces of at most `line_bytes` flagged `truncated` if it is longer
    /// (or is the rest of a longer one); the last piece of a `partial` line is flagged so.
    fn split(&mut self, mut line: &[u8], continuing: bool, partial: bool) {
        let max = self.req.limits.line_bytes;
        if line.len() <= max && !continuing {
            self.push(line, false, partial);
            return;
        }
        loop {
            let cut = utf8_cut(line, max);
            let last = cut == line.len();
            self.push(&line[..cut], true, partial && last);
            line = &line[cut..];
            if last {
                return;
            }
        }
    }

    /// A piece of an over-long line.
    fn piece(&mut self, piece: &[u8]) {
        self.push(piece, true, false);
    }

    fn push(&mut self, message: &[u8], truncated: bool, partial: bool) {
        let mut flags = ["", "", ""];
        let mut n = 0;
        for (on, name) in [
            (truncated, "truncated"),
            (partial, "partial"),
            (std::mem::take(&mut self.continued), "continued"),
        ] {
            if on {
                flags[n] = name;
                n += 1;
            }
        }
        let before = self.batch.payload_bytes();
        self.req.encoder.push_line(
            &mut self.batch,
            message,
            &self.timestamp,
            &[("file", &self.req.path)],
            &flags[..n],
        );
        self.largest = self.largest.max(self.batch.payload_bytes() - before);
    }
}

/// Where to cut `bytes` to at most `max` bytes: at `max`, or up to 3 bytes earlier where a
/// UTF-8 character starts, so the pieces stay readable.
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    (max.saturating_sub(3).max(1)..=max)
        .rev()
        .find(|&i| bytes[i] & 0xc0 != 0x80)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::split_payload;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    fn file_with(bytes: &[u8]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, bytes).unwrap();
        Fixture { _dir: dir, path }
    }

    fn request(f: &Fixture, start: u64, limits: Limits) -> ChunkRequest {
        let file = File::open(&f.path).unwrap();
        let anchor = super::super::fingerprint::read_anchor(&file, start, &mut Vec::new())
            .unwrap()
            .unwrap();
        ChunkRequest {
            file: Arc::new(file),
            start,
            continuing: false,
            flush_partial: false,
            after_partial: false,
            anchor,
            limits,
            encoder: Arc::new(EventEncoder::new("app", "host")),
            path: "/logs/app.log".into(),
        }
    }

    const WIDE: Limits = Limits {
        read_bytes: READ_BYTES,
        line_bytes: 1 << 20,
        batch_bytes: BATCH_BYTES,
    };

    /// The events of a batch as (message, truncated).
    fn events(batch: AppendBatch) -> Vec<(String, bool)> {
        let dir = tempfile::tempdir().unwrap();
        let wal = gapless_wal::Wal::open(dir.path(), gapless_wal::WalOptions::default()).unwrap();
        let mut cursor = wal.cursor("t").unwrap();
        if !batch.is_empty() {
            wal.appender().append_blocking(batch).unwrap();
        }
        cursor
            .try_read(100_000, 1 << 30)
            .unwrap()
            .iter()
            .map(|r| {
                let (_, json) = split_payload(&r.payload).unwrap();
                let v: serde_json::Value = serde_json::from_slice(json).unwrap();
                assert_eq!(v["file"], "/logs/app.log");
                (
                    v["message"].as_str().unwrap().to_string(),
                    v["truncated"] == true,
                )
            })
            .collect()
    }

    fn plain(lines: &[&str]) -> Vec<(String, bool)> {
        lines.iter().map(|l| (l.to_string(), false)).collect()
    }

    #[test]
    fn lines_are_split_on_newline_and_crlf_loses_its_cr() {
        let f = file_with(b"one\r\ntwo\n\nthree\npart");
        let chunk = read_chunk(&request(&f, 0, WIDE), &mut Vec::new()).unwrap();
        assert_eq!(chunk.end, 16, "the partial last line stays in the file");
        assert_eq!(chunk.seen, 20);
        assert!(chunk.at_eof);
        assert_eq!(events(chunk.batch), plain(&["one", "two", "", "three"]));
    }

    #[test]
    fn a_partial_last_line_is_emitted_when_asked() {
        let f = file_with(b"one\npart");
        let mut req = request(&f, 4, WIDE);
        req.flush_partial = true;
        let chunk = read_chunk(&req, &mut Vec::new()).unwrap();
        assert_eq!(chunk.end, 8);
        assert!(chunk.after_partial);
        assert_eq!(events(chunk.batch), plain(&["part"]));
    }

    #[test]
    fn the_late_line_end_of_an_emitted_partial_line_is_skipped() {
        let f = file_with(b"part\r\nnext\n");
        let mut req = request(&f, 4, WIDE);
        req.after_partial = true;
        let chunk = read_chunk(&req, &mut Vec::new()).unwrap();
        assert_eq!(chunk.end, 11);
        assert!(!chunk.after_partial);
        assert_eq!(events(chunk.batch), plain(&["next"]));
    }

    #[test]
    fn an_overlong_line_becomes_flagged_pieces_across_chunks() {
        let mut content = vec![b'a'; 250];
        content.extend_from_slice(b"\nshort\n");
        content.extend_from_slice(&[b'b'; 150]);
        let f = file_with(&content);
        let limits = Limits {
            read_bytes: 64,
            line_bytes: 100,
            batch_bytes: BATCH_BYTES,
        };
        let mut buf = Vec::new();
        // The first read finds no newline in 64 bytes and reads on to 100: one piece.
        let c1 = read_chunk(&request(&f, 0, limits), &mut buf).unwrap();
        assert_eq!((c1.end, c1.continuing), (100, true));
        let mut req = request(&f, c1.end, limits);
        req.continuing = true;
        let c2 = read_chunk(&req, &mut buf).unwrap();
        assert_eq!((c2.end, c2.continuing), (200, true));
        let mut req = request(&f, c2.end, limits);
        req.continuing = true;
        let c3 = read_chunk(&req, &mut buf).unwrap();
        assert!(!c3.continuing);
        let mut got = events(c1.batch);
        got.extend(events(c2.batch));
        got.extend(events(c3.batch));
        assert_eq!(
            got,
            vec![
                ("a".repeat(100), true),
                ("a".repeat(100), true),
                ("a".repeat(50), true),
                ("short".to_string(), false),
            ]
        );
    }

    #[test]
    fn a_long_line_inside_a_chunk_is_split_at_a_char_boundary() {
        let line = "é".repeat(60); // 120 bytes
        let f = file_with(format!("{line}\n").as_bytes());
        let limits = Limits {
            read_bytes: 4096,
            line_bytes: 65,
            batch_bytes: BATCH_BYTES,
        };
        let chunk = read_chunk(&request(&f, 0, limits), &mut Vec::new()).unwrap();
        assert_eq!(chunk.end, 121);
        let got = events(chunk.batch);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, t)| *t));
        assert_eq!(format!("{}{}", got[0].0, got[1].0), line);
        assert_eq!(got[0].0.len(), 64);
    }

    #[test]
    fn a_chunk_stops_at_the_batch_limit_and_resumes_there() {
        let content: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        let f = file_with(content.as_bytes());
        let limits = Limits {
            read_bytes: READ_BYTES,
            line_bytes: 1 << 20,
            batch_bytes: 1000,
        };
        let mut start = 0;
        let mut all = Vec::new();
        while start < content.len() as u64 {
            let chunk = read_chunk(&request(&f, start, limits), &mut Vec::new()).unwrap();
            assert!(chunk.batch.encoded_len() < 1000 + 200);
            assert!(chunk.end > start);
            start = chunk.end;
            all.extend(events(chunk.batch));
        }
        let want: Vec<String> = (0..100).map(|i| format!("line {i:03}")).collect();
        assert_eq!(
            all,
            want.iter().map(|l| (l.clone(), false)).collect::<Vec<_>>()
        );
    }

    /// The events of a batch as (message, partial, continued).
    fn flags(batch: AppendBatch) -> Vec<(String, bool, bool)> {
        let dir = tempfile::tempdir().unwrap();
        let wal = gapless_wal::Wal::open(dir.path(), gapless_wal::WalOptions::default()).unwrap();
        let mut cursor = wal.cursor("t").unwrap();
        wal.appender().append_blocking(batch).unwrap();
        cursor
            .try_read(100, 1 << 30)
            .unwrap()
            .iter()
            .map(|r| {
                let (_, json) = split_payload(&r.payload).unwrap();
                let v: serde_json::Value = serde_json::from_slice(json).unwrap();
                (
                    v["message"].as_str().unwrap().to_string(),
                    v["partial"] == true,
                    v["continued"] == true,
                )
            })
            .collect()
    }

    #[test]
    fn a_line_cut_by_the_timeout_arrives_as_a_partial_piece_and_a_continued_piece() {
        let f = file_with(br#"{"user":"alice","action":"lo"#);
        let mut req = request(&f, 0, WIDE);
        req.flush_partial = true;
        let c1 = read_chunk(&req, &mut Vec::new()).unwrap();
        assert!(c1.after_partial);
        assert_eq!(
            flags(c1.batch),
            vec![(r#"{"user":"alice","action":"lo"#.to_string(), true, false)]
        );
        std::fs::write(
            &f.path,
            b"{\"user\":\"alice\",\"action\":\"login\"}\nnext\n",
        )
        .unwrap();
        let mut req = request(&f, c1.end, WIDE);
        req.after_partial = true;
        let c2 = read_chunk(&req, &mut Vec::new()).unwrap();
        assert!(!c2.after_partial);
        assert_eq!(
            flags(c2.batch),
            vec![
                (r#"gin"}"#.to_string(), false, true),
                ("next".to_string(), false, false)
            ]
        );
    }

    #[test]
    fn the_rest_of_a_partial_line_cut_again_is_both_continued_and_partial() {
        let f = file_with(b"abcdef");
        let mut req = request(&f, 3, WIDE);
        req.after_partial = true;
        req.flush_partial = true;
        let c = read_chunk(&req, &mut Vec::new()).unwrap();
        assert_eq!(flags(c.batch), vec![("def".to_string(), true, true)]);
    }

    #[test]
    fn a_chunk_whose_bytes_before_its_start_changed_reads_nothing_and_says_moved() {
        let mut old = vec![b'H'; 1100];
        old.extend_from_slice(b"\nold-1\n");
        let f = file_with(&old);
        let req = request(&f, old.len() as u64, WIDE);
        let mut new = vec![b'H'; 1100];
        new.extend_from_slice(b"\nnew-1\nnew-2\nnew-3\n");
        std::fs::write(&f.path, &new).unwrap();
        let c = read_chunk(&req, &mut Vec::new()).unwrap();
        assert!(c.moved);
        assert!(c.batch.is_empty());
        assert_eq!(c.end, old.len() as u64);
        // Unchanged bytes: the chunk reads on and its anchor is the one at its end.
        let f = file_with(&new);
        let c = read_chunk(&request(&f, 1101, WIDE), &mut Vec::new()).unwrap();
        assert!(!c.moved);
        assert_eq!(c.end, new.len() as u64);
        assert_eq!(
            c.anchor,
            super::super::fingerprint::anchor_of(&new, new.len() as u64)
        );
    }

    #[test]
    fn utf8_cut_backs_off_to_a_character_start() {
        assert_eq!(utf8_cut(b"abc", 5), 3);
        assert_eq!(utf8_cut("aé".as_bytes(), 2), 1);
        assert_eq!(utf8_cut(&[0x80; 10], 4), 4, "no boundary near: cut anyway");
    }
}
