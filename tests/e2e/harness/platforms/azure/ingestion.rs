//! The Logs Ingestion API's side of [`State`]: judging a call (route, token, rule, role,
//! version, size, body, cue, in that order), storing its rows with the `TimeGenerated`
//! rule, and finding what in the calls breaks the documented protocol.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{json, Value};

use super::server::{Action, Reply, Slot};
use super::*;
use crate::harness::http1::RawRequest;
use crate::harness::receiver::Outcome;

const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// One ingestion call as the endpoint saw it.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// When its last byte arrived.
    pub arrived: Instant,
    /// `POST`, …
    pub method: String,
    /// The request target, query included.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body's length as sent.
    pub sent_bytes: usize,
    /// The body's length after `Content-Encoding`, if it could be decoded.
    pub plain_bytes: Option<usize>,
    /// The body is JSON but not an array.
    pub not_array: bool,
    /// The rows; for a call answered 204 as stored (`TimeGenerated` rule applied).
    pub rows: Vec<Value>,
    /// For each stored row whose `TimeGenerated` was replaced, the value it had.
    pub replaced_times: Vec<Option<Value>>,
    /// Columns of stored rows that the stream does not declare, dropped (see
    /// [`Azure::declare_columns`]).
    pub dropped_columns: BTreeSet<String>,
    /// Columns of stored rows whose string value was cut to [`MAX_FIELD_BYTES`].
    pub truncated_columns: BTreeSet<String>,
    /// The `x-ms-error-code` answered, if any.
    pub error_code: Option<String>,
    /// What became of it.
    pub outcome: Outcome,
}

impl IngestRequest {
    /// Whether it was answered 204 (stored).
    pub fn accepted(&self) -> bool {
        self.outcome == Outcome::Answered(204)
    }

    /// The status answered, if it was.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Answered(s) => Some(s),
            _ => None,
        }
    }
}

impl Reply {
    /// The Logs Ingestion API's error shape [2].
    pub(super) fn azure(status: u16, code: &str, message: &str, retry_after: Option<u64>) -> Reply {
        let mut headers = vec![("x-ms-error-code", code.to_string())];
        if let Some(secs) = retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        Reply::json(
            status,
            &headers,
            json!({"error": {"code": code, "message": message}}),
        )
    }
}

