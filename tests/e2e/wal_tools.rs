//! `gapless wal verify|inspect|dump` on the WAL the agent leaves: they change no file (not
//! even of a killed agent's WAL, whose active segment ends in reserved zeros), refuse while
//! the agent runs, and name lost seqs only where the WAL shows records existed — bytes in
//! the reserved zeros are a dirty tail, and the agent started on it sends no gap for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use gapless::continuity::check;
use serde_json::Value;

use crate::harness::agent::run_command;
use crate::harness::capture::{event_seqs, gap_events, gap_range, received_batches};
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

/// Every file of a directory by name: length, modification time, bytes; and the
/// directory's own modification time.
struct Snapshot {
    dir_mtime: SystemTime,
    files: BTreeMap<String, (u64, SystemTime, Vec<u8>)>,
}

fn snapshot(dir: &Path) -> Snapshot {
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                (
                    meta.len(),
                    meta.modified().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                ),
            )
        })
        .collect();
    Snapshot {
        dir_mtime: std::fs::metadata(dir).unwrap().modified().unwrap(),
        files,
    }
}

fn assert_unchanged(before: &Snapshot, dir: &Path, what: &str) {
    let after = snapshot(dir);
    assert_eq!(
        before.files.keys().collect::<Vec<_>>(),
        after.files.keys().collect::<Vec<_>>(),
        "{what} changed the WAL directory's listing"
    );
    for (name, (len, mtime, bytes)) in &before.files {
        let (len2, mtime2, bytes2) = &after.files[name];
        assert_eq!(len, len2, "{what} changed the size of {name}");
        assert_eq!(mtime, mtime2, "{what} changed the mtime of {name}");
        assert!(bytes == bytes2, "{what} changed the bytes of {name}");
    }
    assert_eq!(
        before.dir_mtime, after.dir_mtime,
        "{what} changed the WAL directory"
    );
}

/// `gapless wal <command> --data-dir <data_dir>`.
fn wal_command(command: &str, data_dir: &Path) -> (ExitStatus, String, String) {
    run_command(&[
        "wal".as_ref(),
        command.as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ])
}

/// The WAL's segment files, oldest first.
fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// The first seq of a segment, from its file name.
fn first_seq(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap()
}

/// The `seqs a..=b lost` ranges in `wal verify`'s output.
fn lost_ranges(stdout: &str) -> Vec<(u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("seqs ")?;
            let (a, rest) = rest.split_once("..=")?;
            let z = rest.split_whitespace().next()?;
            Some((a.parse().ok()?, z.parse().ok()?))
        })
        .collect()
}

