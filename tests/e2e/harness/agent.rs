//! [`Agent`]: the real `gapless` binary as a child process, with its config, data_dir and
//! logs in a temporary directory. Starts wait for `GET /ready`; signals are real signals.
//! The config can be rewritten while the agent runs (then SIGHUP reloads it; see
//! [`super::reload`]).
//! The child is killed when the `Agent` is dropped, and a failing test prints the tail of
//! the agent's stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use tempfile::TempDir;

use super::{free_port, toml_path, SHORT};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_gapless");

/// How many lines of stderr a failing test shows.
const STDERR_TAIL_LINES: usize = 80;

/// Builds an [`Agent`]: a temporary directory first (so a test can name files in it),
/// then the config, then the process.
pub struct AgentBuilder {
    dir: TempDir,
    data_dir: PathBuf,
    top: String,
    body: String,
    stdin: bool,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
    verbatim: Option<(String, SocketAddr)>,
    config_from_env: bool,
    wrapper: Vec<String>,
}

impl AgentBuilder {
    /// Runs the agent through a command that execs it (`prlimit --nofile=64:64 --`,
    /// `setpriv --reuid=… --`), so that it starts with other limits or as another user.
    /// The process id stays the agent's. By default the binary is run directly.
    pub fn wrapped_in(mut self, prefix: &[&str]) -> Self {
        self.wrapper = prefix.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A path inside the agent's temporary directory (for log files, certificates, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Puts data_dir somewhere else (e.g. on a small tmpfs). By default, `data/` in the
    /// temporary directory.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = dir.to_path_buf();
        self
    }

    /// Top-level keys (`shutdown_timeout = "2s"`), written before any table.
    pub fn top(mut self, keys: &str) -> Self {
        self.top = keys.to_string();
        self
    }

    /// The rest of the config: `[wal]`, `[sources.*]`, `[sinks.*]`. data_dir and
    /// `[api] address` are written by the harness.
    pub fn config(mut self, body: &str) -> Self {
        self.body = body.to_string();
        self
    }

    /// Gives the agent a pipe as stdin (see [`Agent::stdin`]). By default stdin is
    /// /dev/null.
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Makes every start also wait until 127.0.0.1:`port` (an http source) accepts
    /// connections. `/ready` should already mean that; `http_source` checks it on its own,
    /// so that a readiness bug fails that test rather than every test that posts at once.
    pub fn listening_on(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// Sets `key` in the agent's environment (for `${VAR}` in the config). By default the
    /// agent inherits the test's environment less `GAPLESS_LOG` and `GAPLESS_CONFIG`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes `text` as the whole config file, as it is (no data_dir, top-level keys or
    /// `[api]` added), for a test of a shipped config; `api` must be the address the text
    /// gives the API (after substitution), and [`Agent::data_dir`] is right only if the
    /// text's data_dir is `path("data")`. By default the harness writes the config.
    pub fn verbatim_config(mut self, text: &str, api: SocketAddr) -> Self {
        self.verbatim = Some((text.to_string(), api));
        self
    }

    /// Names the config file in `GAPLESS_CONFIG` and runs plain `gapless run`, as the
    /// container image does. By default the harness passes `--config FILE`.
    pub fn config_from_env(mut self) -> Self {
        self.config_from_env = true;
        self
    }

    /// Writes the config and spawns the agent, without waiting for it to be ready.
    pub fn spawn(self) -> Agent {
        let config_path = self.dir.path().join("gapless.toml");
        let (text, api) = match self.verbatim {
            Some((text, api)) => (text, api),
            None => {
                let api: SocketAddr = format!("127.0.0.1:{}", free_port())
                    .parse()
                    .expect("an address");
                (render(&self.data_dir, &self.top, api, &self.body), api)
            }
        };
        std::fs::write(&config_path, text).expect("write the config");
        let mut agent = Agent {
            stderr_path: self.dir.path().join("stderr.log"),
            stdout_path: self.dir.path().join("stdout.log"),
            _dir: self.dir,
            data_dir: self.data_dir,
            config_path,
            top: self.top,
            api,
            stdin_piped: self.stdin,
            ports: self.ports,
            env: self.env,
            config_from_env: self.config_from_env,
            wrapper: self.wrapper,
            child: None,
            stdin: None,
            runs: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        };
        agent.spawn();
        agent
    }

    /// Spawns the agent and waits until it is ready.
    pub async fn start(self) -> Agent {
        let mut agent = self.spawn();
        agent.wait_ready().await;
        agent
    }
}

/// The config file the harness writes: data_dir, top-level keys, `[api]`, then the body.
fn render(data_dir: &Path, top: &str, api: SocketAddr, body: &str) -> String {
    format!(
        "data_dir = {data_dir}\n{top}\n\n[api]\naddress = \"{api}\"\n\n{body}\n",
        data_dir = toml_path(data_dir),
    )
}

/// A running (or stopped) `gapless run` process and everything it keeps on disk.
pub struct Agent {
    /// Holds the config, logs and (by default) data_dir; removed on drop.
    _dir: TempDir,
    data_dir: PathBuf,
    config_path: PathBuf,
    top: String,
    api: SocketAddr,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    stdin_piped: bool,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
    config_from_env: bool,
    wrapper: Vec<String>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    runs: u32,
    http: reqwest::Client,
}

impl Agent {
    /// Starts building an agent in a fresh temporary directory.
    pub fn builder() -> AgentBuilder {
        let dir = tempfile::Builder::new()
            .prefix("gapless-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let data_dir = dir.path().join("data");
        AgentBuilder {
            dir,
            data_dir,
            top: String::new(),
            body: String::new(),
            stdin: false,
            ports: Vec::new(),
            env: Vec::new(),
            verbatim: None,
            config_from_env: false,
            wrapper: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the agent is already running");
        self.runs += 1;
        let mut stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("open stderr.log");
        writeln!(stderr, "===== gapless run #{} =====", self.runs).expect("write stderr.log");
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout_path)
            .expect("open stdout.log");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        command
            .arg("run")
            .env_remove("GAPLESS_LOG")
            .env_remove("GAPLESS_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.config_from_env {
            command.env("GAPLESS_CONFIG", &self.config_path);
        } else {
            command.arg("--config").arg(&self.config_path);
        }
        let mut child = command
            .stdin(if self.stdin_piped {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn the gapless binary");
        self.stdin = child.stdin.take();
        self.child = Some(child);
    }

    /// Waits until `GET /ready` answers 200 and the ports of
    /// [`AgentBuilder::listening_on`] accept connections; panics (with the agent's stderr)
    /// if the process exits first or it takes too long.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + SHORT;
        self.wait_api_ready(deadline).await;
        for port in self.ports.clone() {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    Instant::now() < deadline && self.try_exit_status().is_none(),
                    "the agent's port {port} did not accept connections; stderr:\n{}",
                    self.stderr_tail()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    async fn wait_api_ready(&mut self, deadline: Instant) {
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "the agent exited with {status} before it was ready; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if let Ok(resp) = self.http.get(self.api_url("/ready")).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the agent was not ready within {SHORT:?}; stderr:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the agent again on the same config and data_dir, without waiting for it to
    /// be ready. It must have exited (or been killed) before.
    pub fn respawn(&mut self) {
        assert!(
            self.child.is_none() || self.try_exit_status().is_some(),
            "restart of an agent that is still running"
        );
        self.child = None;
        self.spawn();
    }

    /// [`Agent::respawn`], then waits until the agent is ready.
    pub async fn restart(&mut self) {
        self.respawn();
        self.wait_ready().await;
    }

    /// The process id of the running agent.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.pid() as i32).expect("a valid pid");
        kill_process(pid, sig).expect("send a signal to the agent");
    }

    /// Sends SIGTERM (see [`Agent::wait_exit`]).
    pub fn sigterm(&self) {
        self.signal(Signal::TERM);
    }

    /// Sends SIGHUP: the agent re-reads its config file.
    pub fn sighup(&self) {
        self.signal(Signal::HUP);
    }

    /// Rewrites the config file with a new body (what [`AgentBuilder::config`] takes),
    /// keeping data_dir, the top-level keys and the API address. Takes effect at the next
    /// SIGHUP or start.
    pub fn write_config(&self, body: &str) {
        self.write_config_text(&render(&self.data_dir, &self.top, self.api, body));
    }

    /// Replaces the config file with `text`, as it is (to write a broken one).
    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("rewrite the config");
    }

    /// `kill -9`: the agent gets no chance to finish anything. Reaps the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the agent is running");
        self.stdin = None;
        // std's Child::kill sends SIGKILL.
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
    }

    /// Waits for the agent to exit and returns its status; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {timeout:?}; stderr:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, if the agent has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the agent process"))
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit_status().is_none()
    }

    /// The write end of the agent's stdin (with [`AgentBuilder::stdin_piped`]).
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin
            .as_mut()
            .expect("the agent was built with stdin_piped()")
    }

