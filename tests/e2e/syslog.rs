//! The syslog source with real clients: util-linux `logger` over TCP (octet counting, RFC
//! 5424 with structured data) and UDP (RFC 3164), every field of the event checked;
//! newline framing, a BOM, an unparseable message (kept whole), an over-long message
//! (truncated and flagged); TLS with client certificates required; syslog-ng's `loggen`
//! over TCP and TLS (all arrive) and UDP (arrivals plus reported kernel drops equal what
//! was sent); a syslog-ng relay (RFC 3164 in, octet-counted RFC 5424 out; rsyslog
//! conflicts with syslog-ng-core on Debian, so syslog-ng stands in for it);
//! `max_connections`; and `kill -9` in the middle of a TCP stream.

use std::time::{Duration, SystemTime};

use gapless::event::Timestamp;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::certs::{Pki, ServerCert};
use crate::harness::snippets::http_sink;
use crate::harness::*;

/// A syslog source `net` in `mode` on 127.0.0.1:`port`; `extra` lines go into its table.
fn syslog_source(mode: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[sources.net]
type = "syslog"
mode = "{mode}"
address = "127.0.0.1:{port}"
{extra}
"#
    )
}

async fn start(receiver: &Receiver, source: &str) -> Agent {
    Agent::builder()
        .config(&format!(
            "{source}{}",
            http_sink(&receiver.url(), &[], 1000, "")
        ))
        .start()
        .await
}