/// The records `wal dump` prints.
fn dumped(data_dir: &Path) -> Vec<Value> {
    let (status, out, err) = wal_command("dump", data_dir);
    assert_eq!(status.code(), Some(0), "wal dump exited {status}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An agent with an http source (on the port returned) and a sink to a platform that
/// answers 503, so that everything posted stays in the WAL; `count` lines posted (each
/// answered once durable).
async fn agent_with_backlog(prefix: &str, count: usize, wal_table: &str) -> (Agent, Receiver, u16) {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .top("shutdown_timeout = \"2s\"")
        .config(&format!(
            "{wal_table}\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 500, "")
        ))
        .start()
        .await;
    let lines = numbered_lines(prefix, 0, count);
    let ingest = Ingest::new(port);
    for chunk in lines.chunks(250) {
        ingest.post_ok(chunk).await;
    }
    (agent, receiver, port)
}

/// Lets the platform take everything and waits until the seqs `1..=last` each arrived or
/// were named by a gap event.
async fn deliver_everything(receiver: &Receiver, last: u64) {
    receiver.set_mode(Mode::Ok);
    wait_until(DELIVERY, "every seq delivered or described", async || {
        let events = receiver.events();
        let described: u64 = events
            .iter()
            .filter(|e| e["gapless"] == "gap")
            .map(|g| {
                let (a, z) = gap_range(g);
                z - a + 1
            })
            .sum();
        event_seqs(&events, "seq").len() as u64 + described >= last
    })
    .await;
}

// Crash: kill -9 of the agent while its WAL holds a backlog; the active segment keeps the
// zeros reserved ahead of the appender. Then the read-only commands look at it.
#[tokio::test(flavor = "multi_thread")]
async fn wal_verify_inspect_and_dump_change_no_file_of_a_wal_left_by_a_killed_agent() {
    let (mut agent, _receiver, _) = agent_with_backlog("killed", 1_000, "").await;
    agent.kill9();
    let wal = agent.data_dir().join("wal");
    let before = snapshot(&wal);

    let (verify, out, err) = wal_command("verify", agent.data_dir());
    assert_eq!(
        verify.code(),
        Some(0),
        "wal verify on an intact WAL exited {verify}; stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !out.contains("lost") && !out.contains("DAMAGED"),
        "wal verify reports a loss on an intact WAL:\n{out}"
    );
    assert!(out.contains("1000 intact records"), "{out}");

    let (inspect, out, err) = wal_command("inspect", agent.data_dir());
    assert_eq!(
        inspect.code(),
        Some(0),
        "wal inspect exited {inspect}: {err}"
    );
    let inspected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["last_seq"], 1000, "{inspected:#}");
    let on_disk: u64 = before
        .files
        .iter()
        .filter(|(name, _)| name.ends_with(".seg"))
        .map(|(_, (len, ..))| len)
        .sum();
    assert!(
        on_disk > inspected["bytes"].as_u64().unwrap(),
        "the killed agent left no reserved zeros ({on_disk} bytes on disk, {inspected:#}): \
         this test would prove nothing"
    );

    let records = dumped(agent.data_dir());
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert!(records.iter().all(|r| r["kind"] == "event"));

    assert_unchanged(&before, &wal, "wal verify, inspect and dump");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_commands_refuse_while_the_agent_runs_and_change_nothing() {
    let (agent, receiver, _) = agent_with_backlog("running", 300, "").await;
    let wal = agent.data_dir().join("wal");
    let before = snapshot(&wal);
    for (command, code) in [("verify", 2), ("inspect", 1), ("dump", 1)] {
        let (status, out, err) = wal_command(command, agent.data_dir());
        assert_eq!(
            status.code(),
            Some(code),
            "wal {command} while the agent runs exited {status}; stdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            err.contains("in use") && err.contains(&wal.display().to_string()),
            "wal {command} should say the WAL is in use: {err}"
        );
        assert!(out.is_empty(), "wal {command} printed {out}");
    }
    assert_unchanged(&before, &wal, "refused wal commands");

    deliver_everything(&receiver, 300).await;
    let events = receiver.events();
    assert_eq!(event_seqs(&events, "seq").len(), 300);
    assert!(gap_events(&events, "wal_corrupt").is_empty());
}

// Damage: the example — one zero byte in the reserved zeros after the last record
// of a killed agent's active segment changed (stray write, bit rot). It holds no record.
#[tokio::test(flavor = "multi_thread")]
async fn one_byte_set_in_the_reserved_zeros_is_a_dirty_tail_and_no_gap_reaches_the_platform() {
    let (mut agent, receiver, port) = agent_with_backlog("padding", 1_000, "").await;
    agent.kill9();
    let wal = agent.data_dir().join("wal");
    let segs = segments(&wal);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let active = &segs[0];
    let (_, out, _) = wal_command("inspect", agent.data_dir());
    let inspected: Value = serde_json::from_str(&out).unwrap();
    let data_end = inspected["bytes"].as_u64().unwrap();
    let file_len = std::fs::metadata(active).unwrap().len();
    assert!(
        file_len > data_end + 2000,
        "no reserved zeros: {file_len} bytes, data {data_end}"
    );
    let original = std::fs::read(active).unwrap();
    assert!(original[data_end as usize..].iter().all(|&b| b == 0));

    for offset in [data_end, data_end + 16, data_end + 1000, file_len - 1] {
        let mut bytes = original.clone();
        bytes[offset as usize] = 0x01;
        std::fs::write(active, &bytes).unwrap();
        let before = snapshot(&wal);
        let (verify, out, err) = wal_command("verify", agent.data_dir());
        assert_eq!(
            verify.code(),
            Some(0),
            "byte at {offset}: wal verify exited {verify}; stdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            !out.contains("lost") && lost_ranges(&out).is_empty(),
            "byte at {offset}: wal verify names lost seqs the WAL never held:\n{out}"
        );
        assert!(
            out.contains("dirty tail") && out.contains("1000 intact records"),
            "byte at {offset}: wal verify should report a dirty tail:\n{out}"
        );
        let records = dumped(agent.data_dir());
        assert!(
            records.iter().all(|r| r["kind"] == "event"),
            "byte at {offset}: wal dump shows a gap record: {:?}",
            records.iter().find(|r| r["kind"] != "event")
        );
        assert_eq!(records.last().unwrap()["seq"], 1000);
        assert_unchanged(&before, &wal, "wal verify and dump");
    }

    // The agent starts on it (the last case: the file's last byte set), cuts the tail and
    // carries on at seq 1001.
    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    deliver_everything(&receiver, 1000).await;
    assert!(
        std::fs::metadata(active).unwrap().len() < file_len,
        "the agent should have cut the dirty tail"
    );
    Ingest::new(port)
        .post_ok(&numbered_lines("after", 0, 1))
        .await;
    wait_until(SHORT, "seq 1001 to arrive", async || {
        event_seqs(&receiver.events(), "seq").contains(&1001)
    })
    .await;
    let events = receiver.events();
    let gaps: Vec<&Value> = events.iter().filter(|e| e["gapless"] == "gap").collect();
    assert!(
        gaps.is_empty(),
        "a false gap reached the platform: {gaps:?}"
    );
    assert_eq!(
        event_seqs(&events, "seq"),
        (1..=1001).collect(),
        "every seq arrives, and the new record continues after the last one"
    );
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty() && report.gaps.is_empty(),
        "{report:?}"
    );
}

/// A stopped agent's WAL of `count` events in 64 KiB segments, the platform down.
async fn sealed_segments(prefix: &str, count: usize) -> (Agent, Receiver, Vec<PathBuf>) {
    let (mut agent, receiver, _) =
        agent_with_backlog(prefix, count, "[wal]\nsegment_bytes = \"64KiB\"").await;
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status} after SIGTERM");
    let segs = segments(&agent.data_dir().join("wal"));
    assert!(segs.len() >= 4, "{segs:?}");
    (agent, receiver, segs)
}

