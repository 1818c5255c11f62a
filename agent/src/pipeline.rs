//! Wiring and lifecycle: open the WAL, start the sinks (each with its cursor), then the
//! sources, then the API; on SIGTERM/SIGINT stop in reverse — sources stop taking input,
//! sinks finish in-flight requests within `shutdown_timeout`, the WAL is closed — and exit 0.
//! A part that fails is logged and restarted after a pause: never a crash loop.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gapless_wal::Wal;
use tokio::signal::unix::SignalKind;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, ApiState};
use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::event::{hostname, EventEncoder};
use crate::metrics::Metrics;
use crate::reserved::ReservedFields;
use crate::sinks::{self, SinkContext};
use crate::sources::{self, SourceContext};

/// How long a failed source or sink waits before it is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The WAL's directory inside `data_dir`.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

/// The agent id: from the config, else the one kept in `data_dir/agent_id`, else a new
/// UUID written there durably (kept across restarts, upgrades and power cuts).
///
/// A file that does not hold a UUID (torn by a power cut under an older version, or
/// damaged) is not used: it is reported, moved aside to `agent_id.bad`, and a new id is
/// written — a receiver then sees a new agent, which is the truth.
pub fn agent_id(config: &Config) -> Result<String> {
    if let Some(id) = &config.agent_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("agent_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::try_parse(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(s) => {
            let bad = config.data_dir.join("agent_id.bad");
            tracing::error!(
                path = %path.display(),
                content = %s.escape_debug(),
                moved_to = %bad.display(),
                "agent_id file does not hold an agent id (torn or damaged); moving it aside and starting a new one: receivers see a new agent from here on",
            );
            std::fs::rename(&path, &bad).map_err(|e| Error::io("move aside agent id", &path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read agent id", &path, e)),
    }
    write_new_id(&path, "write agent id")
}

/// A new random id (UUID v4), written durably to `path` (one line); `op` names the write in
/// an error.
fn write_new_id(path: &Path, op: &'static str) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    crate::durable::write_atomic(path, format!("{id}\n").as_bytes())
        .map_err(|e| Error::io(op, path, e))?;
    Ok(id)
}

/// The id of the WAL in `data_dir`, kept in `data_dir/wal_id`: a new one whenever the WAL
/// is new (nothing appended yet: its seqs start at 1), so that a receiver that remembers
/// this agent's seqs (a relay) does not take the new WAL's for ones it already has — an
/// agent whose data_dir was lost, with its `agent_id` in the config, starts again at seq 1.
pub fn wal_id(data_dir: &Path, wal: &Wal) -> Result<String> {
    let path = data_dir.join("wal_id");
    if wal.next_seq() > 1 {
        match std::fs::read_to_string(&path) {
            Ok(s) if uuid::Uuid::try_parse(s.trim()).is_ok() => return Ok(s.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read WAL id", &path, e)),
        }
    }
    write_new_id(&path, "write WAL id")
}

/// Resolves when the sink `name` has stalled: data waits, its cursor has not advanced for
/// `stall_timeout`, and it is neither backing off nor waiting on a request younger than
/// `request_timeout` (plus a margin). That is a bug or a hang; the caller restarts the
/// uploader with a fresh client. Logs the sink's state first.
async fn watchdog(
    name: &str,
    wal: &Arc<Wal>,
    metrics: &Metrics,
    stall_timeout: Duration,
    request_timeout: Duration,
) {
    let check = Duration::from_secs(1).min(stall_timeout / 2);
    loop {
        tokio::time::sleep(check).await;
        let state = metrics
            .sinks
            .lock()
            .ok()
            .and_then(|g| g.get(name).cloned())
            .unwrap_or_default();
        let idle = state
            .last_progress
            .is_none_or(|t| t.elapsed() >= stall_timeout);
        let request_hung = state
            .in_flight_since
            .is_none_or(|t| t.elapsed() >= request_timeout + Duration::from_secs(5));
        let backing_off = state
            .backoff_until
            .is_some_and(|t| t > std::time::Instant::now());
        if !idle || !request_hung || backing_off {
            continue;
        }
        let w = wal.clone();
        let cursor = tokio::task::spawn_blocking(move || w.stats())
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|s| s.cursors.into_iter().find(|c| c.name == name));
        let backlog = cursor.as_ref().map_or(0, |c| c.backlog_records);
        // Data must have waited that long too: a sink idle for an hour that just got an
        // event has made no progress "for an hour", but is not stalled.
        let waited = cursor
            .and_then(|c| c.oldest_unacked)
            .map(|t| Duration::from_nanos(crate::event::unix_nanos_now().saturating_sub(t)));
        if backlog == 0 || waited.is_none_or(|w| w < stall_timeout) {
            continue;
        }
        tracing::error!(
            sink = name,
            backlog_events = backlog,
            stalled_s = state.last_progress.map_or(0, |t| t.elapsed().as_secs()),
            request_in_flight = state.in_flight_since.is_some(),
            consecutive_failures = state.consecutive_failures,
            last_error = state.last_error.as_deref().unwrap_or(""),
            "watchdog: the uploader made no progress while data waits; restarting it"
        );
        metrics.sink_state(name, |s| s.last_progress = Some(std::time::Instant::now()));
        return;
    }
}

/// What outlives a reload: the WAL, the agent's identity, its metrics.
struct Core {
    wal: Arc<Wal>,
    metrics: Arc<Metrics>,
    agent_id: String,
    wal_id: String,
    host: String,
}

/// The sources and sinks of one configuration, running.
struct Components {
    shutdown: watch::Sender<bool>,
    sinks: JoinSet<()>,
    sources: JoinSet<()>,
    stdin_done: watch::Receiver<Option<u64>>,
    stdin_watchers: BTreeMap<String, watch::Receiver<u64>>,
    grace: Duration,
}

fn delivery_alerts(config: &Config) -> BTreeMap<String, api::DeliveryAlert> {
    config
        .sinks
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                api::DeliveryAlert {
                    alert_after: s.alert_after,
                    failed_requests: s.alert_after_failed_requests,
                },
            )
        })
        .collect()
}