/// Runs a client program, which must succeed.
fn run(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (apt-get install bsdutils syslog-ng-core)"));
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The event without `seq`, `timestamp`, `syslog.peer` (checked apart) and `host`.
fn comparable(event: &Value) -> Value {
    let mut e = event.clone();
    let o = e.as_object_mut().unwrap();
    for k in ["seq", "timestamp", "host"] {
        o.remove(k);
    }
    let peer = o["syslog"].as_object_mut().unwrap().remove("peer").unwrap();
    assert!(
        peer.as_str().unwrap().starts_with("127.0.0.1:"),
        "peer {peer}"
    );
    e
}

/// Panics unless `event`'s timestamp is a UTC RFC 3339 time within the last minute.
fn assert_recent(event: &Value) {
    let ts = event["timestamp"].as_str().unwrap();
    let now = SystemTime::now();
    let lo = Timestamp::from_system(now - Duration::from_secs(60));
    let hi = Timestamp::from_system(now + Duration::from_secs(1));
    assert!(
        lo.as_str() <= ts && ts <= hi.as_str() && ts.ends_with('Z'),
        "timestamp {ts} is not within [{}, {}]",
        lo.as_str(),
        hi.as_str()
    );
}

async fn send_tcp(port: u16, bytes: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
}

fn hostname() -> String {
    gapless::event::hostname()
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_over_tcp_with_octet_counting_and_rfc5424_gives_every_field() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(
        &receiver,
        &syslog_source("tcp", port, "framing = \"octet_counting\""),
    )
    .await;
    let p = port.to_string();
    run(&[
        "logger",
        "--tcp",
        "--octet-count",
        "--rfc5424",
        "-n",
        "127.0.0.1",
        "-P",
        &p,
        "-t",
        "myapp",
        "--id=4242",
        "--msgid",
        "ID47",
        "--sd-id",
        "exampleSDID@32473",
        "--sd-param",
        "iut=\"3\"",
        "--sd-param",
        "eventSource=\"Application\"",
        "-p",
        "local4.notice",
        "hello one",
    ]);
    let events = receiver.wait_for_events(1, DELIVERY).await;
    assert_recent(&events[0]);
    assert_eq!(events[0]["host"], hostname());
    assert_eq!(
        comparable(&events[0]),
        json!({
            "message": "hello one",
            "source": "net",
            "syslog": {
                "facility": "local4", "severity": "notice", "hostname": hostname(),
                "appname": "myapp", "procid": "4242", "msgid": "ID47",
                "structured_data": {
                    "timeQuality": {"tzKnown": "1", "isSynced": "0"},
                    "exampleSDID@32473": {"iut": "3", "eventSource": "Application"}
                },
                "format": "rfc5424"
            }
        })
    );
}

/// `logger --udp --rfc3164` to 127.0.0.1:`port` as `myapp[4242]`, `daemon.warning`.
fn logger_udp_rfc3164(port: u16, message: &str) {
    let p = port.to_string();
    run(&[
        "logger",
        "--udp",
        "--rfc3164",
        "-n",
        "127.0.0.1",
        "-P",
        &p,
        "-t",
        "myapp",
        "--id=4242",
        "-p",
        "daemon.warning",
        message,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_over_udp_in_rfc3164_gives_tag_pid_and_this_years_time() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(&receiver, &syslog_source("udp", port, "")).await;
    logger_udp_rfc3164(port, "hello udp");
    let events = receiver.wait_for_events(1, DELIVERY).await;
    assert_recent(&events[0]);
    assert_eq!(
        comparable(&events[0]),
        json!({
            "message": "hello udp",
            "source": "net",
            "syslog": {
                "facility": "daemon", "severity": "warning", "hostname": hostname(),
                "appname": "myapp", "procid": "4242", "format": "rfc3164"
            }
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn newline_frames_a_bom_and_an_unparseable_line_each_become_one_event() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(&receiver, &syslog_source("tcp", port, "")).await;
    let p = port.to_string();
    // logger without --octet-count frames with LF.
    run(&[
        "logger",
        "--tcp",
        "--rfc5424=notq",
        "-n",
        "127.0.0.1",
        "-P",
        &p,
        "-t",
        "nl",
        "framed by LF",
    ]);
    receiver.wait_for_events(1, DELIVERY).await;
    send_tcp(
        port,
        b"<13>1 2026-11-30T06:00:00+01:00 h app - - - \xEF\xBB\xBFwith a BOM\r\nnot syslog at all\n\n53 <14>1 - - - - - - counted, then a newline frame after",
    )
    .await;
    let events = receiver.wait_for_events(4, DELIVERY).await;
    let got: Vec<Value> = events.iter().map(comparable).collect();
    assert_eq!(
        got,
        vec![
            json!({"message": "framed by LF", "source": "net", "syslog": {
                "facility": "user", "severity": "notice", "hostname": hostname(),
                "appname": "nl", "format": "rfc5424"}}),
            json!({"message": "with a BOM", "source": "net", "syslog": {
                "facility": "user", "severity": "notice", "hostname": "h",
                "appname": "app", "format": "rfc5424"}}),
            json!({"message": "not syslog at all", "source": "net", "syslog": {
                "format": "unparsed"}}),
            json!({"message": "counted, then a newline frame after", "source": "net", "syslog": {
                "facility": "user", "severity": "info", "format": "rfc5424"}}),
        ]
    );
    assert_eq!(events[1]["timestamp"], "2026-11-30T05:00:00.000000Z");
    assert_recent(&events[2]);
    assert_recent(&events[3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_long_tcp_message_is_truncated_flagged_and_the_stream_stays_in_step() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start(
        &receiver,
        &syslog_source("tcp", port, "max_message_bytes = \"1KiB\""),
    )
    .await;
    let long = format!("<13>1 - - - - - - {}", "x".repeat(3000));
    let short = "<13>1 - - - - - - after";
    let stream = format!("{} {long}{} {short}", long.len(), short.len());
    send_tcp(port, stream.as_bytes()).await;
    let events = receiver.wait_for_events(2, DELIVERY).await;
    assert_eq!(events[0]["truncated"], true);
    assert_eq!(
        events[0]["message"].as_str().unwrap(),
        "x".repeat(1024 - "<13>1 - - - - - - ".len())
    );
    assert_eq!(events[1]["message"], "after");
    assert!(events[1].get("truncated").is_none());
    assert_eq!(
        agent
            .metric(
                "gapless_source_syslog_truncated_events_total",
                &[("source", "net")]
            )
            .await,
        Some(1.0)
    );
}

async fn tls_send(
    port: u16,
    pki: &Pki,
    client: Option<&ServerCert>,
    bytes: &[u8],
) -> std::io::Result<()> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(bytes).await?;
    tls.flush().await?;
    // The server's answer to a missing certificate (TLS 1.3: after the handshake) is an
    // alert; a good connection is closed cleanly by us.
    tls.shutdown().await?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await?;
    Ok(())
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_ca_file_takes_a_signed_client_and_refuses_one_without_a_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path());
    let (cert, key) = pki.write_server(dir.path());
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(
        &receiver,
        &syslog_source(
            "tls",
            port,
            &format!(
                "tls = {{ cert_file = {}, key_file = {}, ca_file = {} }}",
                toml_path(&cert),
                toml_path(&key),
                toml_path(&ca)
            ),
        ),
    )
    .await;
    let refused = tls_send(port, &pki, None, b"28 <13>1 - - - - - - no cert!!!").await;
    assert!(refused.is_err(), "a client without a certificate was taken");
    let client = pki.client("a syslog client");
    tls_send(port, &pki, Some(&client), b"27 <13>1 - - - - - - over TLS!")
        .await
        .unwrap();
    let events = receiver.wait_for_events(1, DELIVERY).await;
    assert_eq!(events[0]["message"], "over TLS!");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events().len(), 1, "{:?}", receiver.events());
}

/// The loggen sequence numbers (`seq: 0000000042`) in `events`, sorted.
fn loggen_seqs(events: &[Value]) -> Vec<u64> {
    let mut seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            let at = m.find("seq: ")?;
            m[at + 5..at + 15].parse().ok()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

#[tokio::test(flavor = "multi_thread")]
async fn loggen_over_tcp_with_octet_counting_delivers_every_message_once() {
    const N: u64 = 20_000;
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(&receiver, &syslog_source("tcp", port, "")).await;
    let (p, n) = (port.to_string(), N.to_string());
    run(&[
        "loggen",
        "-i",
        "-S",
        "-P",
        "-Q",
        "-n",
        &n,
        "-r",
        "200000",
        "-I",
        "60",
        "127.0.0.1",
        &p,
    ]);
    let events = receiver.wait_for_events(N as usize, DELIVERY).await;
    assert_eq!(loggen_seqs(&events), (0..N).collect::<Vec<_>>());
    for e in &events {
        let m = e["message"].as_str().unwrap();
        assert!(!m.starts_with('\u{feff}') && !m.ends_with('\n'), "{m:?}");
        assert_eq!(e["syslog"]["format"], "rfc5424");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loggen_over_udp_arrivals_plus_reported_drops_equal_what_was_sent() {
    const N: u64 = 50_000;
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    // A small socket buffer, so that a burst overflows it.
    let agent = start(
        &receiver,
        &syslog_source("udp", port, "receive_buffer_bytes = \"64KiB\""),
    )
    .await;
    let (p, n) = (port.to_string(), N.to_string());
    run(&[
        "loggen",
        "-i",
        "-D",
        "-Q",
        "-n",
        &n,
        "-r",
        "1000000",
        "-I",
        "60",
        "127.0.0.1",
        &p,
    ]);
    let dropped = || async {
        agent
            .metric(
                "gapless_dropped_events_total",
                &[("reason", "source_overflow")],
            )
            .await
            .unwrap_or(0.0) as u64
    };
    wait_until(DELIVERY, "arrivals plus drops to reach N", async || {
        let arrived = loggen_seqs(&receiver.events()).len() as u64;
        arrived + dropped().await >= N
    })
    .await;
    let gap_records = |events: &[Value]| -> u64 {
        events
            .iter()
            .filter(|e| e["gapless"] == "gap" && e["reason"] == "source_overflow")
            .map(|e| e["events"].as_u64().unwrap())
            .sum()
    };
    // The counter moves when its gap record is durable; the record is delivered after.
    let dropped = dropped().await;
    wait_until(DELIVERY, "a gap record for every drop", async || {
        gap_records(&receiver.events()) == dropped
    })
    .await;
    // Nothing more arrives, and nothing is there twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seqs = loggen_seqs(&receiver.events());
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "duplicates");
    eprintln!(
        "udp: {} arrived, {dropped} dropped by the kernel",
        seqs.len()
    );
    assert_eq!(seqs.len() as u64 + dropped, N);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_max_connections_are_closed_and_counted() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let agent = start(
        &receiver,
        &syslog_source("tcp", port, "max_connections = 1"),
    )
    .await;
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    first.write_all(b"<13>1 - - - - - - first\n").await.unwrap();
    receiver.wait_for_events(1, DELIVERY).await;
    let mut second = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(SHORT, second.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "the second connection was not closed: {closed:?}"
    );
    assert_eq!(
        agent
            .metric(
                "gapless_source_refused_connections_total",
                &[("source", "net")]
            )
            .await,
        Some(1.0)
    );
    first
        .write_all(b"<13>1 - - - - - - still open\n")
        .await
        .unwrap();
    receiver.wait_for_events(2, DELIVERY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_tcp_stream_loses_only_a_tail_the_agent_had_not_made_durable() {
    // Crash: kill -9 while a sender streams; what the kernel had ACKed but the agent had
    // not appended (socket buffer plus the batch in hand) is lost, as documented.
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let mut agent = start(&receiver, &syslog_source("tcp", port, "")).await;
    let sender = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut sent = 0u64;
        loop {
            let mut chunk = String::new();
            for i in sent..sent + 100 {
                let m = format!("<13>1 - - app - - - n={i:09}");
                chunk.push_str(&format!("{} {m}", m.len()));
            }
            if s.write_all(chunk.as_bytes()).await.is_err() {
                return sent;
            }
            sent += 100;
        }
    });
    wait_until(
        DELIVERY,
        "5000 events delivered before the kill",
        async || receiver.events().len() >= 5000,
    )
    .await;
    let before = receiver.events().len();
    agent.kill9();
    let sent = sender.await.unwrap();
    agent.restart().await;
    let numbers = || -> Vec<u64> {
        let mut n: Vec<u64> = receiver
            .unique_events()
            .iter()
            .filter_map(|e| e["message"].as_str()?.strip_prefix("n=")?.parse().ok())
            .collect();
        n.sort_unstable();
        n
    };
    wait_until(
        DELIVERY,
        "the WAL delivered after the restart",
        async || {
            agent
                .metric("gapless_sink_backlog_events", &[("sink", "out")])
                .await
                == Some(0.0)
        },
    )
    .await;
    let got = numbers();
    let k = got.len() as u64;
    // Durable appends are in order on one connection: what arrived is a prefix, with no
    // hole and no duplicate, and holds everything delivered before the kill.
    assert_eq!(got, (0..k).collect::<Vec<_>>());
    assert!(
        k as usize >= before && k <= sent,
        "k={k} before={before} sent={sent}"
    );
    // The rest was in the kernel's buffers (the agent's receive buffer, the sender's send
    // buffer) or the one batch in hand: bounded by their sizes.
    let max_of = |path: &str| -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        text.split_whitespace().last().unwrap().parse().unwrap()
    };
    let bound = max_of("/proc/sys/net/ipv4/tcp_rmem")
        + max_of("/proc/sys/net/ipv4/tcp_wmem")
        + gapless::sources::syslog::READ_CHUNK as u64;
    // "31 <13>1 - - app - - - n=000000000"
    let frame = 34;
    assert!(
        (sent - k) * frame <= bound,
        "lost {} bytes, more than the buffers hold ({bound})",
        (sent - k) * frame
    );
    eprintln!(
        "kill -9: {sent} written by the sender, {k} durable and delivered, {} lost in the socket buffers and the batch in hand",
        sent - k
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loggen_over_tls_delivers_every_message_once() {
    const N: u64 = 5_000;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pki.write_server(dir.path());
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(
        &receiver,
        &syslog_source(
            "tls",
            port,
            &format!(
                "tls = {{ cert_file = {}, key_file = {} }}",
                toml_path(&cert),
                toml_path(&key)
            ),
        ),
    )
    .await;
    let (p, n) = (port.to_string(), N.to_string());
    run(&[
        "loggen",
        "-U",
        "-P",
        "-Q",
        "-n",
        &n,
        "-r",
        "100000",
        "-I",
        "60",
        "127.0.0.1",
        &p,
    ]);
    let events = receiver.wait_for_events(N as usize, DELIVERY).await;
    assert_eq!(loggen_seqs(&events), (0..N).collect::<Vec<_>>());
}

/// A syslog-ng relay, killed on drop.
struct Relay(std::process::Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syslog_ng_relay_forwards_rfc3164_as_octet_counted_rfc5424_with_every_field() {
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let _agent = start(&receiver, &syslog_source("tcp", port, "")).await;
    // logger (RFC 3164, UDP) -> syslog-ng -> gapless (RFC 5424, octet counting, TCP).
    let dir = tempfile::tempdir().unwrap();
    let relay_port = free_port();
    let conf = dir.path().join("syslog-ng.conf");
    std::fs::write(
        &conf,
        format!(
            r#"@version: 3.38
options {{ keep-hostname(yes); }};
source s_in {{ network(ip("127.0.0.1") port({relay_port}) transport("udp")); }};
destination d_out {{ syslog("127.0.0.1" port({port}) transport("tcp")); }};
log {{ source(s_in); destination(d_out); }};
"#
        ),
    )
    .unwrap();
    let ctl = dir.path().join("ctl");
    let _relay = Relay(
        std::process::Command::new("syslog-ng")
            .arg("-F")
            .arg("--no-caps")
            .arg("-f")
            .arg(&conf)
            .arg("-R")
            .arg(dir.path().join("persist"))
            .arg("-p")
            .arg(dir.path().join("pid"))
            .arg("-c")
            .arg(&ctl)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("syslog-ng (apt-get install syslog-ng-core)"),
    );
    // Bound when its socket is in /proc/net/udp (local address 0100007F:PORT).
    let bound = format!("0100007F:{relay_port:04X} ");
    wait_until(SHORT, "syslog-ng to bind its UDP port", async || {
        ctl.exists() && std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&bound))
    })
    .await;
    logger_udp_rfc3164(relay_port, "relayed hello");
    let events = receiver.wait_for_events(1, DELIVERY).await;
    assert_recent(&events[0]);
    assert_eq!(
        comparable(&events[0]),
        json!({
            "message": "relayed hello",
            "source": "net",
            "syslog": {
                "facility": "daemon", "severity": "warning", "hostname": hostname(),
                "appname": "myapp", "procid": "4242", "format": "rfc5424"
            }
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_reads_what_already_arrived_before_closing_a_tcp_connection() {
    const N: u64 = 50_000;
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let mut agent = start(&receiver, &syslog_source("tcp", port, "")).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = Vec::new();
    for i in 0..N {
        let m = format!("<13>1 - - app - - - n={i:09}");
        stream.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
    }
    s.write_all(&stream).await.unwrap();
    // Everything is in the kernel's buffers (on loopback, mostly the agent's) when the
    // agent is told to stop: it reads it all before it closes the connection.
    agent.sigterm();
    assert!(agent.wait_exit(DELIVERY).await.success());
    agent.restart().await;
    let events = receiver.wait_for_events(N as usize, DELIVERY).await;
    let mut n: Vec<u64> = events
        .iter()
        .filter_map(|e| e["message"].as_str()?.strip_prefix("n=")?.parse().ok())
        .collect();
    n.sort_unstable();
    n.dedup();
    assert_eq!(n.len() as u64, N);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_rebinds_the_tcp_and_udp_ports() {
    let receiver = Receiver::start(Mode::Ok).await;
    let (tcp, udp) = (free_port(), free_port());
    let body = format!(
        "{}{}{}",
        syslog_source("tcp", tcp, ""),
        syslog_source("udp", udp, "").replace("sources.net", "sources.dgram"),
        http_sink(&receiver.url(), &[], 1000, "")
    );
    let mut agent = Agent::builder().config(&body).start().await;
    send_tcp(tcp, b"<13>1 - - - - - - before\n").await;
    receiver.wait_for_events(1, DELIVERY).await;
    // The sources stop (their sockets closed) and start again on the same ports.
    agent.reload(&body).await;
    send_tcp(tcp, b"<13>1 - - - - - - after\n").await;
    let p = udp.to_string();
    run(&["logger", "--udp", "-n", "127.0.0.1", "-P", &p, "over udp"]);
    let events = receiver.wait_for_events(3, DELIVERY).await;
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"after") && messages.contains(&"over udp"),
        "{messages:?}"
    );
}
