//! Records: their byte layout, encoding and decoding, and the payload of gap records.
//! Owns nothing on disk; segments and readers call into it.
//!
//! # Record layout (little-endian)
//!
//! ```text
//! offset  size  field
//! ──────  ────  ─────────────────────────────────────────────────────────────
//!      0     4  magic      F7 47 4C 52  (0xF7 never occurs in UTF-8 text)
//!      4     4  crc32c     CRC32C (Castagnoli) of bytes 8 .. 32+len
//!      8     4  len        payload length in bytes
//!     12     1  kind       1 = event, 2 = gap
//!     13     3  reserved   zero
//!     16     8  seq        sequence number, +1 per record, never reused
//!     24     8  timestamp  append time, nanoseconds since the Unix epoch
//!     32   len  payload    opaque bytes (for a gap: see `Gap`)
//! ```
//!
//! The magic lets a reader that met damage resynchronise at the next intact record: it
//! scans for the four bytes, then trusts a candidate only if its length fits, its
//! sequence number is plausible and its checksum matches.

use bytes::Bytes;

/// Bytes before a record's payload.
pub const RECORD_HEADER_LEN: usize = 32;
/// First four bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = [0xF7, b'G', b'L', b'R'];

/// A sequence number. Increases by one per record and is never reused.
pub type Seq = u64;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// An event appended by a producer.
    Event,
    /// A gap record: records that were lost or dropped, described by [`Gap`].
    Gap,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Event => 1,
            RecordKind::Gap => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Event),
            2 => Some(RecordKind::Gap),
            _ => None,
        }
    }
}

/// One record as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number. For a gap a reader synthesised after damage, the last lost
    /// sequence number, so that acknowledging it moves past the damage.
    pub seq: Seq,
    /// When it was appended, in nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// Event or gap.
    pub kind: RecordKind,
    /// The bytes the producer appended; for a gap, a [`Gap`] in its encoded form.
    pub payload: Bytes,
}

impl Record {
    /// The gap this record describes, if it is a gap record.
    pub fn gap(&self) -> Option<Gap> {
        match self.kind {
            RecordKind::Gap => Gap::decode(&self.payload),
            RecordKind::Event => None,
        }
    }
}

/// Appends one encoded record to `buf`.
pub(crate) fn encode_into(
    buf: &mut Vec<u8>,
    seq: Seq,
    timestamp: u64,
    kind: RecordKind,
    payload: &[u8],
) {
    let start = buf.len();
    buf.reserve(RECORD_HEADER_LEN + payload.len());
    buf.extend_from_slice(&RECORD_MAGIC);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[kind.to_byte(), 0, 0, 0]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&timestamp.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    Magic,
    Header,
    TooLong,
    Checksum,
}

/// The outcome of decoding at one position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole, intact record of `total` bytes.
    Record {
        seq: Seq,
        timestamp: u64,
        kind: RecordKind,
        total: usize,
    },
    /// Too few bytes to tell; `need` bytes in all would settle it.
    Incomplete { need: usize },
    /// Not a record.
    Malformed(Malformed),
}

/// Decodes the record at the start of `buf`. Payload lengths above `max_payload` are
/// malformed, so a damaged length never makes a reader wait for gigabytes.
pub(crate) fn decode(buf: &[u8], max_payload: usize) -> Decoded {
    let magic_have = buf.len().min(4);
    if buf[..magic_have] != RECORD_MAGIC[..magic_have] {
        return Decoded::Malformed(Malformed::Magic);
    }
    if buf.len() < RECORD_HEADER_LEN {
        return Decoded::Incomplete {
            need: RECORD_HEADER_LEN,
        };
    }
    let len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let Some(kind) = RecordKind::from_byte(buf[12]) else {
        return Decoded::Malformed(Malformed::Header);
    };
    if buf[13..16] != [0, 0, 0] {
        return Decoded::Malformed(Malformed::Header);
    }
    if len > max_payload {
        return Decoded::Malformed(Malformed::TooLong);
    }
    let total = RECORD_HEADER_LEN + len;
    if buf.len() < total {
        return Decoded::Incomplete { need: total };
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32c::crc32c(&buf[8..total]) != stored {
        return Decoded::Malformed(Malformed::Checksum);
    }
    Decoded::Record {
        seq: u64_at(buf, 16),
        timestamp: u64_at(buf, 24),
        kind,
        total,
    }
}

/// What the header at the start of `buf` says, unchecked: for weighing a record that failed
/// its checksum as evidence (see `recovery::tail`), never for reading one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UncheckedHeader {
    /// The magic is intact.
    pub magic: bool,
    /// The kind is a known one and the reserved bytes are zero.
    pub kind: bool,
    /// The payload length it states.
    pub len: usize,
    /// The sequence number it states.
    pub seq: Seq,
}