/// Runs the agent until SIGTERM/SIGINT, or — with a stdin source — until stdin ended and
/// everything read from it was delivered. SIGHUP re-reads `config_path`: an invalid file is
/// logged and ignored; a valid one replaces the sources and sinks (the WAL, its cursors and
/// checkpoints carry over, so nothing is lost or read twice).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<()> {
    let nofile = crate::descriptors::raise_nofile_limit();
    tracing::debug!(nofile, "open-files limit");
    crate::durable::create_dir_all(&config.data_dir)
        .map_err(|e| Error::io("create data_dir", &config.data_dir, e))?;
    let wal_path = wal_dir(&config.data_dir);
    let opts = config.wal.clone();
    let wal = tokio::task::spawn_blocking(move || Wal::open(&wal_path, opts))
        .await
        .map_err(|e| Error::io("open WAL", "wal", std::io::Error::other(e.to_string())))??;
    let core = Core {
        wal: Arc::new(wal),
        metrics: Arc::new(Metrics::new()),
        agent_id: agent_id(&config)?,
        wal_id: String::new(),
        host: hostname(),
    };
    let core = Core {
        wal_id: wal_id(&config.data_dir, &core.wal)?,
        ..core
    };
    tracing::info!(agent_id = %core.agent_id, version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "gapless starting");

    let api_state = Arc::new(ApiState {
        ready: Default::default(),
        metrics: core.metrics.clone(),
        wal: core.wal.clone(),
        agent_id: core.agent_id.clone(),
        alerts: std::sync::Mutex::new(delivery_alerts(&config)),
    });
    let listener = tokio::net::TcpListener::bind(config.api.address)
        .await
        .map_err(|e| Error::io("bind api", config.api.address.to_string(), e))?;
    // With port 0 the kernel picks one: say which.
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(address = %bound, "api listening");
    }
    let (api_stop, mut api_stop_rx) = watch::channel(false);
    let api_task = {
        let app = api::router(api_state.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    while !*api_stop_rx.borrow_and_update() {
                        if api_stop_rx.changed().await.is_err() {
                            break;
                        }
                    }
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "API server failed");
            }
        })
    };

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut config = config;
    let mut components = start(&config, &core, &api_state)?;
    loop {
        let reload = tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); false }
            r = tokio::signal::ctrl_c() => {
                if r.is_ok() {
                    tracing::info!("SIGINT: shutting down");
                }
                false
            }
            () = stdin_delivered(&mut components) => false,
            _ = sighup.recv() => true,
        };
        if !reload {
            break;
        }
        let Some(path) = &config_path else {
            tracing::warn!("SIGHUP: no config file to re-read");
            continue;
        };
        let mut new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload: the config is invalid; keeping the running one");
                continue;
            }
        };
        // What `gapless validate` checks beyond parsing (files readable, data_dir
        // writable): a config that would not start is not applied either.
        let problems = crate::config::check_paths(&new);
        if !problems.is_empty() {
            tracing::error!(problems = %problems.join("; "), "reload: the config is invalid; keeping the running one");
            continue;
        }
        if new.data_dir != config.data_dir
            || new.api.address != config.api.address
            || new.wal != config.wal
        {
            tracing::warn!("reload: data_dir, api and wal settings take effect only after a restart; applying the rest");
            new.data_dir = config.data_dir.clone();
            new.api = config.api.clone();
            new.wal = config.wal.clone();
        }
        tracing::info!(
            sources = new.sources.len(),
            sinks = new.sinks.len(),
            "reload: applying the new config"
        );
        api_state.ready.store(false, Ordering::Release);
        stop(components).await;
        for name in config.sinks.keys().filter(|n| !new.sinks.contains_key(*n)) {
            tracing::warn!(sink = %name, "reload: sink removed; its cursor keeps its backlog until `gapless wal forget-cursor`");
        }
        config = new;
        if let Ok(mut a) = api_state.alerts.lock() {
            *a = delivery_alerts(&config);
        }
        components = start(&config, &core, &api_state)?;
    }
    api_state.ready.store(false, Ordering::Release);
    stop(components).await;
    let _ = api_stop.send(true);
    let _ = api_task.await;
    drop(api_state);
    let Core { wal, .. } = core;
    match Arc::try_unwrap(wal) {
        Ok(wal) => {
            tokio::task::spawn_blocking(move || wal.close()).await.ok();
        }
        Err(_) => tracing::debug!("WAL still referenced at exit; it syncs as the process ends"),
    }
    tracing::info!("gapless stopped");
    Ok(())
}

