//! The Microsoft Entra ID token endpoint, client credentials grant only:
//! `POST /{tenant}/oauth2/v2.0/token` with a form body of `client_id`, `client_secret`,
//! `scope` and `grant_type=client_credentials`.
//!
//! As documented in "Microsoft identity platform and the OAuth 2.0 client credentials flow"
//! (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow): success
//! is 200 `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":…}`;
//! an error is a 400 (401 for `invalid_client`) JSON object with `error`,
//! `error_description` (starting with an `AADSTS` code), `error_codes`, `timestamp`,
//! `trace_id` and `correlation_id`. The tokens here are opaque strings, not JWTs: a
//! client must not look inside an access token meant for another resource.

use std::collections::BTreeMap;

use serde_json::json;

use super::{rfc3339, Reply};

/// What the token endpoint was asked, and what it answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The request target.
    pub path: String,
    /// The form fields, decoded.
    pub form: BTreeMap<String, String>,
    /// The status answered; `None` if the connection was reset or stalled instead.
    pub status: Option<u16>,
}

/// The identity the endpoint knows: one tenant, one app registration, one resource.
pub struct Directory {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
}

/// The scopes that name Azure Monitor's audience: the documented
/// `https://monitor.azure.com//.default` (resource URI with its trailing slash) and the
/// form without the doubled slash, which Entra accepts too.
const SCOPES: [&str; 2] = [
    "https://monitor.azure.com//.default",
    "https://monitor.azure.com/.default",
];

impl Directory {
    /// Checks one token request; `Ok(())` means a token may be issued.
    pub fn check(
        &self,
        path: &str,
        content_type: Option<&str>,
        form: &BTreeMap<String, String>,
    ) -> Result<(), Reply> {
        let tenant = path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix("/oauth2/v2.0/token"))
            .ok_or_else(|| Reply::text(404, "Not Found"))?;
        if tenant != self.tenant {
            return Err(error(
                400,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found."),
            ));
        }
        if !content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            return Err(error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
        for field in ["grant_type", "client_id", "scope"] {
            if !form.contains_key(field) {
                return Err(error(
                    400,
                    "invalid_request",
                    900144,
                    &format!("The request body must contain the following parameter: '{field}'."),
                ));
            }
        }
        if form["grant_type"] != "client_credentials" {
            return Err(error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            ));
        }
        if form["client_id"] != self.client_id {
            return Err(error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{}' was not found in the directory '{tenant}'.",
                    form["client_id"]
                ),
            ));
        }
        match form.get("client_secret") {
            None => Err(error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )),
            Some(s) if *s != self.client_secret => Err(error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            )),
            Some(_) if !SCOPES.contains(&form["scope"].as_str()) => Err(error(
                400,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
                    form["scope"]
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The success answer.
pub fn token_reply(token: &str, expires_in: u64, as_string: bool) -> Reply {
    let expires = if as_string {
        json!(expires_in.to_string())
    } else {
        json!(expires_in)
    };
    Reply::json(
        200,
        &[],
        json!({"token_type": "Bearer", "expires_in": expires, "ext_expires_in": expires,
               "access_token": token}),
    )
}

/// The answer to a status given on cue: `invalid_request` for 400, `invalid_client` for
/// 401, `temporarily_unavailable` otherwise.
pub fn on_cue(status: u16) -> Reply {
    match status {
        400 => error(400, "invalid_request", 900144, "The request is malformed."),
        401 => error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        ),
        s => error(
            s,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
    }
}

/// An error answer as Entra writes it.
pub fn error(status: u16, error: &str, code: u32, description: &str) -> Reply {
    let now = rfc3339::now_micros();
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    Reply::json(
        status,
        &[],
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {}",
                rfc3339::format(now)
            ),
            "error_codes": [code],
            "timestamp": rfc3339::format(now),
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
        }),
    )
}

/// Decodes an `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte).
pub fn decode_form(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[test]
fn form_bodies_are_percent_decoded() {
    let form = decode_form(b"scope=https%3A%2F%2Fmonitor.azure.com%2F%2F.default&a=b+c&e=%");
    assert_eq!(form["scope"], "https://monitor.azure.com//.default");
    assert_eq!(form["a"], "b c");
    assert_eq!(form["e"], "%");
}
