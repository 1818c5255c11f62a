//! [`Ingest`]: a client of the agent's http source — posts lines or raw bodies (also with
//! `Transfer-Encoding: chunked`) and returns the status and body of the answer.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Posts to one http source.
pub struct Ingest {
    port: u16,
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
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The answer a response carries: status, `Retry-After`, `Content-Type` and body.
    pub async fn of(resp: reqwest::Response) -> Result<Answer, reqwest::Error> {
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type");
        let body = resp.text().await?;
        Ok(Answer {
            status,
            retry_after,
            content_type,
            body,
        })
    }
}

impl Ingest {
    /// A client of the http source on 127.0.0.1:`port` (path `/`).
    pub fn new(port: u16) -> Ingest {
        Ingest {
            port,
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
        Answer::of(req.send().await?).await
    }

    /// Posts `chunks` as one chunked body (no `Content-Length`, so the source learns the
    /// size only while reading), on a connection of its own that it closes after the answer.
    pub async fn post_chunked(
        &self,
        content_type: &str,
        headers: &[(&str, &str)],
        chunks: &[Vec<u8>],
    ) -> std::io::Result<Answer> {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = format!(
            "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(t) = &self.token {
            request.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        for chunk in chunks {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        // The source may answer (and close) before it has read everything: what matters is
        // its answer.
        let _ = conn.write_all(&bytes).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        Ok(Answer {
            status,
            retry_after: header("retry-after"),
            content_type: header("content-type"),
            body: body.to_string(),
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
