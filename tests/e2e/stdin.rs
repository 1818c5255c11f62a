//! The stdin source with the console sink — `cat file | gapless run`: every line becomes
//! one event, in the order read, printed as NDJSON on stdout, and the agent exits 0 once
//! everything read is delivered.

use std::io::Write;

use serde_json::Value;

use crate::harness::*;

const CONSOLE: &str = r#"
[sources.pipe]
type = "stdin"

[sinks.debug]
type = "console"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn stdin_lines_reach_the_console_in_order_and_the_agent_exits_0() {
    // Ordering depends on how reads and appends interleave: repeat to give a race a chance.
    for run in 0..20 {
        let mut agent = Agent::builder().config(CONSOLE).stdin_piped().start().await;
        let lines = numbered_lines(&format!("stdin-console run {run}"), 0, 500);
        agent
            .stdin()
            .write_all(lines.join("\n").as_bytes())
            .unwrap();
        agent.close_stdin();
        let status = agent.wait_exit(SHORT).await;
        assert!(status.success(), "run {run}: exit status {status}");
        let events: Vec<Value> = agent
            .stdout_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout {l:?}: {e}")))
            .collect();
        check_delivery(&lines, &events).assert_exactly_once();
        assert_in_order(&lines, &events);
    }
}
