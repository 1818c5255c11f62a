//! Storage faults under the running agent, injected by durafs under data_dir
//! ([`DuraMount`]): `EIO` on the WAL's `fdatasync`, and `ENOSPC` at each step that takes
//! space — WAL segments, their creation, the sink's cursor, the file source's checkpoint
//! (its write and its rename), the dead-letter queue. Each time: the source does not
//! acknowledge what is not durable (the http source answers 5xx, the file source reads the
//! lines again), the agent says what failed and keeps running (no crash loop), and once the
//! fault clears everything acknowledged arrives, with no hole in the stream — also after a
//! power cut that follows.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gapless::continuity::check;

use crate::harness::capture::received_batches;
use crate::harness::duramount::{seed_from_env, CutMode, Fault};
use crate::harness::snippets::{file_source, http_sink, http_source};
use crate::harness::*;

const SEED_ENV: &str = "GAPLESS_STORAGE_FAULT_SEED";

/// Posts to the http source and writes to the followed file, keeping what was answered.
struct Load {
    ingest: Ingest,
    log: LogFile,
    posts: usize,
    /// Lines answered 200.
    acked: Vec<String>,
    /// Lines answered anything else, by status (0: no answer).
    refused: Vec<(u16, String)>,
    /// Lines written to the followed file.
    written: Vec<String>,
}

impl Load {
    /// Posts a few lines and appends a few to the file, every few milliseconds, for `time`.
    async fn run(&mut self, tag: &str, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            let lines = numbered_lines(&format!("sf-http {tag} p{}", self.posts), 0, 3);
            self.posts += 1;
            match self.ingest.post_lines(&lines).await {
                Ok(a) if a.status == 200 => self.acked.extend(lines),
                Ok(a) => self
                    .refused
                    .extend(lines.into_iter().map(|l| (a.status, l))),
                Err(_) => self.refused.extend(lines.into_iter().map(|l| (0, l))),
            }
            let lines = numbered_lines(&format!("sf-file {tag}"), self.written.len(), 2);
            self.log.append(&lines);
            self.written.extend(lines);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every line that must arrive: answered 200, or written to the file.
    fn expected(&self) -> Vec<String> {
        self.acked.iter().chain(&self.written).cloned().collect()
    }
}

/// Panics unless the agent still runs and answers `/health`.
async fn assert_alive(agent: &mut Agent, ctx: &str) {
    assert!(agent.is_running(), "{ctx}: the agent exited");
    let (status, body) = agent.api_get("/health").await;
    assert_eq!(status, 200, "{ctx}: /health: {body}");
}

/// Panics on a hole without a gap record, or on any gap record (nothing was dropped).
fn assert_whole(receiver: &Receiver, ctx: &str) {
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty() && report.gaps.is_empty(),
        "{ctx}: missing {:?}, gap records {:?}",
        report.missing,
        report.gaps
    );
}

struct Rig {
    mount: DuraMount,
    receiver: Receiver,
    agent: Agent,
    load: Load,
}

async fn rig(name: &str) -> Rig {
    let seed = seed_from_env(SEED_ENV);
    eprintln!("{name}: seed {seed} (set {SEED_ENV}={seed} to replay the cut)");
    let mount = DuraMount::new(seed);
    let receiver = Receiver::start(Mode::Ok).await;
    let port = free_port();
    let builder = Agent::builder().data_dir(&mount.join("data"));
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = LogFile::create(&logs.join("app.log"));
    let agent = builder
        .config(&format!(
            "[wal]\nsegment_bytes = \"64KiB\"\n{}{}{}",
            file_source("app", &logs.join("*.log"), ""),
            http_source("web", port, ""),
            http_sink(&receiver.url(), &[], 50, "")
        ))
        .listening_on(port)
        .start()
        .await;
    Rig {
        mount,
        receiver,
        agent,
        load: Load {
            ingest: Ingest::new(port),
            log,
            posts: 0,
            acked: Vec::new(),
            refused: Vec::new(),
            written: Vec::new(),
        },
    }
}

impl Rig {
    /// Waits for every expected line, checks the stream, then cuts the power, starts the
    /// agent again and checks that nothing acknowledged went missing with the cut.
    async fn finish(mut self, ctx: &str) -> Self {
        self.receiver
            .wait_for_lines(&self.load.expected(), DELIVERY)
            .await;
        assert_whole(&self.receiver, ctx);
        self.agent.kill9();
        self.mount.cut(CutMode::Pages);
        self.mount.remount();
        self.agent.restart().await;
        self.load
            .run("after the cut", Duration::from_millis(200))
            .await;
        self.receiver
            .wait_for_lines(&self.load.expected(), DELIVERY)
            .await;
        assert_whole(&self.receiver, ctx);
        self
    }
}

