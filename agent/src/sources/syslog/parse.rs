//! Parses one syslog message (RFC 5424 or RFC 3164/BSD) into its parts, and writes the
//! `syslog` object of its event. Owns no framing (see `framing.rs`) and no I/O.
//!
//! - Total: every input gives a [`Message`]. Without a valid `<PRI>` it is
//!   [`Format::Unparsed`] and the whole input is the MSG.
//! - RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`; `-` is NIL.
//!   A malformed header or SD makes the message [`Format::Unparsed`] (kept whole). A
//!   timestamp that does not parse leaves the event at ingest time.
//! - RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`. The timestamp may also be
//!   RFC 3339 (rsyslog's forward format). The missing year is the current one, or the
//!   previous one when that would put the time more than a day in the future; the missing
//!   zone is taken as UTC (the agent cannot know the sender's). A first word ending in `:`
//!   or holding `[` is the TAG of a message without HOSTNAME. Anything after `<PRI>` that
//!   is not a timestamp is the MSG.
//! - A UTF-8 BOM at the start of MSG is stripped.

use crate::event::write_json_bytes;

/// Which grammar a message matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 5424.
    Rfc5424,
    /// RFC 3164 (BSD).
    Rfc3164,
    /// Neither: kept whole.
    Unparsed,
}

impl Format {
    /// The name in the event's `syslog.format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Rfc5424 => "rfc5424",
            Format::Rfc3164 => "rfc3164",
            Format::Unparsed => "unparsed",
        }
    }
}

/// One SD-ELEMENT: its SD-ID and its params, values unescaped.
pub type SdElement<'a> = (&'a [u8], Vec<(&'a [u8], Vec<u8>)>);

/// The parts of one message. Absent and NIL fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Which grammar matched.
    pub format: Format,
    /// Facility and severity codes, from PRI.
    pub pri: Option<(u8, u8)>,
    /// The message's own time, nanoseconds since the epoch (UTC).
    pub timestamp: Option<u64>,
    /// HOSTNAME.
    pub hostname: Option<&'a [u8]>,
    /// APP-NAME (RFC 3164: the TAG).
    pub appname: Option<&'a [u8]>,
    /// PROCID (RFC 3164: the `[PID]` after the TAG).
    pub procid: Option<&'a [u8]>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<&'a [u8]>,
    /// STRUCTURED-DATA (RFC 5424 only), in order.
    pub structured_data: Vec<SdElement<'a>>,
    /// MSG, BOM stripped.
    pub msg: &'a [u8],
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const BOM: &[u8] = b"\xEF\xBB\xBF";
const NANOS: u64 = 1_000_000_000;

/// Parses `input`; `now` (nanoseconds since the epoch) resolves RFC 3164's missing year.
pub fn parse(input: &[u8], now: u64) -> Message<'_> {
    let unparsed = Message {
        format: Format::Unparsed,
        pri: None,
        timestamp: None,
        hostname: None,
        appname: None,
        procid: None,
        msgid: None,
        structured_data: Vec::new(),
        msg: input,
    };
    let Some((pri, rest)) = parse_pri(input) else {
        return unparsed;
    };
    if let Some(after) = rest.strip_prefix(b"1 ") {
        return parse_5424(pri, after).unwrap_or(unparsed);
    }
    parse_3164(pri, rest, now)
}

fn parse_pri(input: &[u8]) -> Option<((u8, u8), &[u8])> {
    let rest = input.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u32 = digits.iter().fold(0, |v, &d| v * 10 + u32::from(d - b'0'));
    if value > 191 {
        return None;
    }
    Some((((value / 8) as u8, (value % 8) as u8), &rest[end + 1..]))
}

/// The next space-delimited token and what follows its space (`None` at the end).
fn token(input: &[u8]) -> Option<(&[u8], &[u8])> {
    match input.iter().position(|&b| b == b' ') {
        Some(0) => None,
        Some(i) => Some((&input[..i], &input[i + 1..])),
        None if input.is_empty() => None,
        None => Some((input, &[])),
    }
}

fn nil(t: &[u8]) -> Option<&[u8]> {
    (t != b"-").then_some(t)
}

fn parse_5424(pri: (u8, u8), rest: &[u8]) -> Option<Message<'_>> {
    let (ts, rest) = token(rest)?;
    let (hostname, rest) = token(rest)?;
    let (appname, rest) = token(rest)?;
    let (procid, rest) = token(rest)?;
    let (msgid, rest) = token(rest)?;
    let (structured_data, rest) = if let Some(r) = rest.strip_prefix(b"-") {
        (Vec::new(), r)
    } else {
        parse_sd(rest)?
    };
    let msg = match rest {
        [] => rest,
        [b' ', msg @ ..] => msg,
        _ => return None,
    };
    Some(Message {
        format: Format::Rfc5424,
        pri: Some(pri),
        timestamp: nil(ts).and_then(parse_rfc3339),
        hostname: nil(hostname),
        appname: nil(appname),
        procid: nil(procid),
        msgid: nil(msgid),
        structured_data,
        msg: msg.strip_prefix(BOM).unwrap_or(msg),
    })
}

