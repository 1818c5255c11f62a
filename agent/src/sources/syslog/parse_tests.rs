use serde_json::{json, Value};

use super::*;
use crate::event::Timestamp;

/// 2026-11-30T05:30:00Z.
const NOW: u64 = 1_796_016_600_000_000_000;

fn object(m: &Message<'_>) -> Value {
    let mut buf = Vec::new();
    m.write_json(&mut buf, "10.0.0.1:514");
    serde_json::from_slice(&buf)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&buf)))
}

fn time(m: &Message<'_>) -> Option<String> {
    m.timestamp
        .map(|t| Timestamp::from_unix_nanos(t).as_str().to_string())
}

#[test]
fn now_is_the_date_the_tests_assume() {
    assert_eq!(
        Timestamp::from_unix_nanos(NOW).as_str(),
        "2026-11-30T05:30:00.000000Z"
    );
}

#[test]
fn the_rfc_5424_example_parses_into_every_field() {
    let m = parse(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8",
        NOW,
    );
    assert_eq!(m.msg, b"'su root' failed for lonvick on /dev/pts/8");
    assert_eq!(time(&m).as_deref(), Some("2003-10-11T22:14:15.003000Z"));
    assert_eq!(
        object(&m),
        json!({"facility": "auth", "severity": "crit", "hostname": "mymachine.example.com",
               "appname": "su", "msgid": "ID47", "format": "rfc5424", "peer": "10.0.0.1:514"})
    );
}

#[test]
fn structured_data_escapes_offsets_and_the_bom_are_handled() {
    let m = parse(
        b"<165>1 2003-10-11T22:14:15.003-07:00 host evntslog 99 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App \\\"x\\\" \\] \\\\\"][examplePriority@32473 class=\"high\" class=\"low\"] \xEF\xBB\xBFAn entry",
        NOW,
    );
    assert_eq!(m.msg, b"An entry");
    assert_eq!(time(&m).as_deref(), Some("2003-10-12T05:14:15.003000Z"));
    assert_eq!(
        object(&m),
        json!({"facility": "local4", "severity": "notice", "hostname": "host",
               "appname": "evntslog", "procid": "99", "msgid": "ID47",
               "structured_data": {
                   "exampleSDID@32473": {"iut": "3", "eventSource": "App \"x\" ] \\"},
                   "examplePriority@32473": {"class": ["high", "low"]}},
               "format": "rfc5424", "peer": "10.0.0.1:514"})
    );
}

#[test]
fn an_all_nil_rfc_5424_message_has_no_fields_and_ingest_time() {
    let m = parse(b"<13>1 - - - - - -", NOW);
    assert_eq!(
        (m.format, m.msg, m.timestamp),
        (Format::Rfc5424, &b""[..], None)
    );
    assert_eq!(
        object(&m),
        json!({"facility": "user", "severity": "notice", "format": "rfc5424", "peer": "10.0.0.1:514"})
    );
}

#[test]
fn an_impossible_rfc_5424_timestamp_leaves_ingest_time_and_keeps_the_rest() {
    let m = parse(b"<13>1 2026-02-29T10:00:00Z h a - - - text", NOW);
    assert_eq!(
        (m.format, m.timestamp, m.msg),
        (Format::Rfc5424, None, &b"text"[..])
    );
}

#[test]
fn the_rfc_3164_example_gets_this_year() {
    let m = parse(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed", NOW);
    assert_eq!(m.msg, b"'su root' failed");
    assert_eq!(time(&m).as_deref(), Some("2026-10-11T22:14:15.000000Z"));
    assert_eq!(
        object(&m),
        json!({"facility": "auth", "severity": "crit", "hostname": "mymachine",
               "appname": "su", "format": "rfc3164", "peer": "10.0.0.1:514"})
    );
}

#[test]
fn an_rfc_3164_time_more_than_a_day_ahead_is_last_year() {
    // Dec 31 read on Jan 1: last year's.
    let jan1 = NOW + 32 * 86_400 * NANOS;
    let m = parse(b"<13>Dec 31 23:59:00 h app: x", jan1);
    assert_eq!(time(&m).as_deref(), Some("2026-12-31T23:59:00.000000Z"));
    // Half a day ahead (a sender's clock a little fast): this year.
    let m = parse(b"<13>Nov 30 17:00:00 h app: x", NOW);
    assert_eq!(time(&m).as_deref(), Some("2026-11-30T17:00:00.000000Z"));
    let m = parse(b"<13>Dec  2 17:00:00 h app: x", NOW);
    assert_eq!(time(&m).as_deref(), Some("2025-12-02T17:00:00.000000Z"));
}

#[test]
fn an_rfc_3164_message_without_hostname_has_tag_and_pid() {
    let m = parse(b"<13>Nov  3 05:30:00 myapp[42]: hello", NOW);
    assert_eq!(
        (m.hostname, m.appname, m.procid, m.msg),
        (None, Some(&b"myapp"[..]), Some(&b"42"[..]), &b"hello"[..])
    );
}

#[test]
fn an_rfc_3164_message_with_an_rfc_3339_time_is_read() {
    let m = parse(b"<30>2026-11-30T06:00:00.5+01:00 web sshd[7]: ok", NOW);
    assert_eq!(time(&m).as_deref(), Some("2026-11-30T05:00:00.500000Z"));
    assert_eq!(
        (m.hostname, m.appname, m.procid, m.msg),
        (
            Some(&b"web"[..]),
            Some(&b"sshd"[..]),
            Some(&b"7"[..]),
            &b"ok"[..]
        )
    );
}

#[test]
fn a_pri_without_a_time_is_rfc_3164_with_everything_as_msg() {
    let m = parse(b"<13>just text: here", NOW);
    assert_eq!(
        (m.format, m.msg, m.timestamp),
        (Format::Rfc3164, &b"just text: here"[..], None)
    );
}

#[test]
fn messages_without_a_valid_pri_or_with_broken_sd_are_kept_whole() {
    for input in [
        &b"hello world"[..],
        b"<192>Oct 11 22:14:15 h a: x",
        b"<>x",
        b"<13",
        b"",
        b"<34>1 - - - - - [bad",
        b"<34>1 - - - - - [id a=\"x\"]no-space",
        b"<34>1 - -",
    ] {
        let m = parse(input, NOW);
        assert_eq!((m.format, m.msg), (Format::Unparsed, input), "{input:?}");
        assert_eq!(
            object(&m),
            json!({"format": "unparsed", "peer": "10.0.0.1:514"})
        );
    }
}