    /// Closes the agent's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// `http://<api address><path>`.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// GET on the API: status code and body.
    pub async fn api_get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(self.api_url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the agent's API: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.api_get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The value of one sample of `/metrics`, e.g. `metric("gapless_sink_retries_total",
    /// &[("sink", "out")])`; `None` if it is not there.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.metrics_text().await;
        metric_value(&text, name, labels)
    }

    /// `GET /status`, parsed.
    pub async fn status_json(&self) -> Value {
        let (status, body) = self.api_get("/status").await;
        assert_eq!(status, 200, "GET /status: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
    }

    /// The agent's data_dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The config file the agent runs on (for `gapless dead-letter … --config`).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The address of the agent's API (for `gapless status --api`).
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// Everything the agent wrote to stderr, over all its runs.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Everything the agent wrote to stdout (the console sink), over all its runs.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The last lines of stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- agent stderr ({}), last {STDERR_TAIL_LINES} lines -----\n{}",
                self.stderr_path.display(),
                self.stderr_tail()
            );
        }
    }
}

/// Finds one sample in Prometheus/OpenMetrics text: the line of `name` whose labels include
/// all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Runs `gapless <args>` to completion (for `validate`, `wal …`): exit status, stdout,
/// stderr. A command still running after [`COMMAND_TIMEOUT`] is killed and the test fails
/// (a `run` that should have refused to start would otherwise hang the suite).
pub fn run_command(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    run_command_with_env(args, &[])
}

/// Longest a one-shot command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// [`run_command`] with these variables set in its environment.
pub fn run_command_with_env(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("GAPLESS_LOG")
        .env_remove("GAPLESS_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .expect("run the gapless binary");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gapless") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gapless {args:?} still ran after {COMMAND_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    (status, read(&out_path), read(&err_path))
}

/// [`run_command`] on a blocking thread, for commands that talk to a receiver or an agent
/// served by the test's own runtime (`status`, `dead-letter replay`).
pub async fn run_command_async(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_command(&args)
    })
    .await
    .expect("run the gapless binary on a blocking thread")
}

/// Waits until the agent's `/status` satisfies `cond`; panics naming `what` with the last
/// status seen.
pub async fn wait_for_status(agent: &Agent, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SHORT;
    loop {
        let status = agent.status_json().await;
        if cond(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {SHORT:?} waiting for /status to show {what}; last: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
