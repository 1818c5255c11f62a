//! Exact passthrough and the reserved-name rule, byte for byte.

use super::*;

const ADDED: &[(&str, &str)] = &[("timestamp", "T"), ("host", "h"), ("source", "s")];

/// The event written for one client object, with the default reserved names.
fn event(json: &str) -> String {
    event_with(json, &ReservedFields::default())
}

fn event_with(json: &str, reserved: &ReservedFields) -> String {
    let Ok(Item::Object(object)) = parse_item(json) else {
        panic!("not an object: {json}");
    };
    let mut out = Vec::new();
    object.write_event(&mut out, reserved, ADDED);
    let text = String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"));
    // Whatever went in, what comes out is one JSON object.
    serde_json::from_str::<&RawValue>(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    text
}

const TAIL: &str = r#""timestamp":"T","host":"h","source":"s"}"#;

#[test]
fn numbers_of_any_size_and_precision_pass_through_as_sent() {
    for n in [
        "18446744073709551616",
        "-9223372036854775809",
        "1.000000000000000000001",
        "1e400",
        "-0",
        "1E+2",
        "0.1e-999",
        "123456789012345678901234567890.5",
    ] {
        assert_eq!(
            event(&format!(r#"{{"n":{n}}}"#)),
            format!(r#"{{"n":{n},{TAIL}"#)
        );
    }
    assert_eq!(
        event(r#"{"n":18446744073709551616,"i":-9223372036854775809}"#),
        format!(r#"{{"n":18446744073709551616,"i":-9223372036854775809,{TAIL}"#)
    );
}

#[test]
fn keys_keep_the_clients_order() {
    assert_eq!(
        event(r#"{"z":1,"a":2,"m":3}"#),
        format!(r#"{{"z":1,"a":2,"m":3,{TAIL}"#)
    );
}

#[test]
fn strings_keep_their_escapes_byte_for_byte() {
    let json = r#"{"s":"caf\u00e9 \ud83d\ude00 \"q\" \/ \n\t","k\u00e9y":"é😀","e":""}"#;
    assert_eq!(event(json), format!("{},{TAIL}", &json[..json.len() - 1]));
}

#[test]
fn nested_objects_and_arrays_pass_through_with_their_inner_spacing() {
    let json = r#" { "o" : { "b" : [ 1 , {"c":null} ] , "a":true } , "l":[[],{}] } "#;
    assert_eq!(
        event(json),
        format!(r#"{{"o":{{ "b" : [ 1 , {{"c":null}} ] , "a":true }},"l":[[],{{}}],{TAIL}"#)
    );
}

#[test]
fn duplicate_keys_are_kept_as_sent() {
    assert_eq!(
        event(r#"{"a":1,"a":2,"b":3}"#),
        format!(r#"{{"a":1,"a":2,"b":3,{TAIL}"#)
    );
}

#[test]
fn the_clients_timestamp_host_and_source_stay_and_are_not_added_again() {
    assert_eq!(
        event(r#"{"source":"x","timestamp":"2020-01-01T00:00:00Z"}"#),
        r#"{"source":"x","timestamp":"2020-01-01T00:00:00Z","host":"h"}"#
    );
    // An escaped name is the same name.
    assert_eq!(
        event(r#"{"ho\u0073t":"x"}"#),
        r#"{"ho\u0073t":"x","timestamp":"T","source":"s"}"#
    );
    assert_eq!(event("{}"), format!("{{{TAIL}"));
}

#[test]
fn a_reserved_field_moves_under_client_fields_with_its_value_as_sent() {
    assert_eq!(
        event(r#"{"message":"b","seq":999999}"#),
        format!(r#"{{"message":"b","client_fields":{{"seq":999999}},{TAIL}"#)
    );
    assert_eq!(
        event(
            r#"{"gapless":"gap","reason":"wal_corrupt","first_seq":1,"last_seq":500,"events":500}"#
        ),
        format!(
            r#"{{"reason":"wal_corrupt","first_seq":1,"last_seq":500,"events":500,"client_fields":{{"gapless":"gap"}},{TAIL}"#
        )
    );
    assert_eq!(
        event(r#"{"seq":18446744073709551616.0e3}"#),
        format!(r#"{{"client_fields":{{"seq":18446744073709551616.0e3}},{TAIL}"#)
    );
}

#[test]
fn a_clients_own_client_fields_moves_too_so_nothing_is_lost() {
    assert_eq!(
        event(r#"{"client_fields":1,"seq":2}"#),
        format!(r#"{{"client_fields":{{"client_fields":1,"seq":2}},{TAIL}"#)
    );
    assert_eq!(
        event(r#"{"client_fields":{"a":1}}"#),
        format!(r#"{{"client_fields":{{"client_fields":{{"a":1}}}},{TAIL}"#)
    );
}

#[test]
fn duplicated_and_escaped_reserved_keys_all_move_in_order() {
    let reserved = ReservedFields::new(["seq", "n"]);
    assert_eq!(
        event_with(
            r#"{"n":1,"x":2,"seq":3,"gapless":"gap","s\u0065q":4,"gapless":"heartbeat"}"#,
            &reserved
        ),
        format!(
            r#"{{"x":2,"client_fields":{{"n":1,"seq":3,"gapless":"gap","s\u0065q":4,"gapless":"heartbeat"}},{TAIL}"#
        )
    );
    // `n` is only reserved when a sink uses it.
    assert_eq!(event(r#"{"n":1}"#), format!(r#"{{"n":1,{TAIL}"#));
}

#[test]
fn a_nested_reserved_name_is_the_clients_business() {
    assert_eq!(
        event(r#"{"o":{"seq":1,"gapless":"gap"}}"#),
        format!(r#"{{"o":{{"seq":1,"gapless":"gap"}},{TAIL}"#)
    );
}

#[test]
fn a_body_is_an_array_of_items_or_one() {
    let Ok(Body::Many(items)) =
        parse_body(r#"[{"a":1}, "line \"one\"", 42, null, true, [1], "plain"]"#)
    else {
        panic!("not an array");
    };
    let kinds: Vec<String> = items
        .iter()
        .map(|i| match i {
            Item::Object(o) => format!("object {:?}", o.names().collect::<Vec<_>>()),
            Item::Line(l) => format!("line {l}"),
            Item::Other(k) => (*k).to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "object [Some(\"a\")]",
            "line line \"one\"",
            "a number",
            "null",
            "a boolean",
            "an array",
            "line plain"
        ]
    );
    assert!(matches!(parse_body(r#""x""#), Ok(Body::One(Item::Line(_)))));
    assert!(matches!(
        parse_body(r#"{"a":1}"#),
        Ok(Body::One(Item::Object(_)))
    ));
    assert!(matches!(parse_item(r#"[1]"#), Ok(Item::Other("an array"))));
}

#[test]
fn malformed_json_is_refused_whole() {
    for bad in [
        r#"[{"a":1}, {"b":2"#,
        r#"{"a":1} x"#,
        r#"{"a":"\x"}"#,
        "{\"a\":\"tab\tinside\"}",
        r#"{"a":01}"#,
        r#"{"a":1,}"#,
        r#"{a:1}"#,
        "",
    ] {
        assert!(parse_body(bad).is_err(), "accepted {bad:?}");
        assert!(parse_item(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn a_stored_object_is_read_back_for_the_sinks_guard() {
    let o = ClientObject::parse(r#"{"m":1,"s\u0065q":2}"#).unwrap_or_default();
    assert_eq!(
        o.names().collect::<Vec<_>>(),
        [Some("m".into()), Some("seq".into())]
    );
    assert!(ClientObject::parse(r#""a line""#).is_none());
}