/// The unchecked header at the start of `buf`; `None` if `buf` is shorter than a header.
pub(crate) fn unchecked_header(buf: &[u8]) -> Option<UncheckedHeader> {
    let h = buf.get(..RECORD_HEADER_LEN)?;
    Some(UncheckedHeader {
        magic: h[0..4] == RECORD_MAGIC,
        kind: RecordKind::from_byte(h[12]).is_some() && h[13..16] == [0, 0, 0],
        len: u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize,
        seq: u64_at(h, 16),
    })
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Why records are missing from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// `when_full = drop_oldest` deleted unacknowledged segments.
    DropOldest,
    /// `when_full = drop_newest` refused new records (they never got sequence numbers).
    DropNewest,
    /// A reader met damaged bytes; the records in the range could not be read.
    Corrupt,
    /// Records are missing and the log cannot say why (for example a power cut lost the
    /// unsynced end of the log under `durability = interval` while a cursor had passed it).
    Missing,
    /// A source lost input before it reached the log (for example a rotated file deleted
    /// before it was read to its end); appended by that source.
    SourceOverflow,
}

impl GapReason {
    /// The stable name used in gap records downstream.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::DropOldest => "wal_full_drop_oldest",
            GapReason::DropNewest => "wal_full_drop_newest",
            GapReason::Corrupt => "wal_corrupt",
            GapReason::Missing => "wal_missing",
            GapReason::SourceOverflow => "source_overflow",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            GapReason::DropOldest => 1,
            GapReason::DropNewest => 2,
            GapReason::Corrupt => 3,
            GapReason::Missing => 4,
            GapReason::SourceOverflow => 5,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => GapReason::DropOldest,
            2 => GapReason::DropNewest,
            3 => GapReason::Corrupt,
            4 => GapReason::Missing,
            5 => GapReason::SourceOverflow,
            _ => return None,
        })
    }
}

/// What a gap record says: which records are gone, how many bytes, when, and why.
///
/// Encoded payload (little-endian): `reason u8 | flags u8 (bit0: seq range known) |
/// reserved 6 | first_seq u64 | last_seq u64 | records u64 | bytes u64 | from_ns u64 |
/// to_ns u64` — 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gap {
    /// Why the records are missing.
    pub reason: GapReason,
    /// The first and last lost sequence numbers, when the records had any (records
    /// refused by `drop_newest` never got one).
    pub seqs: Option<(Seq, Seq)>,
    /// How many records are lost.
    pub records: u64,
    /// How many bytes of the log they took (or, refused, would have taken).
    pub bytes: u64,
    /// Append time of the first lost record, where known (nanoseconds since the epoch; 0
    /// when unknown).
    pub from: u64,
    /// Append time of the last lost record, where known (0 when unknown).
    pub to: u64,
}

const GAP_LEN: usize = 56;

impl Gap {
    /// The payload of a gap record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(GAP_LEN);
        b.push(self.reason.to_byte());
        b.push(u8::from(self.seqs.is_some()));
        b.extend_from_slice(&[0; 6]);
        let (first, last) = self.seqs.unwrap_or((0, 0));
        for v in [first, last, self.records, self.bytes, self.from, self.to] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Reads a gap record's payload; `None` if it is not one.
    pub fn decode(b: &[u8]) -> Option<Gap> {
        if b.len() != GAP_LEN {
            return None;
        }
        let reason = GapReason::from_byte(b[0])?;
        let seqs = (b[1] & 1 == 1).then(|| (u64_at(b, 8), u64_at(b, 16)));
        Some(Gap {
            reason,
            seqs,
            records: u64_at(b, 24),
            bytes: u64_at(b, 32),
            from: u64_at(b, 40),
            to: u64_at(b, 48),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_the_documented_layout() {
        let mut buf = Vec::new();
        encode_into(
            &mut buf,
            0x0102030405060708,
            0x1112131415161718,
            RecordKind::Event,
            b"hi",
        );
        let mut expected = vec![0xF7, b'G', b'L', b'R'];
        let crc_at = expected.len();
        expected.extend_from_slice(&[0; 4]);
        expected.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0]);
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend_from_slice(&[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]);
        expected.extend_from_slice(b"hi");
        let crc = crc32c::crc32c(&expected[8..]);
        expected[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(buf, expected);
    }

    #[test]
    fn decode_round_trips_and_reports_total_length() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 7, 99, RecordKind::Gap, b"payload");
        assert_eq!(
            decode(&buf, 1024),
            Decoded::Record {
                seq: 7,
                timestamp: 99,
                kind: RecordKind::Gap,
                total: RECORD_HEADER_LEN + 7
            }
        );
    }

    #[test]
    fn every_prefix_of_a_record_is_incomplete_never_a_record() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, 2, RecordKind::Event, b"0123456789");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut], 1024), Decoded::Incomplete { .. }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, 2, RecordKind::Event, b"some payload");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad, 1024), Decoded::Record { .. }),
                    "flip {byte}:{bit}"
                );
            }
        }
    }

    #[test]
    fn oversized_length_is_malformed_not_incomplete() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 1, 2, RecordKind::Event, &[0; 100]);
        assert_eq!(decode(&buf, 10), Decoded::Malformed(Malformed::TooLong));
    }

    #[test]
    fn gap_payload_round_trips() {
        let gap = Gap {
            reason: GapReason::DropOldest,
            seqs: Some((10, 20)),
            records: 11,
            bytes: 4096,
            from: 5,
            to: 6,
        };
        assert_eq!(Gap::decode(&gap.encode()), Some(gap));
        let refused = Gap {
            seqs: None,
            reason: GapReason::DropNewest,
            ..gap
        };
        assert_eq!(Gap::decode(&refused.encode()), Some(refused));
    }
}
