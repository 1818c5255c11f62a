//! The body of a bulk request and what a data stream makes of it: action lines parsed
//! (a malformed one fails the whole request), then each item checked and stored in
//! request order — op type, cue, document, `@timestamp`, mapping, `_id` — as
//! `docs/reference/docs/bulk.asciidoc` and `use-a-data-stream.asciidoc` describe.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Number, Value};

use super::wire::{error, Answer};
use super::{Data, Document, Item};

/// One action and its document, as parsed from the body.
pub(super) struct Action {
    pub(super) item: Item,
    /// The document, or why it is not a JSON object.
    pub(super) doc: Result<Map<String, Value>, String>,
}

/// Splits the body into actions. A malformed action line fails the whole request, as the
/// node parses action lines itself; documents are parsed per item, by the shard.
pub(super) fn parse_bulk(body: &[u8], path_index: Option<&str>) -> Result<Vec<Action>, Answer> {
    if body.is_empty() {
        return Err(error(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        ));
    }
    if body.last() != Some(&b'\n') {
        return Err(error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        ));
    }
    let text = String::from_utf8_lossy(body);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let mut actions = Vec::new();
    while let Some((n, line)) = lines.next() {
        let malformed = |what: &str| {
            error(
                400,
                "illegal_argument_exception",
                &format!("Malformed action/metadata line [{}], {what}", n + 1),
            )
        };
        let meta: Map<String, Value> = serde_json::from_str(line)
            .map_err(|_| malformed("expected START_OBJECT but found [VALUE_STRING]"))?;
        let (action, params) = meta
            .iter()
            .next()
            .filter(|_| meta.len() == 1)
            .ok_or_else(|| malformed("expected a simple action"))?;
        if !["create", "index", "update", "delete"].contains(&action.as_str()) {
            return Err(malformed(&format!(
                "expected one of [create, delete, index, update] but found [{action}]"
            )));
        }
        let index = params["_index"]
            .as_str()
            .or(path_index)
            .ok_or_else(|| {
                error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;",
                )
            })?
            .to_string();
        let id = params["_id"].as_str().map(str::to_string);
        let (source, doc) = if action == "delete" {
            (None, Err(String::new()))
        } else {
            let (_, line) = lines.next().ok_or_else(|| {
                error(
                    400,
                    "illegal_argument_exception",
                    "The bulk request must be terminated by a newline [\\n]",
                )
            })?;
            match serde_json::from_str::<Strict>(line) {
                Ok(Strict(Value::Object(map))) => (Some(Value::Object(map.clone())), Ok(map)),
                Ok(Strict(other)) => (Some(other), Err("expected an object".to_string())),
                // Still recorded as sent, for the test to see which event it was.
                Err(e) => (
                    Some(serde_json::from_str(line).unwrap_or(Value::String(line.to_string()))),
                    Err(e.to_string()),
                ),
            }
        };
        actions.push(Action {
            item: Item {
                action: action.clone(),
                index,
                id,
                source,
                status: None,
                error: None,
            },
            doc,
        });
    }
    Ok(actions)
}

impl Data {
    /// Runs one action against its data stream: the item as recorded, and its answer.
    pub(super) fn index(&mut self, action: Action, node: u16) -> (Item, Value) {
        let Action { mut item, doc } = action;
        let backing = backing_index(&item.index);
        let id = item.id.clone().unwrap_or_else(|| auto_id(self.seq_no));
        let failure = self.check(&item, &doc, &id);
        let mut answer = json!({"_index": backing, "_id": id});
        match failure {
            Some((status, kind, reason)) => {
                answer["status"] = json!(status);
                answer["error"] = json!({"type": kind, "reason": reason, "index": backing});
                item.status = Some(status);
                item.error = Some(kind.to_string());
            }
            None => {
                let seq_no = self.seq_no;
                self.seq_no += 1;
                let document = Document {
                    stream: item.index.clone(),
                    id: id.clone(),
                    source: Value::Object(doc.unwrap_or_default()),
                    node,
                };
                self.streams
                    .entry(item.index.clone())
                    .or_default()
                    .insert(id, (seq_no, document));
                answer["_version"] = json!(1);
                answer["result"] = json!("created");
                answer["_shards"] = json!({"total": 2, "successful": 1, "failed": 0});
                answer["_seq_no"] = json!(seq_no);
                answer["_primary_term"] = json!(1);
                answer["status"] = json!(201);
                item.status = Some(201);
            }
        }
        let answer = json!({ item.action.clone(): answer });
        (item, answer)
    }

