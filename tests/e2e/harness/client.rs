//! [`Ingest`]: a client of the agent's http source — posts lines or raw bodies and returns
//! the status and body of the answer.

use std::time::Duration;

/// Posts to one http source.
pub struct Ingest {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The answer to one post: status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body.
    pub body: String,
}

impl Ingest {
    /// A client of the http source on 127.0.0.1:`port` (path `/`).
    pub fn new(port: u16) -> Ingest {
        Ingest {
            url: format!("http://127.0.0.1:{port}/"),
            token: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Sends `Authorization: Bearer <token>` from now on.
    pub fn with_token(mut self, token: &str) -> Ingest {
        self.token = Some(token.to_string());
        self
    }

    /// Posts `lines` as text/plain, one per line.
    pub async fn post_lines(&self, lines: &[String]) -> Result<Answer, reqwest::Error> {
        let mut body = lines.join("\n");
        body.push('\n');
        self.post("text/plain", &[], body.into_bytes()).await
    }

    /// Posts `body` with this content type and extra headers.
    pub async fn post(
        &self,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, reqwest::Error> {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text().await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Posts `lines` and panics unless the answer is 200.
    pub async fn post_ok(&self, lines: &[String]) {
        let answer = self
            .post_lines(lines)
            .await
            .unwrap_or_else(|e| panic!("POST to the http source: {e}"));
        assert_eq!(
            answer.status, 200,
            "POST to the http source: {}",
            answer.body
        );
    }
}