// Damage: a segment header overwritten while the agent is stopped. The header holds no
// record: nothing is lost, and the records are read by the file name's first seq.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_segment_header_costs_no_event_and_wal_verify_names_it() {
    let (mut agent, receiver, segs) = sealed_segments("header", 3_000).await;
    let victim = &segs[segs.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[..32].fill(0);
    std::fs::write(victim, &bytes).unwrap();

    let (verify, out, err) = wal_command("verify", agent.data_dir());
    assert_eq!(
        verify.code(),
        Some(1),
        "wal verify on a damaged header exited {verify}; stdout:\n{out}\nstderr:\n{err}"
    );
    let victim_name = victim.display().to_string();
    assert!(
        out.lines()
            .any(|l| l.contains("header") && l.contains(&victim_name)),
        "wal verify does not name the damaged header:\n{out}"
    );
    assert!(lost_ranges(&out).is_empty(), "no seq is lost:\n{out}");

    agent.restart().await;
    deliver_everything(&receiver, 3000).await;
    let events = receiver.events();
    let gaps: Vec<&Value> = events.iter().filter(|e| e["gapless"] == "gap").collect();
    assert!(gaps.is_empty(), "a damaged header cost events: {gaps:?}");
    assert_eq!(event_seqs(&events, "seq"), (1..=3000).collect());
}

// Damage: the very end of a sealed segment (its last record) changed, cut short, or bytes
// added after it, while the agent is stopped. The lost seqs are bounded by evidence: the
// intact record before and the next segment's first seq, from its file name.
#[tokio::test(flavor = "multi_thread")]
async fn damage_at_the_end_of_a_sealed_segment_costs_exactly_its_last_record() {
    let (mut agent, receiver, segs) = sealed_segments("sealed-end", 3_000).await;
    let victim = &segs[segs.len() / 2];
    let last = first_seq(&segs[segs.len() / 2 + 1]) - 1;
    let original = std::fs::read(victim).unwrap();
    let n = original.len();
    let mut flipped = original.clone();
    flipped[n - 1] ^= 0x10;
    let cut = original[..n - 10].to_vec();
    let mut extended = original.clone();
    extended.extend_from_slice(&[0x5A; 50]);
    for (what, bytes, lost) in [
        ("bytes added after the last record", extended, vec![]),
        ("the last 10 bytes cut off", cut, vec![(last, last)]),
        ("the last byte flipped", flipped, vec![(last, last)]),
    ] {
        std::fs::write(victim, &bytes).unwrap();
        let (verify, out, err) = wal_command("verify", agent.data_dir());
        assert_eq!(
            verify.code(),
            Some(1),
            "{what}: wal verify exited {verify}; stdout:\n{out}\nstderr:\n{err}"
        );
        assert_eq!(lost_ranges(&out), lost, "{what}:\n{out}");
    }

    // The last case stays: the agent sends exactly that record's seq as a wal_corrupt gap.
    agent.restart().await;
    deliver_everything(&receiver, 3000).await;
    let events = receiver.events();
    let gaps: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["gapless"] == "gap")
        .map(|g| {
            assert_eq!(g["reason"], "wal_corrupt", "{g}");
            gap_range(g)
        })
        .collect();
    assert_eq!(gaps, vec![(last, last)]);
    let arrived = event_seqs(&events, "seq");
    let missing: Vec<u64> = (1..=3000).filter(|s| !arrived.contains(s)).collect();
    assert_eq!(missing, vec![last]);
}
