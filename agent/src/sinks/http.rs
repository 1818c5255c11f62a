//! The generic `http` platform: NDJSON or a JSON array POSTed to one URI, a bearer token
//! (inline, or a file read per request so that a rotated token takes effect without a
//! restart), extra headers, and the HTTP status as the whole answer: 2xx delivered; 408,
//! 429 and 5xx retried (`Retry-After` honoured); 401/403 retried with an alarm; 413 split;
//! 3xx retried (redirects are not followed: a POST must not silently become a GET); any
//! other 4xx refused for good.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{Encoding, HttpSinkConfig};
use crate::error::{Error, Result};
use crate::sinks::delivery::{Answer, Framing, Item, NotReady, Outgoing, Platform, Rejection};
use crate::sinks::retry::retry_after;

/// The `http` platform of one sink.
pub struct Http {
    cfg: HttpSinkConfig,
    headers: HeaderMap,
}

impl Http {
    /// The platform of sink `name`; fails on a header the config let through but HTTP does
    /// not take.
    pub fn new(name: &str, cfg: HttpSinkConfig) -> Result<Self> {
        let err = |reason: String| Error::Client {
            sink: name.to_string(),
            reason,
        };
        let mut h = HeaderMap::new();
        let ct = match cfg.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::Json => "application/json",
        };
        h.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static(ct));
        for (k, v) in &cfg.headers {
            let k = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| err(format!("header {k:?}: {e}")))?;
            let v = HeaderValue::from_str(v).map_err(|e| err(format!("header value: {e}")))?;
            h.insert(k, v);
        }
        if let Some(token) = &cfg.auth.bearer_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| err("the bearer token is not a valid header value".into()))?;
            v.set_sensitive(true);
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(Http { cfg, headers: h })
    }
}

/// The answer a plain HTTP status gives, for a platform that has no more to say:
/// `Delivered` for 2xx, else retry, split or refuse as the module doc says.
pub async fn status_answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    if status.is_success() {
        return Answer::Delivered;
    }
    let retry_after = retry_after(&response);
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(2048).collect();
    match status.as_u16() {
        413 => Answer::TooLarge(Rejection {
            status: 413,
            error: String::new(),
            response: body,
        }),
        408 | 429 | 500..=599 => Answer::Retry {
            wait: retry_after,
            why: format!("HTTP {status}"),
            alarm: false,
        },
        401 | 403 => Answer::Retry {
            wait: retry_after,
            why: format!("HTTP {status}: credentials refused"),
            alarm: true,
        },
        300..=399 => Answer::Retry {
            wait: None,
            why: format!("HTTP {status}: redirects are not followed; check the sink's address"),
            alarm: true,
        },
        code => Answer::Rejected(Rejection {
            status: code,
            error: String::new(),
            response: body,
        }),
    }
}

impl Platform for Http {
    fn framing(&self) -> Framing {
        match self.cfg.encoding {
            Encoding::Ndjson => Framing::Lines,
            Encoding::Json => Framing::JsonArray,
        }
    }

    fn write_item(&self, item: &Item<'_>, out: &mut Vec<u8>) {
        item.write_object(out, b"");
    }

    async fn request(
        &self,
        client: &reqwest::Client,
        _outgoing: &Outgoing<'_>,
    ) -> std::result::Result<reqwest::RequestBuilder, NotReady> {
        let mut req = client
            .post(self.cfg.uri.clone())
            .headers(self.headers.clone());
        if let (None, Some(file)) = (
            &self.cfg.auth.bearer_token,
            &self.cfg.auth.bearer_token_file,
        ) {
            match std::fs::read_to_string(file) {
                Ok(t) => req = req.bearer_auth(t.trim()),
                Err(e) => {
                    return Err(NotReady {
                        why: format!("cannot read the bearer token file {}: {e}", file.display()),
                    })
                }
            }
        }
        Ok(req)
    }

    async fn read(
        &self,
        _client: &reqwest::Client,
        response: reqwest::Response,
        _items: usize,
    ) -> Answer {
        status_answer(response).await
    }
}