fn parse_sd(mut rest: &[u8]) -> Option<(Vec<SdElement<'_>>, &[u8])> {
    let mut out = Vec::new();
    while let Some(r) = rest.strip_prefix(b"[") {
        let id_end = r
            .iter()
            .position(|&b| matches!(b, b' ' | b']' | b'=' | b'"'))?;
        if id_end == 0 {
            return None;
        }
        let id = &r[..id_end];
        let mut r = &r[id_end..];
        let mut params = Vec::new();
        loop {
            match r {
                [b']', tail @ ..] => {
                    r = tail;
                    break;
                }
                [b' ', tail @ ..] => {
                    let name_end = tail.iter().position(|&b| b == b'=')?;
                    let name = &tail[..name_end];
                    if name.is_empty() || name.iter().any(|&b| matches!(b, b' ' | b']' | b'"')) {
                        return None;
                    }
                    let mut t = tail[name_end + 1..].strip_prefix(b"\"")?;
                    let mut value = Vec::new();
                    loop {
                        match t {
                            [b'\\', c @ (b'"' | b'\\' | b']'), tail @ ..] => {
                                value.push(*c);
                                t = tail;
                            }
                            [b'"', tail @ ..] => {
                                t = tail;
                                break;
                            }
                            [c, tail @ ..] => {
                                value.push(*c);
                                t = tail;
                            }
                            [] => return None,
                        }
                    }
                    params.push((name, value));
                    r = t;
                }
                _ => return None,
            }
        }
        out.push((id, params));
        rest = r;
    }
    if out.is_empty() {
        return None;
    }
    Some((out, rest))
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |v, &d| v * 10 + u32::from(d - b'0')))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of a valid date and time; `None` before 1970.
fn to_nanos(
    (y, mo, d): (i64, u32, u32),
    (h, mi, s): (u32, u32, u32),
    nanos: u64,
    offset_secs: i64,
) -> Option<u64> {
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60
    {
        return None;
    }
    // A leap second is held at :59.
    let s = s.min(59);
    let secs = days_from_civil(y, mo, d) * 86_400
        + i64::from(h) * 3600
        + i64::from(mi) * 60
        + i64::from(s)
        - offset_secs;
    u64::try_from(secs)
        .ok()?
        .checked_mul(NANOS)?
        .checked_add(nanos)
}

