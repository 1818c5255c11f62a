//! One node: its connections (keep-alive, resets, stalls, HTTPS), and each request checked
//! in the order a node checks it — body size, route, credentials, content type — before
//! the bulk body is run against the cluster's data streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::bulk::parse_bulk;
use super::wire::{decompressed, error, whole_request_error, write_answer, Answer};
use super::{BulkRequest, Cluster, Fault, Node, Settings};
use crate::harness::http1::{read_request, RawRequest};

/// Accepts connections for one node until its task is aborted (the node dropped).
pub(super) async fn accept_loop(listener: TcpListener, cluster: Arc<Cluster>, node: Arc<Node>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Owning the connections here means aborting this task ends them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                // Dropping the socket then sends RST rather than FIN: a real reset. The
                // duplicate of the socket turns that off again for a graceful close.
                let socket = socket2::SockRef::from(&tcp);
                let _ = socket.set_linger(Some(Duration::ZERO));
                let Ok(socket) = socket.try_clone() else { continue };
                let (cluster, node) = (cluster.clone(), node.clone());
                match cluster.tls.clone() {
                    Some(acceptor) => connections.spawn(async move {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(stream, socket, port, cluster, node).await;
                        }
                    }),
                    None => connections.spawn(serve(tcp, socket, port, cluster, node)),
                };
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves the requests of one connection until the client closes it or a fault ends it.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    socket: socket2::Socket,
    port: u16,
    cluster: Arc<Cluster>,
    node: Arc<Node>,
) {
    let mut conn = BufReader::new(stream);
    loop {
        let Ok(Some(raw)) = read_request(&mut conn).await else {
            return;
        };
        let fault = node.next_fault();
        let index = {
            let mut data = cluster.data.lock().unwrap();
            data.requests.push(BulkRequest {
                node: port,
                method: raw.method.clone(),
                path: raw.path.clone(),
                headers: raw.headers.clone(),
                body_bytes: 0,
                status: None,
                items: Vec::new(),
            });
            data.requests.len() - 1
        };
        match fault {
            Fault::Reset => return,
            Fault::Stall => {
                // Hold the connection until the client gives up.
                let mut sink = Vec::new();
                let _ = conn.read_to_end(&mut sink).await;
                return;
            }
            _ => {}
        }
        let answer = handle(&cluster, port, index, &raw, &fault);
        match fault {
            Fault::AnswerLost => return,
            Fault::Slow(delay) => tokio::time::sleep(delay).await,
            _ => {}
        }
        cluster.data.lock().unwrap().requests[index].status = Some(answer.status);
        if write_answer(conn.get_mut(), &answer).await.is_err() {
            return;
        }
        if answer.close {
            // A graceful close, so that the client reads the answer before the end.
            let _ = socket.set_linger(None);
            let _ = conn.get_mut().shutdown().await;
            return;
        }
    }
}

/// Answers one request, indexing what it holds unless a check or `fault` refuses it, in
/// the order a node checks: body size (the HTTP layer), route, credentials, content type,
/// then the bulk body.
fn handle(cluster: &Cluster, port: u16, index: usize, raw: &RawRequest, fault: &Fault) -> Answer {
    let settings = cluster.settings.lock().unwrap().clone();
    let settings = &settings;
    let path = raw.path.split('?').next().unwrap_or_default();
    let body = match decompressed(&raw.headers, &raw.body) {
        Ok(body) => body,
        Err(reason) => return error(400, "parse_exception", &reason),
    };
    cluster.data.lock().unwrap().requests[index].body_bytes = body.len();
    if body.len() > settings.max_content_length {
        return Answer {
            status: 413,
            headers: Vec::new(),
            body: String::new(),
            close: true,
        };
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let path_index = match segments.as_slice() {
        ["_bulk"] => None,
        [index, "_bulk"] => Some(index.to_string()),
        _ => {
            let reason = format!(
                "no handler found for uri [{path}] and method [{}]",
                raw.method
            );
            return Answer::json(400, json!({"error": reason, "status": 400}));
        }
    };
    if raw.method != "POST" && raw.method != "PUT" {
        let reason = format!(
            "Incorrect HTTP method for uri [{}] and method [{}], allowed: [POST, PUT]",
            raw.path, raw.method
        );
        return Answer::json(405, json!({"error": reason, "status": 405}));
    }
    if let Err(reason) = authenticate(settings, raw.headers.get("authorization"), &raw.path) {
        let mut answer = error(401, "security_exception", &reason);
        answer.headers = vec![
            (
                "www-authenticate",
                "Basic realm=\"security\" charset=\"UTF-8\"".into(),
            ),
            ("www-authenticate", "ApiKey".into()),
        ];
        return answer;
    }
    let content_type = raw.headers.get("content-type").map(String::as_str);
    let media = content_type.map(|c| c.split(';').next().unwrap_or_default().trim());
    match media {
        Some("application/x-ndjson" | "application/json") => {}
        Some(other) => {
            let reason = format!("Content-Type header [{other}] is not supported");
            return Answer::json(406, json!({"error": reason, "status": 406}));
        }
        None => {
            return Answer::json(
                406,
                json!({"error": "Content-Type header is missing", "status": 406}),
            )
        }
    }
    let actions = match parse_bulk(&body, path_index.as_deref()) {
        Ok(actions) => actions,
        Err(answer) => return answer,
    };
    let mut data = cluster.data.lock().unwrap();
    if let Fault::Status(status) = fault {
        data.requests[index].items = actions.into_iter().map(|a| a.item).collect();
        return whole_request_error(*status);
    }
    let started = Instant::now();
    let mut items = Vec::with_capacity(actions.len());
    let mut answers = Vec::with_capacity(actions.len());
    for action in actions {
        let (item, answer) = data.index(action, port);
        items.push(item);
        answers.push(answer);
    }
    let errors = items.iter().any(|i| i.error.is_some());
    data.requests[index].items = items;
    Answer::json(
        200,
        json!({"took": started.elapsed().as_millis() as u64, "errors": errors, "items": answers}),
    )
}

/// Checks the `Authorization` header against the credentials, if security is on.
fn authenticate(settings: &Settings, header: Option<&String>, uri: &str) -> Result<(), String> {
    if !settings.security() {
        return Ok(());
    }
    let missing = || format!("missing authentication credentials for REST request [{uri}]");
    let header = header.ok_or_else(missing)?;
    let (scheme, value) = header.split_once(' ').ok_or_else(missing)?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("ApiKey") {
        if settings.api_keys.iter().any(|k| k == value) {
            return Ok(());
        }
        return Err("unable to authenticate with provided credentials and anonymous access is not allowed for this request".into());
    }
    if scheme.eq_ignore_ascii_case("Basic") {
        if settings.basic.iter().any(|b| b == value) {
            return Ok(());
        }
        return Err(format!(
            "unable to authenticate user for REST request [{uri}]"
        ));
    }
    Err(missing())
}
