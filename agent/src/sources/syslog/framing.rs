//! Splits a TCP/TLS byte stream into syslog frames (RFC 6587): octet counting
//! (`MSG-LEN SP SYSLOG-MSG`) or newline (`SYSLOG-MSG LF`), and bounds each frame by
//! `max_message_bytes`. Owns no parsing (see `parse.rs`) and no I/O: the connection feeds it
//! bytes and gets frames back.
//!
//! - `auto` decides per frame: a first byte `1`–`9` means octet counting, anything else a
//!   newline frame. A frame whose count is not digits then a space is read as a newline
//!   frame, so a sender that mixes both does not desynchronise the stream for good.
//! - An octet-counted frame loses one trailing LF (syslog-ng's `loggen` counts it in); a
//!   newline frame loses a trailing CR. Empty frames are skipped.
//! - A frame longer than `max_message_bytes` yields its first `max_message_bytes` bytes,
//!   flagged truncated; the rest of it is skipped (by count, or up to the next LF).
//! - At the end of the stream a last newline frame without its LF is a frame; an
//!   octet-counted frame cut short is yielded flagged truncated.

use memchr::memchr;

/// How frames are delimited on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Octet counting when the frame starts with a digit, else newline.
    Auto,
    /// `MSG-LEN SP SYSLOG-MSG` (a frame not starting so falls back to newline).
    OctetCounting,
    /// `SYSLOG-MSG LF`.
    Newline,
}

/// The most digits a count may have (`max_message_bytes` is far below 10^10).
const MAX_COUNT_DIGITS: usize = 10;

/// The framing state of one stream.
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    max: usize,
    /// Bytes still to skip of an over-long octet-counted frame.
    skip: usize,
    /// Skipping the rest of an over-long newline frame, up to its LF.
    skip_line: bool,
}

enum Header {
    /// `len` bytes of frame follow a header of `header` bytes.
    Count { header: usize, len: usize },
    /// More bytes are needed to tell.
    Incomplete,
    /// Not a count: a newline frame.
    NotCounted,
}

fn header(bytes: &[u8]) -> Header {
    let digits = bytes
        .iter()
        .take(MAX_COUNT_DIGITS + 1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > MAX_COUNT_DIGITS || bytes[0] == b'0' {
        return Header::NotCounted;
    }
    match bytes.get(digits) {
        None => Header::Incomplete,
        Some(b' ') => Header::Count {
            header: digits + 1,
            len: bytes[..digits].iter().fold(0usize, |v, &d| {
                v.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            }),
        },
        Some(_) => Header::NotCounted,
    }
}

impl Decoder {
    /// A decoder for `framing` cutting frames at `max` bytes.
    pub fn new(framing: Framing, max: usize) -> Self {
        Decoder {
            framing,
            max: max.max(1),
            skip: 0,
            skip_line: false,
        }
    }

    /// Calls `emit(frame, truncated)` for every complete frame at the front of `buf` and
    /// removes what it consumed; an incomplete frame stays for the next read. With `eof`,
    /// the remaining bytes are yielded too (see the module doc).
    pub fn decode(&mut self, buf: &mut Vec<u8>, eof: bool, mut emit: impl FnMut(&[u8], bool)) {
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            if self.skip > 0 {
                let n = self.skip.min(rest.len());
                self.skip -= n;
                pos += n;
                continue;
            }
            if self.skip_line {
                match memchr(b'\n', rest) {
                    Some(i) => {
                        self.skip_line = false;
                        pos += i + 1;
                    }
                    None => pos = buf.len(),
                }
                continue;
            }
            let counted = match self.framing {
                Framing::Newline => Header::NotCounted,
                Framing::Auto | Framing::OctetCounting => header(rest),
            };
            match counted {
                Header::Count { header, len } => {
                    let body = &rest[header..];
                    if len > self.max {
                        if body.len() < self.max && !eof {
                            break;
                        }
                        let n = self.max.min(body.len());
                        emit(&body[..n], true);
                        self.skip = len - n;
                        pos += header + n;
                    } else if body.len() < len {
                        if !eof {
                            break;
                        }
                        emit(body, true);
                        pos = buf.len();
                    } else {
                        let frame = &body[..len];
                        let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
                        if !frame.is_empty() {
                            emit(frame, false);
                        }
                        pos += header + len;
                    }
                }
                Header::Incomplete if !eof => break,
                Header::Incomplete | Header::NotCounted => {
                    let window = &rest[..rest.len().min(self.max + 1)];
                    match memchr(b'\n', window) {
                        Some(i) => {
                            let line = &rest[..i];
                            let line = line.strip_suffix(b"\r").unwrap_or(line);
                            if !line.is_empty() {
                                emit(line, false);
                            }
                            pos += i + 1;
                        }
                        None if rest.len() > self.max => {
                            emit(&rest[..self.max], true);
                            self.skip_line = true;
                            pos += self.max;
                        }
                        None if eof => {
                            let line = rest.strip_suffix(b"\r").unwrap_or(rest);
                            if !line.is_empty() {
                                emit(line, false);
                            }
                            pos = buf.len();
                        }
                        None => break,
                    }
                }
            }
        }
        buf.drain(..pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: Framing, max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut d = Decoder::new(framing, max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            buf.extend_from_slice(chunk);
            let eof = i + 1 == chunks.len();
            d.decode(&mut buf, eof, |f, t| {
                out.push((String::from_utf8_lossy(f).into_owned(), t))
            });
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        out
    }

    fn ok(s: &str) -> (String, bool) {
        (s.to_string(), false)
    }

    #[test]
    fn auto_framing_reads_counted_and_newline_frames_split_anywhere() {
        let stream: &[u8] = b"5 <1>ab6 <1>cd\n\n<2>line\r\n3 xyz<3>last";
        let want = vec![
            ok("<1>ab"),
            ok("<1>cd"),
            ok("<2>line"),
            ok("xyz"),
            ok("<3>last"),
        ];
        for cut in 0..stream.len() {
            assert_eq!(
                frames(Framing::Auto, 100, &[&stream[..cut], &stream[cut..]]),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn newline_framing_does_not_read_counts() {
        assert_eq!(
            frames(Framing::Newline, 100, &[b"12 <1>x\n"]),
            vec![ok("12 <1>x")]
        );
    }

    #[test]
    fn over_long_frames_are_cut_flagged_and_the_stream_stays_in_step() {
        assert_eq!(
            frames(
                Framing::Auto,
                4,
                &[b"10 0123456789", b"2 ab", b"abcdefgh\nxy\n"]
            ),
            vec![
                ("0123".into(), true),
                ok("ab"),
                ("abcd".into(), true),
                ok("xy")
            ]
        );
    }

    #[test]
    fn a_counted_frame_cut_short_by_the_end_of_the_stream_is_flagged() {
        assert_eq!(
            frames(Framing::OctetCounting, 100, &[b"10 abc"]),
            vec![("abc".into(), true)]
        );
    }
}