/// An RFC 3339 timestamp (`2003-10-11T22:14:15.003Z`, `…+02:00`) in nanoseconds, UTC.
pub(crate) fn parse_rfc3339(t: &[u8]) -> Option<u64> {
    if t.len() < 20
        || t[4] != b'-'
        || t[7] != b'-'
        || !matches!(t[10], b'T' | b't')
        || t[13] != b':'
        || t[16] != b':'
    {
        return None;
    }
    let y = i64::from(digits(&t[0..4])?);
    let mo = digits(&t[5..7])?;
    let d = digits(&t[8..10])?;
    let h = digits(&t[11..13])?;
    let mi = digits(&t[14..16])?;
    let s = digits(&t[17..19])?;
    let mut rest = &t[19..];
    let mut nanos = 0u64;
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = u64::from(digits(&r[..n])?) * 10u64.pow(9 - n as u32);
        rest = &r[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hh0, hh1, b':', mm0, mm1] => {
            let hh = i64::from(digits(&[*hh0, *hh1])?);
            let mm = i64::from(digits(&[*mm0, *mm1])?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let o = hh * 3600 + mm * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    to_nanos((y, mo, d), (h, mi, s), nanos, offset)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Mmm dd hh:mm:ss` (the day may be space-padded), with the year resolved against `now`.
fn parse_bsd_time(t: &[u8], now: u64) -> Option<u64> {
    if t.len() != 15 || t[3] != b' ' || t[6] != b' ' || t[9] != b':' || t[12] != b':' {
        return None;
    }
    let mo = MONTHS.iter().position(|m| &t[0..3] == *m)? as u32 + 1;
    let d = digits(t[4..6].trim_ascii_start())?;
    let h = digits(&t[7..9])?;
    let mi = digits(&t[10..12])?;
    let s = digits(&t[13..15])?;
    let year_now = crate::event::Timestamp::from_unix_nanos(now)
        .as_str()
        .get(..4)?
        .parse::<i64>()
        .ok()?;
    let this_year = to_nanos((year_now, mo, d), (h, mi, s), 0, 0);
    match this_year {
        Some(t) if t <= now.saturating_add(86_400 * NANOS) => Some(t),
        // In the future (a December message read in January), or Feb 29 of a non-leap
        // year: the previous year.
        _ => to_nanos((year_now - 1, mo, d), (h, mi, s), 0, 0),
    }
}

fn parse_3164(pri: (u8, u8), rest: &[u8], now: u64) -> Message<'_> {
    let mut m = Message {
        format: Format::Rfc3164,
        pri: Some(pri),
        timestamp: None,
        hostname: None,
        appname: None,
        procid: None,
        msgid: None,
        structured_data: Vec::new(),
        msg: rest,
    };
    let after_time = if let Some(ts) = rest.get(..15).and_then(|t| parse_bsd_time(t, now)) {
        m.timestamp = Some(ts);
        &rest[15..]
    } else if let Some((ts, after)) =
        token(rest).and_then(|(t, after)| parse_rfc3339(t).map(|ts| (ts, after)))
    {
        m.timestamp = Some(ts);
        after
    } else {
        m.msg = rest.strip_prefix(BOM).unwrap_or(rest);
        return m;
    };
    let after_time = after_time.strip_prefix(b" ").unwrap_or(after_time);
    let (hostname, rest) = match token(after_time) {
        Some((word, r)) if !word.ends_with(b":") && !word.contains(&b'[') => (Some(word), r),
        _ => (None, after_time),
    };
    m.hostname = hostname;
    m.msg = rest;
    // TAG: up to 48 name bytes, then `[PID]` and/or `:`.
    let tag_end = rest
        .iter()
        .take(49)
        .position(|&b| matches!(b, b'[' | b':' | b' '));
    if let Some(end) = tag_end.filter(|&e| e > 0) {
        let tag = &rest[..end];
        let mut r = &rest[end..];
        let mut procid = None;
        if let Some(p) = r.strip_prefix(b"[") {
            if let Some(close) = p.iter().take(129).position(|&b| b == b']') {
                procid = Some(&p[..close]);
                r = &p[close + 1..];
            }
        }
        if let Some(msg) = r.strip_prefix(b":") {
            m.appname = Some(tag);
            m.procid = procid;
            m.msg = msg.strip_prefix(b" ").unwrap_or(msg);
        }
    }
    m.msg = m.msg.strip_prefix(BOM).unwrap_or(m.msg);
    m
}

impl Message<'_> {
    /// Writes the event's `syslog` object; `peer` is the sender's address.
    pub fn write_json(&self, buf: &mut Vec<u8>, peer: &str) {
        buf.push(b'{');
        if let Some((facility, severity)) = self.pri {
            buf.extend_from_slice(b"\"facility\":\"");
            buf.extend_from_slice(FACILITIES[usize::from(facility) % 24].as_bytes());
            buf.extend_from_slice(b"\",\"severity\":\"");
            buf.extend_from_slice(SEVERITIES[usize::from(severity) % 8].as_bytes());
            buf.extend_from_slice(b"\",");
        }
        for (key, value) in [
            ("hostname", self.hostname),
            ("appname", self.appname),
            ("procid", self.procid),
            ("msgid", self.msgid),
        ] {
            if let Some(v) = value {
                buf.push(b'"');
                buf.extend_from_slice(key.as_bytes());
                buf.extend_from_slice(b"\":");
                write_json_bytes(buf, v);
                buf.push(b',');
            }
        }
        if !self.structured_data.is_empty() {
            buf.extend_from_slice(b"\"structured_data\":{");
            write_sd(buf, &self.structured_data);
            buf.extend_from_slice(b"},");
        }
        buf.extend_from_slice(b"\"format\":\"");
        buf.extend_from_slice(self.format.name().as_bytes());
        buf.extend_from_slice(b"\",\"peer\":");
        write_json_bytes(buf, peer.as_bytes());
        buf.push(b'}');
    }
}

/// Writes SD-ID → {param: value}. A repeated SD-ID's params join the first one's; a
/// repeated param name (RFC 5424 allows it) gets an array of its values, in order.
fn write_sd(buf: &mut Vec<u8>, sd: &[SdElement<'_>]) {
    let mut ids: Vec<&[u8]> = Vec::new();
    for (id, _) in sd {
        if !ids.contains(id) {
            ids.push(id);
        }
    }
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_json_bytes(buf, id);
        buf.extend_from_slice(b":{");
        let params: Vec<&(&[u8], Vec<u8>)> = sd
            .iter()
            .filter(|(e, _)| e == id)
            .flat_map(|(_, p)| p.iter())
            .collect();
        let mut names: Vec<&[u8]> = Vec::new();
        for (name, _) in &params {
            if !names.contains(name) {
                names.push(name);
            }
        }
        for (j, name) in names.iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            write_json_bytes(buf, name);
            buf.push(b':');
            let values: Vec<&Vec<u8>> = params
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
                .collect();
            if let [one] = values[..] {
                write_json_bytes(buf, one);
            } else {
                buf.push(b'[');
                for (k, v) in values.iter().enumerate() {
                    if k > 0 {
                        buf.push(b',');
                    }
                    write_json_bytes(buf, v);
                }
                buf.push(b']');
            }
        }
        buf.push(b'}');
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
