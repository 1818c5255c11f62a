//! The command line: `run`, `validate`, `status`, `top`, `dead-letter list|replay`,
//! `verify-stream`, `wal inspect|verify|dump|forget-cursor`, `--version`. This is the binary's edge: errors become messages and exit codes here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{check_paths, Config};

/// gapless — a log-forwarding agent that turns outages, crashes and full disks into
/// delays, never silent gaps.
#[derive(Debug, Parser)]
#[command(name = "gapless", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/gapless/gapless.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent until SIGTERM (or, with a stdin source, until stdin is delivered).
    ///
    /// Example: gapless run --config /etc/gapless/gapless.toml
    Run {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "GAPLESS_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file without starting anything: syntax, keys, values, that data_dir
    /// is writable and that files it names are readable. Exits 1 with the problems.
    ///
    /// Example: gapless validate --config /etc/gapless/gapless.toml
    Validate {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "GAPLESS_CONFIG")]
        config: PathBuf,
    },
    /// Summarise a running agent: per sink the backlog, oldest undelivered age, delivery
    /// rate, time to drain and last error; per source the events in; WAL usage and drops.
    /// Exits 1 when delivery is unhealthy.
    ///
    /// Example: gapless status --config /etc/gapless/gapless.toml
    Status {
        #[command(flatten)]
        agent: AgentApi,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A live view of a running agent in the terminal: per sink backlog, oldest undelivered
    /// age, delivery rate with its history, last error and health; per source events/s;
    /// WAL usage and drops. `q` quits, `Tab`/arrows choose the sink. Exits 1 when the
    /// agent stops answering.
    ///
    /// Example: gapless top --config /etc/gapless/gapless.toml
    Top {
        #[command(flatten)]
        agent: AgentApi,
    },
    /// Batches a destination rejected for good (4xx), kept in data_dir/dead-letter/<sink>/.
    ///
    /// Example: gapless dead-letter replay --sink platform --config /etc/gapless/gapless.toml
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Check captured batches (NDJSON events, or one `{"headers":…,"events":[…]}` per line)
    /// for seqs missing without a gap record, and for duplicates. Events passed on by a relay
    /// (with `origin_agent_id`) are also checked per origin agent. Exits 1 on a silent hole.
    ///
    /// Example: gapless verify-stream received.ndjson --from 1
    VerifyStream {
        /// Capture files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The sink's seq_field.
        #[arg(long, default_value = "seq")]
        seq_field: String,
        /// The seq the stream must start at (default: where it starts).
        #[arg(long)]
        from: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (the .deb installs them already).
    ///
    /// Example: gapless completions bash > ~/.local/share/bash-completion/completions/gapless
    Completions {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): gapless(1), or with a subcommand gapless-<subcommand>(1).
    /// The .deb installs them.
    ///
    /// Example: gapless man run | man -l -
    Man {
        /// A subcommand (run, validate, status, top, …).
        subcommand: Option<String>,
    },
    /// Look into the write-ahead log (stop the agent first: the WAL is locked while it runs).
    ///
    /// Example: gapless wal inspect --data-dir /var/lib/gapless
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

/// How a command finds a running agent: `--api`, else `api.address` of `--config`, else the
/// default.
#[derive(Debug, clap::Args)]
struct AgentApi {
    /// The config file, for `api.address` (default /etc/gapless/gapless.toml when it exists).
    #[arg(long, short, env = "GAPLESS_CONFIG")]
    config: Option<PathBuf>,
    /// The agent's API address (overrides the config's `api.address`), like 127.0.0.1:8686.
    #[arg(long)]
    api: Option<String>,
}

impl AgentApi {
    /// The API address to use, without a scheme.
    fn address(&self) -> Result<String, ExitCode> {
        if let Some(api) = &self.api {
            return Ok(api_address(api));
        }
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        if !explicit && !path.exists() {
            return Ok("127.0.0.1:8686".into());
        }
        match Config::load(&path) {
            Ok(c) => Ok(c.api.address.to_string()),
            Err(e) => Err(fail(e)),
        }
    }
}

/// How a `wal` command finds the WAL: `--data-dir`, else `data_dir` of `--config`, else
/// the default.
#[derive(Debug, clap::Args)]
struct DataDir {
    /// The agent's data_dir (overrides the config's).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The config file, for `data_dir` (default /etc/gapless/gapless.toml when it exists).
    #[arg(long, short, env = "GAPLESS_CONFIG")]
    config: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> Result<PathBuf, ExitCode> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        if !explicit && !path.exists() {
            return Ok(PathBuf::from("/var/lib/gapless"));
        }
        match Config::load(&path) {
            Ok(c) => Ok(c.data_dir),
            Err(e) => Err(fail(e)),
        }
    }
}

/// `http://127.0.0.1:8686/` → `127.0.0.1:8686`.
fn api_address(api: &str) -> String {
    api.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// List a sink's dead-lettered batches.
    ///
    /// Example: gapless dead-letter list --sink platform
    List {
        /// The sink's name.
        #[arg(long)]
        sink: String,
        /// The config file (for data_dir).
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "GAPLESS_CONFIG")]
        config: PathBuf,
    },
    /// Send a sink's dead-lettered batches again (after fixing the cause), removing each
    /// once accepted; stops at the first failure.
    ///
    /// Example: gapless dead-letter replay --sink platform
    Replay {
        /// The sink's name.
        #[arg(long)]
        sink: String,
        /// The config file (for data_dir and the sink's uri, credentials and TLS).
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "GAPLESS_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Segments, sizes, sequence numbers and each cursor's backlog, as JSON. Read-only.
    ///
    /// Example: gapless wal inspect --data-dir /var/lib/gapless
    Inspect {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Check every segment header and record checksum; list damaged ranges and the
    /// sequence numbers lost, and a dirty tail (bytes after the last record that hold no
    /// record: no seq lost). Read-only: changes no file; refuses while an agent runs on the
    /// WAL. Exits 0 if nothing is damaged (a dirty tail is not damage), 1 if something
    /// is, 2 if the WAL could not be checked.
    ///
    /// Example: gapless wal verify --data-dir /var/lib/gapless
    Verify {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Print records as NDJSON. Read-only.
    ///
    /// Example: gapless wal dump --data-dir /var/lib/gapless --from 1000 --limit 10
    Dump {
        #[command(flatten)]
        data_dir: DataDir,
        /// First sequence number to print (default: the oldest).
        #[arg(long)]
        from: Option<u64>,
        /// Most records to print.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Delete the cursor of a sink that was removed from the config, releasing the backlog
    /// only it held.
    ///
    /// Example: gapless wal forget-cursor old-platform --data-dir /var/lib/gapless
    ForgetCursor {
        /// The sink's name.
        name: String,
        #[command(flatten)]
        data_dir: DataDir,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Validate { config } => validate(config),
        Command::Wal { command } => wal(command),
        Command::Status { agent, json } => match agent.address() {
            Ok(api) => status(&api, json),
            Err(code) => code,
        },
        Command::Top { agent } => match agent.address() {
            Ok(api) => match crate::top::run(&api) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!(
                    "{e} (is the agent running with api.address = {api:?}?)"
                )),
            },
            Err(code) => code,
        },
        Command::DeadLetter { command } => dead_letter(command),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "gapless", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { subcommand } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let page = match &subcommand {
                None => cmd,
                Some(name) => match cmd.find_subcommand(name) {
                    Some(sub) => sub.clone().name(format!("gapless-{name}")),
                    None => return fail(format!("no subcommand {name:?}")),
                },
            };
            let mut out = std::io::stdout().lock();
            match clap_mangen::Man::new(page).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("writing the man page: {e}")),
            }
        }
        Command::VerifyStream {
            files,
            seq_field,
            from,
            json,
        } => {
            let mut out = std::io::stdout().lock();
            match crate::ops::verify_stream(&files, &seq_field, from, json, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(e),
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the runtime: {e}")))
}

fn status(api: &str, json: bool) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    match rt.block_on(crate::ops::status(api, json, &mut out)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(format!(
            "{e} (is the agent running with api.address = {api:?}?)"
        )),
    }
}

