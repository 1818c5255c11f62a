//! What goes over the wire: answers and the error bodies the server sends, `Content-Encoding`,
//! and base64 for credentials.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// An answer: status, extra headers, body (empty: none), and whether to close after it.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: String,
    pub(super) close: bool,
}

impl Answer {
    pub(super) fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            close: false,
        }
    }
}

/// The error body the server sends for a whole request failing with `status`.
pub(super) fn whole_request_error(status: u16) -> Answer {
    let (kind, reason) = match status {
        429 => ("es_rejected_execution_exception", "rejected execution of coordinating operation [coordinating_and_primary_bytes=104857600, replica_bytes=0, all_bytes=104857600, coordinating_operation_bytes=2048, max_coordinating_and_primary_bytes=104857600]"),
        503 => ("cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE/2/no master];"),
        401 => ("security_exception", "unable to authenticate with provided credentials and anonymous access is not allowed for this request"),
        403 => ("security_exception", "action [indices:data/write/bulk] is unauthorized for API key id [test] of user [gapless]"),
        400 => ("parse_exception", "the test cluster refuses this request"),
        _ => ("exception", "the test cluster fails this request"),
    };
    error(status, kind, reason)
}

/// `{"error":{"root_cause":[{"type","reason"}],"type","reason"},"status":N}`.
pub(super) fn error(status: u16, kind: &str, reason: &str) -> Answer {
    Answer::json(
        status,
        json!({
            "error": {
                "root_cause": [{"type": kind, "reason": reason}],
                "type": kind,
                "reason": reason,
            },
            "status": status,
        }),
    )
}

/// The body after `Content-Encoding` (gzip, deflate; anything else as it is).
pub(super) fn decompressed(
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let encoding = headers
        .get("content-encoding")
        .map(|e| e.trim().to_ascii_lowercase());
    let mut out = Vec::new();
    let read = match encoding.as_deref() {
        Some("gzip" | "x-gzip") => flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out),
        Some("deflate" | "x-deflate") => flate2::read::ZlibDecoder::new(body).read_to_end(&mut out),
        _ => return Ok(body.to_vec()),
    };
    read.map(|_| out)
        .map_err(|e| format!("failed to decompress the request body: {e}"))
}

pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

pub(super) async fn write_answer<W: AsyncWrite + Unpin>(
    w: &mut W,
    answer: &Answer,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nX-elastic-product: Elasticsearch\r\ncontent-length: {}\r\n",
        answer.status,
        reason_phrase(answer.status),
        answer.body.len()
    );
    if !answer.body.is_empty() {
        head.push_str("content-type: application/json; charset=UTF-8\r\n");
    }
    if answer.close {
        head.push_str("connection: close\r\n");
    }
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&answer.body);
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
