//! A real NATS JetStream: `nats-server` processes on loopback ports this test picked, one
//! alone ([`NatsServer`]) or three in a cluster ([`NatsCluster`]), each with its own store
//! directory, killed with SIGKILL and started again on the same port and store on cue. The
//! stream is made, and read back, with the `async-nats` client the sink itself uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde_json::Value;

use super::{free_port, wait_until, DELIVERY, SHORT};

/// The server binary (Debian's `nats-server` package).
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// One `nats-server -js` process (or a node of a cluster).
pub struct NatsServer {
    /// Its client port.
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// A single JetStream server storing under `dir`.
    pub async fn start(dir: &Path) -> NatsServer {
        Self::start_with(dir, "").await
    }

    /// [`NatsServer::start`] with `config` (nats-server's config syntax, such as
    /// `max_payload: 4096`) in a config file besides the flags.
    pub async fn start_with(dir: &Path, config: &str) -> NatsServer {
        let port = free_port();
        let store = dir.join(format!("js-{port}"));
        let conf = dir.join(format!("nats-{port}.conf"));
        std::fs::write(&conf, config).expect("write the server's config");
        let args = [
            "-c",
            conf.to_str().expect("UTF-8 temporary path"),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-sd",
            store.to_str().expect("UTF-8 temporary path"),
        ]
        .map(String::from)
        .to_vec();
        let mut s = NatsServer {
            port,
            args,
            log: dir.join(format!("nats-{port}.log")),
            child: None,
        };
        s.spawn();
        s.wait_listening().await;
        s
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the server's log");
        let err = log.try_clone().expect("clone the log handle");
        let child = Command::new(NATS_SERVER)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {NATS_SERVER} (Debian package nats-server): {e}")
            });
        self.child = Some(child);
    }

    async fn wait_listening(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + SHORT;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the server gets no chance to finish anything. Reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store directory; waits until it listens.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        self.spawn();
        self.wait_listening().await;
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three JetStream nodes clustered over loopback routes.
pub struct NatsCluster {
    /// The nodes, `n1`..`n3`.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts three nodes under `dir`, each with a config file naming the cluster, its
    /// routes and its store.
    pub async fn start(dir: &Path) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("\"nats://127.0.0.1:{r}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.join(format!("js-{name}"));
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{ name: gapless, listen: \"127.0.0.1:{route}\", routes: [{routes}] }}\n",
                    store = store.display(),
                    routes = routes.join(", ")
                ),
            )
            .expect("write a node's config");
            let mut node = NatsServer {
                port: *port,
                args: vec!["-c".into(), conf.display().to_string()],
                log: dir.join(format!("{name}.log")),
                child: None,
            };
            node.spawn();
            nodes.push(node);
        }
        for n in &nodes {
            n.wait_listening().await;
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma separated (the sink's `url`).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        urls.join(",")
    }
}

/// A stream `name` taking `subject`: file storage, `replicas`, and a duplicate window of
/// `window`. Tried again until the server (or the cluster's meta leader) takes it.
pub async fn create_stream(
    url: &str,
    name: &str,
    subject: &str,
    replicas: usize,
    window: Duration,
) {
    let config = stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: window,
        ..Default::default()
    };
    let mut last = String::new();
    let deadline = Instant::now() + DELIVERY;
    while Instant::now() < deadline {
        match connect(url).await {
            Ok(js) => match js.create_stream(config.clone()).await {
                Ok(_) => return,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cannot create stream {name} on {url}: {last}");
}

/// A JetStream context on `url`; a token for a server that requires one goes in the URL
/// as `nats://<token>@host:port` (the harness's convention: the agent takes it from a file).
async fn connect(url: &str) -> Result<jetstream::Context, String> {
    let mut opts = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let mut url = url.to_string();
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((token, host)) = rest.split_once('@') {
            opts = opts.token(token.to_string());
            url = format!("{scheme}://{host}");
        }
    }
    let client = opts.connect(url).await.map_err(|e| e.to_string())?;
    // A short API timeout: a request a dead node would have answered is tried again soon.
    Ok(jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client))
}

/// How many messages stream `name` holds (`None` while it cannot be asked).
pub async fn stream_messages(url: &str, name: &str) -> Option<u64> {
    let js = connect(url).await.ok()?;
    let mut s = js.get_stream(name).await.ok()?;
    Some(s.info().await.ok()?.state.messages)
}

/// Waits until stream `name` holds at least `n` messages.
pub async fn wait_for_messages(url: &str, name: &str, n: u64) {
    wait_until(
        DELIVERY,
        format!("{n} messages in stream {name}"),
        async || stream_messages(url, name).await.is_some_and(|m| m >= n),
    )
    .await;
}

/// One stored message: its stream sequence, headers and JSON payload.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence in the stream.
    pub stream_seq: u64,
    /// `Nats-Msg-Id`.
    pub msg_id: String,
    /// `Gapless-Agent-Id`.
    pub agent_id: String,
    /// `Gapless-Prev-Seq`.
    pub prev_seq: u64,
    /// The payload.
    pub event: Value,
}

/// Every message of stream `name`, in stream order, read with an ephemeral consumer
/// that acknowledges nothing; tried again while the cluster cannot place one (a node just
/// died, a leader is being elected).
pub async fn read_stream(url: &str, name: &str) -> Vec<Stored> {
    let deadline = Instant::now() + DELIVERY;
    loop {
        match try_read_stream(url, name).await {
            Ok(stored) => return stored,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading stream {name} again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot read stream {name} from {url}: {e}"),
        }
    }
}

async fn try_read_stream(url: &str, name: &str) -> Result<Vec<Stored>, String> {
    let js = connect(url).await?;
    let mut s = js.get_stream(name).await.map_err(|e| e.to_string())?;
    let total = s.info().await.map_err(|e| e.to_string())?.state.messages as usize;
    let c = s
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("an ephemeral consumer: {e}"))?;
    let mut messages = c.messages().await.map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let Ok(Some(m)) = tokio::time::timeout(SHORT, messages.next()).await else {
            return Err(format!(
                "the consumer stopped after {} of {total} messages",
                out.len()
            ));
        };
        let m = m.map_err(|e| e.to_string())?;
        let stream_seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        let header = |k: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(k))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        out.push(Stored {
            stream_seq,
            msg_id: header("Nats-Msg-Id"),
            agent_id: header("Gapless-Agent-Id"),
            prev_seq: header("Gapless-Prev-Seq").parse().unwrap_or(u64::MAX),
            event: serde_json::from_slice(&m.payload)
                .unwrap_or_else(|e| panic!("a payload that is not JSON ({e}): {:?}", m.payload)),
        });
    }
    Ok(out)
}