// Fault: EIO on fdatasync of the WAL's segments, several times in a row (a failing disk);
// each failed sync loses the data it covered. The http source must not answer 200 for what
// was not made durable, and those lines must never turn up later as if they had been; the
// file source must read its lines again rather than checkpoint past them.
#[tokio::test(flavor = "multi_thread")]
async fn eio_on_the_wal_fdatasync_fails_the_posts_it_covered_and_loses_no_acknowledged_line() {
    let ctx = "EIO on the WAL's fdatasync";
    let mut rig = rig(ctx).await;
    rig.load.run("before", Duration::from_millis(200)).await;
    rig.mount.inject(Fault::FsyncEio {
        count: 6,
        path: Some(".seg".into()),
    });
    let started = Instant::now();
    while rig.mount.faults_fired() < 6 {
        rig.load.run("during", Duration::from_millis(50)).await;
        assert!(
            started.elapsed() < SHORT,
            "{ctx}: only {} of 6 faults fired",
            rig.mount.faults_fired()
        );
    }
    rig.load.run("after", Duration::from_millis(300)).await;
    assert_alive(&mut rig.agent, ctx).await;
    let statuses: BTreeSet<u16> = rig.load.refused.iter().map(|(s, _)| *s).collect();
    assert!(
        statuses.iter().any(|s| *s >= 500),
        "{ctx}: no post was refused with a 5xx: {statuses:?}"
    );
    let rig = rig.finish(ctx).await;
    let arrived: BTreeSet<String> = lines_in(&rig.receiver.events()).into_iter().collect();
    let resurrected: Vec<&String> = rig
        .load
        .refused
        .iter()
        .map(|(_, l)| l)
        .filter(|l| arrived.contains(*l))
        .collect();
    assert!(
        resurrected.is_empty(),
        "{ctx}: {} lines whose post failed arrived all the same (first {:?})",
        resurrected.len(),
        resurrected.first()
    );
    assert!(
        rig.agent.stderr_text().contains("fdatasync"),
        "{ctx}: the agent's log does not name the failed fdatasync"
    );
}

// Fault: the file system under data_dir is full for one step at a time — the WAL's segment
// writes, the creation of a new segment, the sink's cursor file, the file checkpoint's
// temporary file, its rename and its live file. Each while the sources take input and the sink delivers.
#[tokio::test(flavor = "multi_thread")]
async fn enospc_at_each_step_is_reported_recovered_from_and_loses_no_acknowledged_line() {
    let ctx = "ENOSPC at each step";
    let mut rig = rig(ctx).await;
    rig.load.run("before", Duration::from_millis(200)).await;
    let steps = [
        ("WAL segment writes", ".seg", "disk full"),
        (
            "WAL segment creation",
            ".seg.tmp",
            "could not start a new segment",
        ),
        ("sink cursor", "out.cursor", "write cursor"),
        (
            "checkpoint write",
            "checkpoints.json.tmp",
            "cannot write checkpoints",
        ),
        (
            "checkpoint rename",
            "checkpoints.json$",
            "cannot write checkpoints",
        ),
        (
            "checkpoint live file",
            "checkpoints.live.json",
            "cannot write checkpoints",
        ),
    ];
    for (step, path, says) in steps {
        let fired = rig.mount.faults_fired();
        rig.mount.inject(Fault::Enospc {
            on: true,
            path: Some(path.into()),
        });
        // Half a second of load at least, and until the fault fired (a new segment is
        // created only every 64 KiB).
        let started = Instant::now();
        rig.load.run(step, Duration::from_millis(500)).await;
        while rig.mount.faults_fired() == fired {
            assert!(
                started.elapsed() < SHORT,
                "{ctx}: {step}: the fault never fired"
            );
            rig.load.run(step, Duration::from_millis(100)).await;
        }
        assert_alive(&mut rig.agent, step).await;
        rig.mount.inject(Fault::Clear);
        rig.load
            .run(&format!("{step} cleared"), Duration::from_millis(200))
            .await;
        rig.receiver
            .wait_for_lines(&rig.load.expected(), DELIVERY)
            .await;
        assert!(
            says.is_empty() || rig.agent.stderr_text().contains(says),
            "{ctx}: {step}: the agent's log does not say {says:?}"
        );
    }
    assert!(
        rig.load.refused.iter().any(|(s, _)| *s == 503),
        "{ctx}: the http source never answered 503 while the WAL's disk was full"
    );
    rig.finish(ctx).await;
}

// Fault: the receiver rejects every batch for good (400) while the dead-letter queue's file
// system is full. A batch may move past the cursor only once it is safely in the queue: until
// then the sink holds it (and says why), and once space returns it is stored and announced.
#[tokio::test(flavor = "multi_thread")]
async fn enospc_in_the_dead_letter_queue_holds_the_batch_until_it_is_stored_and_announced() {
    let ctx = "ENOSPC in the dead-letter queue";
    let mount = DuraMount::new(seed_from_env(SEED_ENV));
    let receiver = Receiver::start(Mode::RejectEvents { status: 400 }).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .data_dir(&mount.join("data"))
        .config(&format!(
            "{}{}",
            http_source("web", port, ""),
            http_sink(&receiver.url(), &[], 10, "")
        ))
        .listening_on(port)
        .start()
        .await;
    mount.inject(Fault::Enospc {
        on: true,
        path: Some("dead-letter".into()),
    });
    let lines = numbered_lines("sf-dead-letter", 0, 25);
    Ingest::new(port).post_ok(&lines).await;
    wait_until(SHORT, "a dead-letter write to fail", async || {
        mount.faults_fired() > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_alive(&mut agent, ctx).await;
    let status = agent.status_json().await;
    let sink = &status["sinks"]["out"];
    assert_eq!(
        sink["acked_seq"], 0,
        "{ctx}: the cursor moved past batches that are neither delivered nor stored: {sink}"
    );
    assert!(
        sink["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("dead-letter")),
        "{ctx}: the sink does not say why it holds the batch: {sink}"
    );
    mount.inject(Fault::Clear);
    wait_until(
        SHORT,
        "dead_letter gap events for all 25 seqs",
        async || {
            let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
            report.missing.is_empty() && report.last_seq >= Some(25)
        },
    )
    .await;
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.gaps.iter().all(|g| g.reason == "dead_letter"),
        "{ctx}: {:?}",
        report.gaps
    );
    let stored: usize = std::fs::read_dir(mount.join("data/dead-letter/out"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ndjson"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert_eq!(stored, 25, "{ctx}: events in the dead-letter queue");
    assert!(
        agent.stderr_text().contains("dead-letter"),
        "{ctx}: the agent's log does not name the dead-letter failure"
    );
}