fn dead_letter(command: DeadLetterCommand) -> ExitCode {
    let (sink, path, replay) = match command {
        DeadLetterCommand::List { sink, config } => (sink, config, false),
        DeadLetterCommand::Replay { sink, config } => (sink, config, true),
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    if !replay {
        return match crate::ops::dead_letter_list(&config, &sink, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::ops::dead_letter_replay(&config, &sink, &mut out)) {
        Ok((_, 0)) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => fail(e),
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("gapless: {msg}");
    ExitCode::FAILURE
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAPLESS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `gapless run`'s exit status for an invalid config: EX_CONFIG, which the systemd unit does
/// not restart on (`RestartPreventExitStatus=78`).
const EXIT_CONFIG: u8 = 78;

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load_all(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("gapless: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(crate::pipeline::run(config, Some(path))) {
        Ok(()) => ExitCode::SUCCESS,
        // Once logging runs, the error is said once, as a log line (journald keeps it).
        Err(e) => {
            tracing::error!(error = %e, "gapless cannot run");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: PathBuf) -> ExitCode {
    let config = match Config::load_all(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("gapless: {e}");
            }
            eprintln!(
                "gapless: {}: {} problem{}",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };
    let problems = check_paths(&config);
    for (name, source) in &config.sources {
        if let crate::config::SourceConfig::File(c) = source {
            for (path, e) in crate::sources::file::unreadable(c) {
                eprintln!(
                    "gapless: warning: sources.{name}: {} cannot be read by this user ({e}); it is followed once it can be",
                    path.display(),
                );
            }
            if crate::sources::file::matched_files(c) == 0 {
                eprintln!(
                    "gapless: warning: sources.{name}: include {:?} matches no file now; files are followed once they appear",
                    c.include
                );
            }
        }
    }
    if problems.is_empty() {
        println!(
            "{}: OK ({} sources, {} sinks)",
            path.display(),
            config.sources.len(),
            config.sinks.len()
        );
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("gapless: {}: {p}", path.display());
        }
        ExitCode::FAILURE
    }
}

fn wal(command: WalCommand) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let dir = |d: &DataDir| d.resolve();
    let result = match command {
        WalCommand::Inspect { data_dir } => match dir(&data_dir) {
            Ok(d) => crate::wal_tools::inspect(&d, &mut out).map(|()| true),
            Err(code) => return code,
        },
        WalCommand::Verify { data_dir } => {
            let d = match dir(&data_dir) {
                Ok(d) => d,
                Err(_) => return ExitCode::from(2),
            };
            return match crate::wal_tools::verify(&d, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("gapless: {e}");
                    ExitCode::from(2)
                }
            };
        }
        WalCommand::Dump {
            data_dir,
            from,
            limit,
        } => match dir(&data_dir) {
            Ok(d) => crate::wal_tools::dump(&d, from, limit, &mut out).map(|()| true),
            Err(code) => return code,
        },
        WalCommand::ForgetCursor { name, data_dir } => match dir(&data_dir) {
            Ok(d) => crate::wal_tools::forget_cursor(&d, &name).inspect(|&existed| {
                if existed {
                    println!("cursor {name:?} removed");
                } else {
                    println!("no cursor named {name:?}");
                }
            }),
            Err(code) => return code,
        },
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => fail(e),
    }
}
