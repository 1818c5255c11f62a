//! The two listeners: HTTP/1.1 over [`crate::harness::http1`], one task per connection,
//! each request handed to [`State`] and answered, reset or held as it decides. Every
//! socket has `SO_LINGER` 0, so dropping it sends a TCP reset.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::State;
use crate::harness::http1::read_request;
use crate::harness::receiver::Outcome;

/// An answer: status, extra headers, JSON body (empty for none).
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Reply {
    pub(super) fn json(status: u16, headers: &[(&str, String)], body: Value) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            body: body.to_string(),
        }
    }

    pub(super) fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// What to do with one request.
pub(super) enum Action {
    Reply(Reply),
    Reset,
    Stall,
}

/// Where the record of a request is, to note its outcome.
pub(super) enum Slot {
    Token(usize),
    Ingest(usize),
}

#[derive(Clone, Copy)]
pub(super) enum Endpoint {
    Entra,
    Ingestion,
}

pub(super) async fn accept_loop(listener: TcpListener, state: Arc<State>, endpoint: Endpoint) {
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // Dropping the socket then sends RST rather than FIN: a real reset.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                connections.spawn(serve(tcp, state.clone(), endpoint));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves the requests of one connection until the client closes it or a fault ends it.
async fn serve(tcp: TcpStream, state: Arc<State>, endpoint: Endpoint) {
    let mut conn = BufReader::new(tcp);
    while let Ok(Some(raw)) = read_request(&mut conn).await {
        let (action, slot) = match endpoint {
            Endpoint::Entra => state.token(&raw),
            Endpoint::Ingestion => state.ingest(raw),
        };
        match action {
            Action::Reply(reply) => {
                // Decided is done: the rows are the platform's before the client reads the
                // 204 (so a test never sees the answer before the rows), and stay so if the
                // answer is lost on the way — the case that makes duplicates.
                state.finish(&slot, Outcome::Answered(reply.status));
                if write_reply(conn.get_mut(), &reply).await.is_err() {
                    return;
                }
            }
            Action::Reset => {
                state.finish(&slot, Outcome::Reset);
                return;
            }
            Action::Stall => {
                state.finish(&slot, Outcome::Stalled);
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink).await;
                return;
            }
        }
    }
}

async fn write_reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &Reply) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    if reply.status != 204 {
        head.push_str(&format!(
            "content-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n",
            reply.body.len()
        ));
    }
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&reply.body);
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
