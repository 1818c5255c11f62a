//! Just enough HTTP/1.1 for the test receiver: reading a request (request line, headers,
//! a `Content-Length` or chunked body), decoding its body into events, and writing an
//! answer. Keep-alive is the caller's loop; misbehaving (reset, stall) is the caller's too.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One request as read off the wire.
pub struct RawRequest {
    /// `POST`, …
    pub method: String,
    /// The request target.
    pub path: String,
    /// Headers, names in lower case (a repeated header keeps its last value).
    pub headers: BTreeMap<String, String>,
    /// The body as sent (still compressed).
    pub body: Vec<u8>,
}

/// Reads one request; `None` at a clean end of the connection.
pub async fn read_request<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<RawRequest>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let request_line = String::from_utf8_lossy(&line).trim().to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_until(b'\n', &mut line).await?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line).await? == 0 || line.trim_ascii().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = headers.get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    }
    Ok(Some(RawRequest {
        method,
        path,
        headers,
        body,
    }))
}

/// Gunzips (per `Content-Encoding`) and splits the body into events: a JSON array for
/// `application/json`, NDJSON otherwise.
pub fn decode_body(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Vec<Value>, String> {
    let plain = gunzipped(headers, body)?;
    if is_json_array(headers) {
        return match serde_json::from_slice(&plain).map_err(|e| format!("JSON: {e}"))? {
            Value::Array(items) => Ok(items),
            other => Ok(vec![other]),
        };
    }
    plain
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_slice(l).map_err(|e| format!("NDJSON line {}: {e}", i + 1)))
        .collect()
}

/// Splits the body like [`decode_body`], keeping each event as the text that arrived, byte
/// for byte.
pub fn raw_events(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Vec<String>, String> {
    let plain = String::from_utf8(gunzipped(headers, body)?).map_err(|e| format!("UTF-8: {e}"))?;
    if is_json_array(headers) {
        return match serde_json::from_str::<Vec<&RawValue>>(&plain) {
            Ok(items) => Ok(items.iter().map(|e| e.get().to_string()).collect()),
            Err(_) => serde_json::from_str::<&RawValue>(&plain)
                .map(|e| vec![e.get().to_string()])
                .map_err(|e| format!("JSON: {e}")),
        };
    }
    Ok(plain
        .split('\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .map(str::to_string)
        .collect())
}

fn gunzipped(headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Vec<u8>, String> {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .read_to_end(&mut out)
        .map_err(|e| format!("gunzip: {e}"))?;
    Ok(out)
}

fn is_json_array(headers: &BTreeMap<String, String>) -> bool {
    headers
        .get("content-type")
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Writes a small JSON answer with this status (and `Retry-After`, if given), keeping the
/// connection open.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: u16,
    retry_after: Option<u64>,
) -> std::io::Result<()> {
    let body = if (200..300).contains(&status) {
        "{\"ok\":true}".to_string()
    } else {
        format!("{{\"error\":\"the test receiver answers {status}\"}}")
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        reason(status),
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
