//! The Azure receiver itself, driven with `reqwest`: it answers as Entra ID and the Logs
//! Ingestion API document, so that the sink tests judge the agent against the platform and
//! not against a receiver that agrees with whatever the agent does.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::platforms::azure::*;

/// A client of the two endpoints.
struct Client {
    azure: Azure,
    http: reqwest::Client,
}

/// An answer: status, `x-ms-error-code` or Entra's `error`, `Retry-After`, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

impl Client {
    async fn start() -> Client {
        Client {
            azure: Azure::start().await,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (code, retry_after) = (header("x-ms-error-code"), header("retry-after"));
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = code.or_else(|| body["error"].as_str().map(str::to_string));
        Answer {
            status,
            code,
            retry_after,
            body,
        }
    }

    /// A token request with these form fields.
    async fn token_with(&self, tenant: &str, form: &[(&str, &str)]) -> Answer {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('/', "%2F")))
            .collect();
        let resp = self
            .http
            .post(format!(
                "{}/{tenant}/oauth2/v2.0/token",
                self.azure.authority()
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        Self::answer(resp).await
    }

    /// A valid token.
    async fn token(&self) -> String {
        let a = self.token_with(TENANT, &good_form()).await;
        assert_eq!(a.status, 200, "{a:?}");
        a.body["access_token"].as_str().unwrap().to_string()
    }

    /// An ingestion call to `dcr`/`stream` with this token and body (gzipped if `gzip`).
    async fn ingest(&self, target: &str, token: Option<&str>, body: &[u8], gzip: bool) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{target}", self.azure.endpoint()))
            .header("content-type", "application/json")
            .header("x-ms-client-request-id", uuid::Uuid::new_v4().to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let body = if gzip {
            req = req.header("content-encoding", "gzip");
            gzipped(body)
        } else {
            body.to_vec()
        };
        Self::answer(req.body(body).send().await.unwrap()).await
    }
}

fn good_form() -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("scope", "https://monitor.azure.com//.default"),
        ("grant_type", "client_credentials"),
    ]
}

fn target() -> String {
    format!("/dataCollectionRules/{DCR}/streams/{STREAM}?api-version={API_VERSION}")
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).unwrap();
    gz.finish().unwrap()
}

