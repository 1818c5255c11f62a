//! Reloading a running [`Agent`]: rewrite its config, send SIGHUP, and wait until it runs
//! the new one — or until it said why it kept the old one. What the agent logged is the
//! evidence: its stderr gets one "gapless running" line per applied config.

use std::time::{Duration, Instant};

use super::{Agent, SHORT};

/// The line the agent logs once every source of a config takes input.
const RUNNING: &str = "gapless running";

impl Agent {
    /// How many lines of stderr (over all runs) contain `needle`.
    pub fn stderr_count(&self, needle: &str) -> usize {
        self.stderr_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `n` lines of stderr contain `needle`; panics with the stderr
    /// tail if the agent exits first or it takes longer than [`SHORT`].
    pub async fn wait_for_stderr(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + SHORT;
        while self.stderr_count(needle) < n {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "the agent exited with {status} while we waited for {n} lines of {needle:?}; \
                     stderr:\n{}",
                    self.stderr_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {SHORT:?} waiting for {n} lines of {needle:?} on stderr:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Rewrites the config with `body` (see [`Agent::write_config`]), sends SIGHUP and waits
    /// until the agent runs it: one more "gapless running" on stderr, and `/ready` is 200.
    pub async fn reload(&mut self, body: &str) {
        let applied = self.stderr_count(RUNNING);
        self.write_config(body);
        self.sighup();
        self.wait_for_stderr(RUNNING, applied + 1).await;
        self.wait_ready().await;
    }
}
