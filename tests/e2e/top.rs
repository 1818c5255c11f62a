//! `gapless top` as an operator sees it: driven in a real terminal (tmux, 80×24) against a
//! running agent whose sink is stalled — the screen shows the sink unhealthy and its oldest
//! undelivered age growing, keys switch and quit — and against an agent that dies: `top`
//! ends with a message and exit status 1 instead of a frozen screen.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_gapless");

/// A tmux server of its own (`-L`), one 80×24 session running `command`; the pane stays
/// after the command ends, showing `EXIT=<status>`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "gapless-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "80",
            "-y",
            "24",
            &format!("{command}; echo EXIT=$?; sleep 600"),
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux (Debian's tmux package)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "top", keys]);
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        wait_until(DELIVERY, what, async || {
            screen = self.screen();
            cond(&screen)
        })
        .await;
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The oldest-undelivered age (seconds) on the row of sink `name`: the token after the
/// backlog's `(… B)`.
fn oldest_age(screen: &str, name: &str) -> Option<u64> {
    let row = screen.lines().find(|l| l.trim_start().starts_with(name))?;
    let tokens: Vec<&str> = row.split_whitespace().collect();
    let after = tokens.iter().position(|t| t.ends_with(')'))?;
    let age = tokens.get(after + 1)?;
    let n: u64 = age.trim_end_matches(['s', 'm']).parse().ok()?;
    Some(if age.ends_with('m') { n * 60 } else { n })
}

async fn stalled_agent(receiver: &Receiver) -> (Agent, u16) {
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 10, "alert_after = \"2s\"")
        ))
        .start()
        .await;
    Ingest::new(port)
        .post_ok(&numbered_lines("top", 0, 20))
        .await;
    (agent, port)
}

#[tokio::test]
async fn top_shows_a_stalled_sink_unhealthy_with_its_age_growing_and_quits_on_q() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let (agent, _) = stalled_agent(&receiver).await;
    let tmux = Tmux::start(&format!("{BIN} top --api {}", agent.api_addr()));
    let first = tmux
        .wait_for("the sink shown unhealthy", |s| {
            s.contains("delivery UNHEALTHY") && oldest_age(s, "out").is_some()
        })
        .await;
    assert!(
        first.contains("sinks") && first.contains("sources"),
        "{first}"
    );
    assert!(
        first.contains("HTTP 503"),
        "the last error is shown:\n{first}"
    );
    for line in first.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    let age = oldest_age(&first, "out").unwrap();
    let later = tmux
        .wait_for("the oldest undelivered age to grow", |s| {
            oldest_age(s, "out").is_some_and(|a| a >= age + 2)
        })
        .await;
    assert!(later.contains("UNHEALTHY"), "{later}");
    tmux.keys("Tab");
    tmux.keys("q");
    let end = tmux.wait_for("top to quit", |s| s.contains("EXIT=")).await;
    assert!(end.contains("EXIT=0"), "{end}");
}

#[tokio::test]
async fn top_ends_with_a_message_when_the_agent_dies() {
    let receiver = Receiver::start(Mode::Ok).await;
    let (mut agent, _) = stalled_agent(&receiver).await;
    let tmux = Tmux::start(&format!("{BIN} top --api http://{}/", agent.api_addr()));
    tmux.wait_for("the agent shown", |s| s.contains("sources"))
        .await;
    agent.kill9();
    let end = tmux
        .wait_for("top to give up on the dead agent", |s| s.contains("EXIT="))
        .await;
    assert!(end.contains("EXIT=1"), "{end}");
    assert!(end.contains("gapless:") && end.contains("agent"), "{end}");
}