    /// Why this action fails, as (status, error type, reason), in the order a data stream
    /// and its shard check: the op type, the cue, the document, then the `_id`.
    fn check(
        &mut self,
        item: &Item,
        doc: &Result<Map<String, Value>, String>,
        id: &str,
    ) -> Option<(u16, &'static str, String)> {
        if let Some(why) = invalid_index_name(&item.index) {
            return Some((
                400,
                "invalid_index_name_exception",
                format!("Invalid index name [{}], {why}", item.index),
            ));
        }
        if item.action != "create" {
            return Some((
                400,
                "illegal_argument_exception",
                "only write ops with an op_type of create are allowed in data streams".into(),
            ));
        }
        let source = item.source.clone().unwrap_or(Value::Null);
        for r in &mut self.rejections {
            if !(r.pick)(&source) {
                continue;
            }
            let seen = r.seen.entry(id.to_string()).or_default();
            if *seen < r.attempts {
                *seen += 1;
                return Some((
                    r.status,
                    item_error_type(r.status),
                    item_error_reason(r.status),
                ));
            }
        }
        let doc = match doc {
            Ok(doc) => doc,
            Err(e) => {
                return Some((
                    400,
                    "mapper_parsing_exception",
                    format!("failed to parse: {e}"),
                ))
            }
        };
        match doc.get("@timestamp") {
            Some(Value::String(t)) if looks_like_a_date(t) => {}
            Some(other) => {
                return Some((
                    400,
                    "mapper_parsing_exception",
                    format!("failed to parse field [@timestamp] of type [date] in document with id '{id}'. Preview of field's value: '{other}'"),
                ))
            }
            None => {
                return Some((
                    400,
                    "mapper_parsing_exception",
                    "failed to parse: data stream timestamp field [@timestamp] is missing".into(),
                ))
            }
        }
        for field in &self.longs {
            let value = field.split('.').try_fold(&source, |v, k| v.get(k));
            if let Some(v) = value.filter(|v| !coerces_to_long(v)) {
                return Some((
                    400,
                    "mapper_parsing_exception",
                    format!("failed to parse field [{field}] of type [long] in document with id '{id}'. Preview of field's value: '{}'", v.as_str().map_or(v.to_string(), str::to_string)),
                ));
            }
        }
        if self
            .streams
            .get(&item.index)
            .is_some_and(|s| s.contains_key(id))
        {
            return Some((
                409,
                "version_conflict_engine_exception",
                format!("[{id}]: version conflict, document already exists (current version [1])"),
            ));
        }
        None
    }
}

/// Why `name` cannot name an index or data stream, per the create-index API's limits:
/// lowercase only; none of `\ / * ? " < > |`, space, `,`, `#`, `:`; not starting with `-`,
/// `_`, `+`; not `.` or `..`; at most 255 bytes.
/// <https://elastic.co/guide/en/elasticsearch/reference/7.1/indices-create-index.html>
fn invalid_index_name(name: &str) -> Option<&'static str> {
    if name.chars().any(char::is_uppercase) {
        Some("must be lowercase")
    } else if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        Some("must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, :, #]")
    } else if name.starts_with(['-', '_', '+']) {
        Some("must not start with '_', '-', or '+'")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name.len() > 255 {
        Some("index name is too long")
    } else {
        None
    }
}

/// Whether a `long` field takes this value: numbers and numeric strings are coerced, `null`
/// is no value, arrays hold values.
fn coerces_to_long(v: &Value) -> bool {
    match v {
        Value::Null | Value::Number(_) => true,
        Value::String(s) => s.trim().parse::<f64>().is_ok(),
        Value::Array(items) => items.iter().all(coerces_to_long),
        _ => false,
    }
}

/// `strict_date_optional_time`, roughly: `yyyy-MM-dd` and optionally a time after it.
fn looks_like_a_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b'T')
}

fn item_error_type(status: u16) -> &'static str {
    match status {
        429 => "es_rejected_execution_exception",
        503 => "unavailable_shards_exception",
        409 => "version_conflict_engine_exception",
        400 => "mapper_parsing_exception",
        403 => "security_exception",
        s if s >= 500 => "exception",
        _ => "illegal_argument_exception",
    }
}

fn item_error_reason(status: u16) -> String {
    match status {
        429 => "rejected execution of coordinating operation [coordinating_and_primary_bytes=104857600, replica_bytes=0, all_bytes=104857600, coordinating_operation_bytes=2048, max_coordinating_and_primary_bytes=104857600]".into(),
        503 => "[.ds-index][0] primary shard is not active Timeout: [1m]".into(),
        403 => "action [indices:data/write/bulk[s]] is unauthorized for API key id [gapless-e2e] of user [gapless] on indices [logs-gapless-default], this action is granted by the index privileges [create_doc,create,index,write,all]".into(),
        s => format!("the test cluster fails this item with {s}"),
    }
}

/// `.ds-<stream>-<yyyy.mm.dd>-000001`, the first backing index of a stream created today.
fn backing_index(stream: &str) -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(".ds-{stream}-{year:04}.{month:02}.{day:02}-000001")
}

/// A generated `_id`: 20 URL-safe characters, unique within the cluster.
fn auto_id(seq_no: u64) -> String {
    format!("auto{seq_no:016}")
}

/// A document parsed as the server parses it: a key repeated in one object is an error
/// ("Duplicate field"), as Jackson's strict duplicate detection, on since 6.0, makes it.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(A::Error::custom(format!("Duplicate field '{key}'")));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Strict(Value::Object(object)))
    }
}
