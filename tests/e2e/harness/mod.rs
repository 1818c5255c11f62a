//! The shared harness: the agent as a child process ([`Agent`]), a receiver that
//! misbehaves on cue ([`Receiver`]), log files that rotate ([`LogFile`]), a private CA
//! ([`certs`]), a small tmpfs ([`Tmpfs`]), checks over what arrived ([`lines`], and
//! [`capture`] for the continuity checker), reloading a running agent ([`reload`]), real
//! journal files ([`journal`]), the relay tier ([`relay`]: its config, a raw client, the
//! per-origin view), a durafs mount to cut the power under data_dir or inject storage
//! faults ([`DuraMount`]), and real `nats-server` processes ([`nats`]).
//!
//! Waiting is always for a condition with a deadline ([`wait_until`]), never a bare sleep.

pub mod agent;
pub mod capture;
pub mod certs;
pub mod client;
pub mod duramount;
pub mod http1;
pub mod journal;
pub mod lines;
pub mod logfile;
pub mod nats;
pub mod platforms;
pub mod receiver;
pub mod relay;
pub mod reload;
pub mod snippets;
pub mod tmpfs;

use std::fmt::Display;
use std::time::{Duration, Instant};

pub use agent::Agent;
pub use client::Ingest;
pub use duramount::DuraMount;
pub use lines::{
    assert_exactly_once, assert_in_order, assert_ranges_cover_once, check_delivery, lines_in,
    numbered_lines,
};
pub use logfile::{LogFile, LogWriter};
pub use receiver::{Mode, Receiver};
pub use tmpfs::Tmpfs;

/// How long a test waits for something that should take well under a second.
pub const SHORT: Duration = Duration::from_secs(10);
/// How long a test waits for a backlog to be delivered.
pub const DELIVERY: Duration = Duration::from_secs(30);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// A port on 127.0.0.1 that was free a moment ago (for the agent's API and http sources),
/// and never handed out before by this process: the kernel may give a port just released
/// again, and two ports of one agent (its API and a source) must not be the same.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if GIVEN.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(
    timeout: Duration,
    what: impl Display,
    mut cond: impl AsyncFnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Quotes a path as a TOML basic string.
pub fn toml_path(path: &std::path::Path) -> String {
    let s = path.to_str().expect("temporary paths are UTF-8");
    assert!(
        !s.contains(['"', '\\']),
        "path {s:?} would need escaping in TOML"
    );
    format!("\"{s}\"")
}

/// The effective uid, from /proc (libc would need unsafe code, which the workspace forbids).
pub fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("a Uid: line in /proc/self/status");
    uids.split_whitespace()
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("the effective uid")
}