impl State {
    /// Checks `Authorization: Bearer <token>`.
    fn bearer(&self, header: Option<&String>) -> Result<(), Reply> {
        let unauthorized = |code: &str, message: &str| {
            let mut r = Reply::azure(401, code, message, None);
            r.headers.push(("www-authenticate".into(), "Bearer".into()));
            r
        };
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(unauthorized(
                "InvalidToken",
                "An Authorization header with a Bearer token is required.",
            ));
        };
        match self.tokens.lock().unwrap().get(token.trim()) {
            None => Err(unauthorized(
                "InvalidToken",
                "The provided token is not valid.",
            )),
            Some(expiry) if Instant::now() >= *expiry => Err(unauthorized(
                "TokenExpired",
                "The provided token has expired.",
            )),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn ingest(&self, raw: RawRequest) -> (Action, Slot) {
        let mut record = IngestRequest {
            arrived: Instant::now(),
            method: raw.method.clone(),
            path: raw.path.clone(),
            headers: raw.headers.clone(),
            sent_bytes: raw.body.len(),
            plain_bytes: None,
            not_array: false,
            rows: Vec::new(),
            replaced_times: Vec::new(),
            dropped_columns: BTreeSet::new(),
            truncated_columns: BTreeSet::new(),
            error_code: None,
            outcome: Outcome::Pending,
        };
        let action = match self.judge(&raw, &mut record) {
            Err(action) => action,
            Ok(()) => Action::Reply(self.store(&mut record)),
        };
        if let Action::Reply(r) = &action {
            record.error_code = r
                .headers
                .iter()
                .find(|(k, _)| k == "x-ms-error-code")
                .map(|(_, v)| v.clone());
        }
        let mut requests = self.requests.lock().unwrap();
        requests.push(record);
        (action, Slot::Ingest(requests.len() - 1))
    }

    /// Every check a call must pass before it is stored, in the order of the module doc.
    fn judge(&self, raw: &RawRequest, record: &mut IngestRequest) -> Result<(), Action> {
        let fail = |r: Reply| Err(Action::Reply(r));
        let (path, query) = raw.path.split_once('?').unwrap_or((&raw.path, ""));
        let route = path
            .strip_prefix("/dataCollectionRules/")
            .and_then(|r| r.split_once("/streams/"))
            .filter(|(d, s)| !d.is_empty() && !s.is_empty() && !s.contains('/'));
        let Some((dcr, stream)) = route.filter(|_| raw.method == "POST") else {
            return fail(Reply::azure(
                404,
                "NotFound",
                "The requested resource was not found.",
                None,
            ));
        };
        if let Err(r) = self.bearer(raw.headers.get("authorization")) {
            return fail(r);
        }
        if dcr != DCR {
            return fail(Reply::azure(
                404,
                "NotFound",
                &format!("Data collection rule with immutable Id '{dcr}' not found."),
                None,
            ));
        }
        if stream != STREAM {
            return fail(Reply::azure(
                404,
                "NotFound",
                &format!("Stream '{stream}' is not declared in the data collection rule '{dcr}'."),
                None,
            ));
        }
        if !self.role.load(Ordering::Relaxed) {
            return fail(Reply::azure(403, "OperationFailed", &format!(
                "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id '{dcr}' PipelineAccessResult: AccessGranted: False, IsRbacPresent: False, Message: Required authorization action was not found for tenantId {TENANT} objectId {CLIENT_ID}."
            ), None));
        }
        let version = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("api-version="));
        if version != Some(API_VERSION) {
            return fail(Reply::azure(
                400,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{}' is invalid. The supported versions are '{API_VERSION}'.",
                    version.unwrap_or("")
                ),
                None,
            ));
        }
        let too_large = |n: usize| {
            Reply::azure(413, "ContentLengthLimitExceeded", &format!(
                "Maximum allowed content length: {MAX_CALL_BYTES} bytes (1 MB). Provided content length: {n} bytes."
            ), None)
        };
        if raw.body.len() > MAX_CALL_BYTES {
            return fail(too_large(raw.body.len()));
        }
        let plain = match raw
            .headers
            .get("content-encoding")
            .map(|e| e.to_ascii_lowercase())
        {
            None => raw.body.clone(),
            Some(e) if e == "gzip" => {
                let mut out = Vec::new();
                // Bounded, so that a runaway body cannot exhaust the test's memory.
                let limit = 64 * MAX_CALL_BYTES as u64;
                if let Err(e) = flate2::read::MultiGzDecoder::new(raw.body.as_slice())
                    .take(limit)
                    .read_to_end(&mut out)
                {
                    return fail(Reply::azure(
                        400,
                        "InvalidContentEncoding",
                        &format!("The body could not be decompressed: {e}"),
                        None,
                    ));
                }
                out
            }
            Some(e) => {
                return fail(Reply::azure(
                    400,
                    "InvalidContentEncoding",
                    &format!("Content-Encoding '{e}' is not supported."),
                    None,
                ))
            }
        };
        record.plain_bytes = Some(plain.len());
        if plain.len() > MAX_CALL_BYTES {
            return fail(too_large(plain.len()));
        }
        let body: Value = match serde_json::from_slice(&plain) {
            Ok(v) => v,
            Err(e) => {
                return fail(Reply::azure(
                    400,
                    "InvalidJson",
                    &format!("The body is not valid JSON: {e}"),
                    None,
                ))
            }
        };
        match body {
            Value::Array(rows) => {
                if rows.iter().any(|r| !r.is_object()) {
                    return fail(Reply::azure(
                        400,
                        "InvalidJson",
                        "Every element of the array must be an object.",
                        None,
                    ));
                }
                record.rows = rows;
            }
            _ => record.not_array = true,
        }
        let plain_rows = record.rows.iter().any(|r| r["gapless"] != "gap");
        match next_fault(&self.script, &self.fault) {
            None => Ok(()),
            Some(Fault::Reset) => Err(Action::Reset),
            Some(Fault::Stall) => Err(Action::Stall),
            Some(Fault::RejectEvents(_)) if !plain_rows => Ok(()),
            Some(Fault::Status(413)) => fail(too_large(raw.body.len())),
            Some(Fault::Status(s) | Fault::RejectEvents(s)) => fail(Reply::azure(
                s,
                code_of(s),
                "The test receiver answers this status on cue.",
                None,
            )),
            Some(Fault::RetryAfter { status, secs }) => fail(Reply::azure(
                status,
                code_of(status),
                "The test receiver answers this status on cue.",
                Some(secs),
            )),
        }
    }

    /// Stores the rows of an accepted call: only the declared columns, if the stream
    /// declares them [1], string values cut to 64 KB [5], with the `TimeGenerated` rule
    /// applied [10].
    fn store(&self, record: &mut IngestRequest) -> Reply {
        let now = rfc3339::now_micros();
        let columns = self.columns.lock().unwrap().clone();
        for row in &mut record.rows {
            if let (Some(columns), Some(fields)) = (&columns, row.as_object_mut()) {
                fields.retain(|k, _| {
                    let keep = columns.contains(k);
                    if !keep {
                        record.dropped_columns.insert(k.clone());
                    }
                    keep
                });
            }
            for (k, v) in row.as_object_mut().into_iter().flatten() {
                if let Value::String(text) = v {
                    if text.len() > MAX_FIELD_BYTES {
                        let mut cut = MAX_FIELD_BYTES;
                        while !text.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        text.truncate(cut);
                        record.truncated_columns.insert(k.clone());
                    }
                }
            }
            let time = row
                .get("TimeGenerated")
                .and_then(Value::as_str)
                .and_then(rfc3339::parse);
            let in_window =
                time.is_some_and(|t| now - t <= 2 * DAY_MICROS && t - now <= DAY_MICROS);
            if !in_window {
                record
                    .replaced_times
                    .push(row.get("TimeGenerated").cloned());
                row["TimeGenerated"] = Value::String(rfc3339::format(now));
            }
        }
        Reply {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// A plausible `x-ms-error-code` for a status given on cue.
fn code_of(status: u16) -> &'static str {
    match status {
        400 => "InvalidRequest",
        401 => "InvalidToken",
        403 => "OperationFailed",
        404 => "NotFound",
        408 => "RequestTimeout",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    }
}

/// What in `requests` breaks the documented protocol (see [`Azure::protocol_violations`]).
pub(super) fn violations(requests: &[IngestRequest]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for r in requests {
        let h = |n: &str| r.headers.get(n).map(String::as_str);
        if r.method != "POST" {
            found.insert(format!("method {}", r.method));
        }
        if !r.path.ends_with(&format!("?api-version={API_VERSION}")) {
            found.insert(format!("target {}", r.path));
        }
        if !h("content-type").is_some_and(|c| c.starts_with("application/json")) {
            found.insert(format!("content-type {:?}", h("content-type")));
        }
        if !matches!(h("content-encoding"), None | Some("gzip")) {
            found.insert(format!("content-encoding {:?}", h("content-encoding")));
        }
        if !h("authorization").is_some_and(|a| a.starts_with("Bearer ")) {
            found.insert("a call without a Bearer token".into());
        }
        if h("x-ms-client-request-id").is_none_or(|id| uuid::Uuid::parse_str(id).is_err()) {
            found.insert(format!(
                "x-ms-client-request-id {:?}",
                h("x-ms-client-request-id")
            ));
        }
        if r.sent_bytes > MAX_CALL_BYTES || r.plain_bytes.unwrap_or(0) > MAX_CALL_BYTES {
            found.insert(format!(
                "a call of {} bytes ({:?} uncompressed)",
                r.sent_bytes, r.plain_bytes
            ));
        }
        if r.not_array {
            found.insert("a body that is not a JSON array".into());
        }
        if r.accepted()
            && r.replaced_times.iter().any(|t| {
                t.as_ref()
                    .and_then(Value::as_str)
                    .is_none_or(|t| rfc3339::parse(t).is_none())
            })
        {
            found.insert(format!(
                "a row without an RFC 3339 TimeGenerated: {:?}",
                r.replaced_times
            ));
        }
    }
    found.into_iter().collect()
}