fn signal(kind: SignalKind) -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).map_err(|e| Error::io("install signal handler", "signal", e))
}

/// Resolves once stdin ended and every sink taking it delivered all of it; never without a
/// stdin source.
async fn stdin_delivered(c: &mut Components) {
    let last = loop {
        if let Some(last) = *c.stdin_done.borrow_and_update() {
            break last;
        }
        if c.stdin_done.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    // On a terminal, the final drain shows how far each sink got (nothing extra otherwise).
    let progress = crate::progress::bar(last, "delivering what stdin gave");
    for (sink, rx) in c.stdin_watchers.iter_mut() {
        progress.set_message(format!("sink {sink}: delivering what stdin gave"));
        loop {
            let delivered = *rx.borrow_and_update();
            progress.set_position(delivered.min(last));
            if delivered >= last || rx.changed().await.is_err() {
                break;
            }
        }
        progress.suspend(|| {
            tracing::info!(sink = %sink, last_seq = last, "everything read from stdin is delivered");
        });
    }
    progress.finish_and_clear();
}

/// Stops sources first (no new input), then sinks (in-flight requests finish within the
/// shutdown timeout; what is not delivered stays in the WAL).
async fn stop(mut c: Components) {
    let _ = c.shutdown.send(true);
    let drained = tokio::time::timeout(c.grace, async {
        while c.sources.join_next().await.is_some() {}
        while c.sinks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("stopping: some tasks did not finish in time; their work stays in the WAL");
        c.sources.abort_all();
        c.sinks.abort_all();
        while c.sources.join_next().await.is_some() {}
        while c.sinks.join_next().await.is_some() {}
    }
}

/// Starts the sinks of `config` (so their cursors exist before anything is appended), then
/// its sources; marks the agent ready once every source takes input.
fn start(config: &Config, core: &Core, api_state: &Arc<ApiState>) -> Result<Components> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let wal = &core.wal;
    let metrics = &core.metrics;
    let host = &core.host;
    let agent_id = &core.agent_id;
    let wal_id = &core.wal_id;
    let mut tasks = JoinSet::new();
    // Sinks first, so that their cursors exist before anything is appended.
    let stdin_source = config
        .sources
        .iter()
        .find(|(_, s)| matches!(s, SourceConfig::Stdin))
        .map(|(n, _)| n.clone());
    let mut stdin_watchers: BTreeMap<String, watch::Receiver<u64>> = BTreeMap::new();
    let heartbeats: HashSet<String> = config
        .sources
        .iter()
        .filter(|(_, s)| matches!(s, SourceConfig::Heartbeat { .. }))
        .map(|(n, _)| n.clone())
        .collect();
    let client_sources: HashSet<String> = config
        .sources
        .iter()
        .filter(|(_, s)| matches!(s, SourceConfig::Http(_) | SourceConfig::Gapless(_)))
        .map(|(n, _)| n.clone())
        .collect();
    let line_sources: HashSet<String> = config
        .sources
        .iter()
        .filter(|(_, s)| {
            matches!(
                s,
                SourceConfig::File(_)
                    | SourceConfig::Stdin
                    | SourceConfig::Syslog(_)
                    | SourceConfig::Journald(_)
            )
        })
        .map(|(n, _)| n.clone())
        .collect();
    for (name, sink) in &config.sinks {
        let mut inputs: HashSet<String> = sink.inputs.iter().cloned().collect();
        if !inputs.is_empty() {
            inputs.extend(heartbeats.iter().cloned());
        }
        let (delivered_tx, delivered_rx) = watch::channel(0u64);
        if let Some(stdin) = &stdin_source {
            if inputs.is_empty() || inputs.contains(stdin) {
                stdin_watchers.insert(name.clone(), delivered_rx);
            }
        }
        let name = name.clone();
        let kind = sink.kind.clone();
        let heartbeats = heartbeats.clone();
        let client_sources = client_sources.clone();
        let line_sources = line_sources.clone();
        let seq_field = sink.seq_field.clone();
        let alert_after = sink.alert_after;
        let stall_timeout = sink.stall_timeout;
        let request_timeout = sink
            .kind
            .delivery()
            .map_or(Duration::from_secs(30), |d| d.request_timeout);
        let wal = wal.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown_rx.clone();
        let agent_id = agent_id.clone();
        let wal_id = wal_id.clone();
        let dead_letter_dir = config.data_dir.join("dead-letter").join(&name);
        let shutdown_timeout = config.shutdown_timeout;
        tasks.spawn(async move {
            loop {
                let cursor = match wal.cursor(&name) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(sink = %name, error = %e, "cannot open the sink's cursor; retrying");
                        tokio::time::sleep(RESTART_PAUSE).await;
                        continue;
                    }
                };
                // Exported from the start at 0, so that an alert on their increase has a
                // series to look at before the first event.
                metrics.init_sink(&name);
                let ctx = SinkContext {
                    name: name.clone(),
                    cursor,
                    inputs: inputs.clone(),
                    agent_id: agent_id.clone(),
                    wal_id: wal_id.clone(),
                    dead_letter_dir: dead_letter_dir.clone(),
                    shutdown: shutdown.clone(),
                    shutdown_timeout,
                    metrics: metrics.clone(),
                    delivered: delivered_tx.clone(),
                    wal: wal.clone(),
                    seq_field: seq_field.clone(),
                    alert_after,
                    agent_sources: heartbeats.clone(),
                    client_sources: client_sources.clone(),
                    line_sources: line_sources.clone(),
                };
                let run = sinks::run(ctx, &kind);
                let result = tokio::select! {
                    r = run => r,
                    () = watchdog(&name, &wal, &metrics, stall_timeout, request_timeout) => {
                        metrics.sink_watchdog_restarts.get_or_create(&crate::metrics::SinkLabel { sink: name.clone() }).inc();
                        continue;
                    }
                };
                if *shutdown.borrow() {
                    return;
                }
                match result {
                    Ok(()) => tracing::warn!(sink = %name, "sink stopped unexpectedly; restarting"),
                    Err(e) => tracing::error!(sink = %name, error = %e, "sink failed; restarting"),
                }
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        });
    }

    let (stdin_done_tx, stdin_done_rx) = watch::channel::<Option<u64>>(None);
    let mut source_tasks = JoinSet::new();
    let mut started = Vec::new();
    let file_sources = config
        .sources
        .values()
        .filter(|s| matches!(s, SourceConfig::File(_)))
        .count();
    let nofile = crate::descriptors::nofile_limit();
    let reserved = Arc::new(ReservedFields::from_config(config));
    for (name, source) in &config.sources {
        let mut source = source.clone();
        if let SourceConfig::File(c) = &mut source {
            c.max_open_files.get_or_insert_with(|| {
                crate::descriptors::default_max_open_files(nofile, file_sources)
            });
        }
        let state_dir = config.data_dir.join("sources").join(name);
        crate::durable::create_dir_all(&state_dir)
            .map_err(|e| Error::io("create source state dir", &state_dir, e))?;
        let ctx = SourceContext {
            name: name.clone(),
            appender: wal.appender(),
            encoder: EventEncoder::new(name, host).with_reserved(reserved.clone()),
            state_dir,
            shutdown: shutdown_rx.clone(),
            metrics: metrics.clone(),
            started: Arc::new(watch::channel(false).0),
        };
        started.push(ctx.started.subscribe());
        let stdin_done = stdin_done_tx.clone();
        let wal = wal.clone();
        let agent_id = agent_id.clone();
        source_tasks.spawn(async move {
            loop {
                let result = match &source {
                    SourceConfig::File(c) => sources::file::run(ctx.clone(), c.clone()).await,
                    SourceConfig::Http(c) => sources::http::run(ctx.clone(), c.clone()).await,
                    SourceConfig::Gapless(c) => sources::relay::run(ctx.clone(), c.clone(), wal.clone()).await,
                    SourceConfig::Journald(c) => sources::journald::run(ctx.clone(), c.clone()).await,
                    SourceConfig::Syslog(c) => sources::syslog::run(ctx.clone(), c.clone()).await,
                    SourceConfig::Stdin => sources::stdin::run(ctx.clone(), stdin_done.clone()).await,
                    SourceConfig::Heartbeat { interval } => {
                        sources::heartbeat::run(ctx.clone(), *interval, wal.clone(), agent_id.clone()).await
                    }
                };
                if ctx.stopping() {
                    return;
                }
                match result {
                    Ok(()) => tracing::warn!(source = %ctx.name, "source stopped unexpectedly; restarting"),
                    Err(e) => tracing::error!(source = %ctx.name, error = %e, "source failed; restarting"),
                }
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        });
    }
    {
        // Ready once every source takes input (an http source listens, a file source has
        // scanned its globs), so that "ready" never means "connection refused".
        let api_state = api_state.clone();
        let (n_sources, n_sinks, api) =
            (config.sources.len(), config.sinks.len(), config.api.address);
        source_tasks.spawn(async move {
            for mut s in started {
                while !*s.borrow_and_update() {
                    if s.changed().await.is_err() {
                        return;
                    }
                }
            }
            api_state.ready.store(true, Ordering::Release);
            tracing::info!(sources = n_sources, sinks = n_sinks, api = %api, "gapless running");
        });
    }

    Ok(Components {
        shutdown: shutdown_tx,
        sinks: tasks,
        sources: source_tasks,
        stdin_done: stdin_done_rx,
        stdin_watchers,
        grace: config.shutdown_timeout + Duration::from_secs(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config::parse(&format!(
            "data_dir = {:?}\n[sources.s]\ntype = \"stdin\"\n[sinks.c]\ntype = \"console\"\n",
            dir.display().to_string()
        ))
        .unwrap()
    }

    #[test]
    fn the_agent_id_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let first = agent_id(&config).unwrap();
        assert!(uuid::Uuid::try_parse(&first).is_ok());
        assert_eq!(agent_id(&config).unwrap(), first);
        assert!(!dir.path().join("agent_id.tmp").exists());
    }

    #[test]
    fn a_torn_agent_id_is_not_used_but_moved_aside_and_replaced() {
        // What a power cut left under an older version: a prefix of the id.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent_id"), "cbe9").unwrap();
        let config = config_in(dir.path());
        let id = agent_id(&config).unwrap();
        assert_ne!(id, "cbe9");
        assert!(uuid::Uuid::try_parse(&id).is_ok());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("agent_id.bad")).unwrap(),
            "cbe9"
        );
        assert_eq!(agent_id(&config).unwrap(), id);
        // An empty file (the rename survived, the data did not) is replaced too.
        std::fs::write(dir.path().join("agent_id"), "").unwrap();
        let again = agent_id(&config).unwrap();
        assert!(uuid::Uuid::try_parse(&again).is_ok());
    }
}