/// Now plus `offset_secs`, as RFC 3339.
fn now_rfc3339(offset_secs: i64) -> String {
    rfc3339::format(rfc3339::now_micros() + offset_secs * 1_000_000)
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_issues_a_bearer_token_for_the_app_and_refuses_others_as_documented() {
    let c = Client::start().await;
    c.azure.set_token_lifetime(7, true);
    let ok = c.token_with(TENANT, &good_form()).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], "7");

    let mut wrong_secret = good_form();
    wrong_secret[1].1 = "nope";
    let a = c.token_with(TENANT, &wrong_secret).await;
    assert_eq!((a.status, a.code.as_deref()), (401, Some("invalid_client")));
    assert!(a.body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215:"));
    assert_eq!(a.body["error_codes"], json!([7000215]));

    let mut wrong_grant = good_form();
    wrong_grant[3].1 = "password";
    let a = c.token_with(TENANT, &wrong_grant).await;
    assert_eq!(
        (a.status, a.code.as_deref()),
        (400, Some("unsupported_grant_type"))
    );

    let mut wrong_scope = good_form();
    wrong_scope[2].1 = "https://management.azure.com/";
    let a = c.token_with(TENANT, &wrong_scope).await;
    assert_eq!((a.status, a.code.as_deref()), (400, Some("invalid_scope")));

    let a = c.token_with("other-tenant", &good_form()).await;
    assert_eq!(
        (a.status, a.code.as_deref()),
        (400, Some("invalid_request"))
    );

    c.azure.script_token(1, Fault::Status(503));
    let a = c.token_with(TENANT, &good_form()).await;
    assert_eq!(
        (a.status, a.code.as_deref()),
        (503, Some("temporarily_unavailable"))
    );
    assert_eq!(c.azure.tokens_issued(), 1);
    assert_eq!(c.azure.token_requests().len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzipped_array_of_objects_is_stored_and_answered_204() {
    let c = Client::start().await;
    let token = c.token().await;
    let now = now_rfc3339(0);
    let rows = json!([{"TimeGenerated": now, "seq": 1, "message": "one"},
                      {"TimeGenerated": now, "seq": 2, "message": "two"}]);
    let a = c
        .ingest(&target(), Some(&token), rows.to_string().as_bytes(), true)
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    let a = c
        .ingest(&target(), Some(&token), rows.to_string().as_bytes(), false)
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    assert_eq!(c.azure.rows().len(), 4, "no dedup: both calls stored");
    assert_eq!(c.azure.unique_rows().len(), 2);
    assert_eq!(c.azure.rows()[0]["TimeGenerated"], now);
    assert!(
        c.azure.protocol_violations().is_empty(),
        "{:?}",
        c.azure.protocol_violations()
    );

    // Not an array: 204 and nothing stored, as observed [4]; flagged as a violation.
    let a = c
        .ingest(&target(), Some(&token), br#"{"seq":3}"#, true)
        .await;
    assert_eq!(a.status, 204);
    assert_eq!(c.azure.rows().len(), 4);
    let a = c.ingest(&target(), Some(&token), b"[1,2]", true).await;
    assert_eq!(a.status, 400);
    let a = c.ingest(&target(), Some(&token), b"[{", true).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        c.azure.protocol_violations(),
        vec!["a body that is not a JSON array".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_without_a_valid_token_get_401_and_expired_ones_say_token_expired() {
    let c = Client::start().await;
    let body = json!([{"TimeGenerated": now_rfc3339(0), "seq": 1}]).to_string();
    let a = c.ingest(&target(), None, body.as_bytes(), true).await;
    assert_eq!(a.status, 401, "{a:?}");
    let a = c
        .ingest(&target(), Some("forged"), body.as_bytes(), true)
        .await;
    assert_eq!((a.status, a.code.as_deref()), (401, Some("InvalidToken")));
    assert_eq!(a.body["error"]["code"], "InvalidToken");

    c.azure.set_token_lifetime(1, false);
    let token = c.token().await;
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.status, 204, "a fresh token works");
    crate::harness::wait_until(crate::harness::SHORT, "the token to expire", async || {
        c.ingest(&target(), Some(&token), body.as_bytes(), true)
            .await
            .status
            == 401
    })
    .await;
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.code.as_deref(), Some("TokenExpired"));

    let token = c.token().await;
    c.azure.revoke_tokens();
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_rule_stream_or_path_is_404_and_a_missing_role_is_403_operation_failed() {
    let c = Client::start().await;
    let token = c.token().await;
    let body = json!([{"TimeGenerated": now_rfc3339(0), "seq": 1}]).to_string();
    for wrong in [
        format!("/dataCollectionRules/dcr-0000/streams/{STREAM}?api-version={API_VERSION}"),
        format!("/dataCollectionRules/{DCR}/streams/Custom-Other_CL?api-version={API_VERSION}"),
        format!("/dataCollectionRules/{DCR}?api-version={API_VERSION}"),
        "/ingest".to_string(),
    ] {
        let a = c.ingest(&wrong, Some(&token), body.as_bytes(), true).await;
        assert_eq!(a.status, 404, "{wrong}: {a:?}");
        assert_eq!(a.body["error"]["code"], "NotFound");
    }
    let a = c
        .ingest(
            &format!("/dataCollectionRules/{DCR}/streams/{STREAM}"),
            Some(&token),
            body.as_bytes(),
            true,
        )
        .await;
    assert_eq!(a.status, 400, "no api-version");

    c.azure.set_role(false);
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(
        (a.status, a.code.as_deref()),
        (403, Some("OperationFailed"))
    );
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not have access to ingest data"));
    c.azure.set_role(true);
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_over_one_mib_sent_or_uncompressed_is_413_content_length_limit_exceeded() {
    let c = Client::start().await;
    let token = c.token().await;
    let row = |seq: usize, pad: usize| json!({"TimeGenerated": now_rfc3339(0), "seq": seq, "message": "x".repeat(pad)});
    // 1.2 MiB of one repeated letter: tiny compressed, too large uncompressed.
    let big = Value::Array((0..12).map(|i| row(i, 100_000)).collect()).to_string();
    let a = c
        .ingest(&target(), Some(&token), big.as_bytes(), true)
        .await;
    assert_eq!(
        (a.status, a.code.as_deref()),
        (413, Some("ContentLengthLimitExceeded"))
    );
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Maximum allowed content length: 1048576 bytes")
            && message.contains(&format!("Provided content length: {} bytes", big.len())),
        "{message}"
    );
    // Just under the limit uncompressed: taken.
    let fits = Value::Array(vec![row(1, MAX_CALL_BYTES - 200)]).to_string();
    assert!(fits.len() <= MAX_CALL_BYTES);
    let a = c
        .ingest(&target(), Some(&token), fits.as_bytes(), true)
        .await;
    assert_eq!(a.status, 204, "{a:?}");
    // Over the limit as sent (not compressed at all).
    let a = c
        .ingest(&target(), Some(&token), big.as_bytes(), false)
        .await;
    assert_eq!(a.status, 413);
    assert_eq!(c.azure.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn time_generated_over_two_days_old_or_a_day_ahead_becomes_the_receive_time() {
    let c = Client::start().await;
    let token = c.token().await;
    let (recent, old, ahead) = (
        now_rfc3339(-86_400),
        now_rfc3339(-3 * 86_400),
        now_rfc3339(2 * 86_400),
    );
    let body = json!([{"TimeGenerated": recent, "seq": 1},
                      {"TimeGenerated": old, "seq": 2},
                      {"TimeGenerated": ahead, "seq": 3}]);
    let a = c
        .ingest(&target(), Some(&token), body.to_string().as_bytes(), true)
        .await;
    assert_eq!(a.status, 204);
    let rows = c.azure.unique_rows();
    assert_eq!(rows[0]["TimeGenerated"], recent, "a day old is kept");
    let today = &now_rfc3339(0)[..10];
    for row in &rows[1..] {
        let t = row["TimeGenerated"].as_str().unwrap();
        assert!(t.starts_with(today), "{row} was not given the receive time");
    }
    assert_eq!(
        c.azure.requests()[0].replaced_times,
        vec![Some(json!(old)), Some(json!(ahead))]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cues_answer_429_with_retry_after_for_n_calls_then_reset_then_recover() {
    let c = Client::start().await;
    let token = c.token().await;
    let body = json!([{"TimeGenerated": now_rfc3339(0), "seq": 1}]).to_string();
    c.azure.script(
        2,
        Fault::RetryAfter {
            status: 429,
            secs: 3,
        },
    );
    for _ in 0..2 {
        let a = c
            .ingest(&target(), Some(&token), body.as_bytes(), true)
            .await;
        assert_eq!(
            (a.status, a.retry_after.as_deref(), a.code.as_deref()),
            (429, Some("3"), Some("TooManyRequests"))
        );
    }
    c.azure.script(1, Fault::Reset);
    let reset = c
        .http
        .post(format!("{}{}", c.azure.endpoint(), target()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await;
    assert!(reset.is_err(), "a reset connection: {reset:?}");
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.status, 204);
    c.azure.set_fault(Some(Fault::RejectEvents(400)));
    let a = c
        .ingest(&target(), Some(&token), body.as_bytes(), true)
        .await;
    assert_eq!(a.status, 400);
    let notice = json!([{"TimeGenerated": now_rfc3339(0), "seq": 2, "gapless": "gap"}]);
    let a = c
        .ingest(&target(), Some(&token), notice.to_string().as_bytes(), true)
        .await;
    assert_eq!(a.status, 204, "gap records only are taken");
    assert_eq!(c.azure.unique_rows().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_value_over_64_kb_is_truncated_and_undeclared_columns_are_dropped() {
    let c = Client::start().await;
    let token = c.token().await;
    c.azure
        .declare_columns(&["TimeGenerated".into(), "seq".into(), "message".into()]);
    let long = "é".repeat(MAX_FIELD_BYTES); // two bytes each: twice the limit
    let body = json!([{"TimeGenerated": now_rfc3339(0), "seq": 1, "message": long, "extra": 1}]);
    let a = c
        .ingest(&target(), Some(&token), body.to_string().as_bytes(), true)
        .await;
    assert_eq!(a.status, 204, "dropping and truncating are silent");
    let row = c.azure.rows().remove(0);
    assert_eq!(row["message"].as_str().unwrap().len(), MAX_FIELD_BYTES);
    assert!(row.get("extra").is_none(), "{row}");
    let r = &c.azure.requests()[0];
    assert_eq!(r.truncated_columns.iter().collect::<Vec<_>>(), ["message"]);
    assert_eq!(r.dropped_columns.iter().collect::<Vec<_>>(), ["extra"]);
}
