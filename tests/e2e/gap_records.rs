//! Gap records: what the WAL loses — segments deleted by `when_full = "drop_oldest"`, bytes
//! damaged in a sealed segment — reaches the platform in the stream as gap events naming
//! the lost seq range, so that the continuity checker finds no hole that is not described.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use gapless::continuity::check;
use serde_json::Value;

use crate::harness::agent::{run_command, wait_for_status};
use crate::harness::capture::{event_seqs, gap_events, gap_range, received_batches};
use crate::harness::snippets::{http_sink, http_source};
use crate::harness::*;

/// The WAL's segment files, oldest first.
fn segments(data_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_oldest_overflow_leaves_no_hole_that_a_gap_record_does_not_describe() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "[wal]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\nwhen_full = \"drop_oldest\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 500, "")
        ))
        .start()
        .await;
    // About 3 MiB of events into a 1 MiB WAL while nothing can be delivered.
    let lines = numbered_lines("drop-oldest", 0, 12_000);
    let ingest = Ingest::new(port);
    for chunk in lines.chunks(500) {
        ingest.post_ok(chunk).await;
    }
    let last_seq = lines.len() as u64;
    wait_for_status(&agent, "the WAL dropping its oldest records", |s| {
        s["wal"]["dropped_oldest_records"].as_u64() > Some(0)
    })
    .await;

    receiver.set_mode(Mode::Ok);
    wait_until(DELIVERY, "the stream to reach the last seq", async || {
        let batches = received_batches(&receiver.requests());
        batches
            .iter()
            .filter_map(|b| b.seq_range)
            .any(|(_, z)| z >= last_seq)
    })
    .await;
    let status = wait_for_status(&agent, "an empty backlog", |s| {
        s["sinks"]["out"]["backlog_events"] == 0
    })
    .await;

    let events = receiver.events();
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(
        report.missing.is_empty(),
        "seqs missing without a gap record after a drop_oldest overflow: {:?}; gaps: {:?}",
        report.missing,
        report.gaps
    );
    let gaps = gap_events(&events, "wal_full_drop_oldest");
    assert!(
        !gaps.is_empty(),
        "no wal_full_drop_oldest gap event arrived; gaps seen: {:?}",
        report.gaps
    );
    for g in &report.gaps {
        assert_eq!(g.reason, "wal_full_drop_oldest", "an unexpected gap: {g:?}");
    }
    for g in &gaps {
        let (a, z) = gap_range(g);
        assert_eq!(
            g["events"].as_u64(),
            Some(z - a + 1),
            "a gap event's events do not match its range: {g}"
        );
    }
    // Every seq either arrived as an event or lies inside a gap record (the batch headers
    // are not counted: only what a receiver can hold in its hand). A batch read before its
    // segment was dropped may still be delivered, so a seq may be both: a duplicate, not a
    // hole.
    let mut arrived = event_seqs(&events, "seq");
    let lines_arrived = arrived.len();
    // A gap record holds a seq of its own.
    arrived.extend(gaps.iter().filter_map(|g| g["seq"].as_u64()));
    let dropped: BTreeSet<u64> = gaps
        .iter()
        .flat_map(|g| {
            let (a, z) = gap_range(g);
            a..=z
        })
        .collect();
    let highest = *arrived.iter().max().unwrap();
    assert!(highest >= last_seq, "the stream ends at {highest}");
    let holes: Vec<u64> = (1..=highest)
        .filter(|s| !arrived.contains(s) && !dropped.contains(s))
        .collect();
    assert!(
        holes.is_empty(),
        "{} seqs neither arrived nor lie in a gap record: {:?}; gap records: {:?}; batch ranges: {:?}",
        holes.len(),
        holes,
        gaps,
        received_batches(&receiver.requests())
            .iter()
            .filter_map(|b| b.seq_range)
            .collect::<Vec<_>>()
    );
    assert!(
        lines_arrived < lines.len(),
        "{} of {} events arrived: nothing was dropped?",
        lines_arrived,
        lines.len()
    );

    let dropped_metric = agent
        .metric(
            "gapless_dropped_events_total",
            &[("reason", "wal_full_drop_oldest")],
        )
        .await
        .expect("gapless_dropped_events_total{reason=\"wal_full_drop_oldest\"} is exported");
    let dropped_status = status["wal"]["dropped_oldest_records"]
        .as_u64()
        .expect("/status wal.dropped_oldest_records");
    assert_eq!(
        dropped_metric, dropped_status as f64,
        "the metric counts what the WAL dropped"
    );
    // drop_oldest removes whole oldest segments: the dropped seqs are 1..=dropped_status.
    // Each of them was delivered before its segment went (read into a batch in memory) or is
    // named by a gap record, and no gap record names a seq that was not dropped.
    assert!(dropped_status > 0);
    assert_eq!(
        dropped.iter().max().copied(),
        Some(dropped_status),
        "gap records name exactly the dropped prefix"
    );
    let named_or_delivered = (1..=dropped_status)
        .filter(|s| dropped.contains(s) || arrived.contains(s))
        .count() as u64;
    assert_eq!(named_or_delivered, dropped_status);
    let gap_metric = agent
        .metric(
            "gapless_gap_records_total",
            &[("reason", "wal_full_drop_oldest")],
        )
        .await;
    assert!(
        gap_metric >= Some(1.0),
        "gapless_gap_records_total{{reason=\"wal_full_drop_oldest\"}} = {gap_metric:?}"
    );
}

// Damage: a run of bytes in the middle of a sealed segment is overwritten while the agent
// is stopped (bit rot, a bad block): the records it overlaps are lost, the rest must arrive.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_sealed_segment_reaches_the_platform_as_a_wal_corrupt_gap_of_exactly_the_lost_seqs(
) {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .listening_on(port)
        .top("shutdown_timeout = \"2s\"")
        .config(&format!(
            "[wal]\nsegment_bytes = \"64KiB\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 500, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("corrupt", 0, 3_000);
    let ingest = Ingest::new(port);
    for chunk in lines.chunks(250) {
        ingest.post_ok(chunk).await;
    }
    let last_seq = lines.len() as u64;
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status} after SIGTERM");

    let segs = segments(agent.data_dir());
    assert!(
        segs.len() >= 4,
        "{} segments for {} lines of 64 KiB segments: {segs:?}",
        segs.len(),
        lines.len()
    );
    // Neither the oldest (the cursor's) nor the newest (active) one.
    let victim = &segs[segs.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at..at + 300].fill(0x5A);
    std::fs::write(victim, &bytes).unwrap();

    let (verify, stdout, stderr) = run_command(&[
        "wal".as_ref(),
        "verify".as_ref(),
        "--data-dir".as_ref(),
        agent.data_dir().as_os_str(),
    ]);
    assert_eq!(
        verify.code(),
        Some(1),
        "wal verify on a damaged WAL exited {verify}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let reported: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("seqs ")?;
            let (a, rest) = rest.split_once("..=")?;
            let z = rest.split_whitespace().next()?;
            Some((a.parse().ok()?, z.parse().ok()?))
        })
        .collect();
    assert_eq!(
        reported.len(),
        1,
        "wal verify should report one lost range:\n{stdout}"
    );

    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    wait_until(DELIVERY, "every seq delivered or described", async || {
        let events = receiver.events();
        let described: u64 = gap_events(&events, "wal_corrupt")
            .iter()
            .map(|g| {
                let (a, z) = gap_range(g);
                z - a + 1
            })
            .sum();
        event_seqs(&events, "seq").len() as u64 + described >= last_seq
    })
    .await;

    let events = receiver.events();
    let arrived = event_seqs(&events, "seq");
    let lost: Vec<u64> = (1..=last_seq).filter(|s| !arrived.contains(s)).collect();
    let gaps = gap_events(&events, "wal_corrupt");
    assert_eq!(
        gaps.len(),
        1,
        "one wal_corrupt gap event for one damaged run: {gaps:?}"
    );
    let (first, last) = gap_range(&gaps[0]);
    assert!(!lost.is_empty(), "the damage cost no record?");
    assert_eq!(
        (first, last),
        (lost[0], *lost.last().unwrap()),
        "the wal_corrupt gap {} vs the seqs that did not arrive {lost:?}",
        gaps[0]
    );
    assert_eq!(
        lost.len() as u64,
        last - first + 1,
        "seqs inside the gap's range arrived: lost {lost:?}, gap {}",
        gaps[0]
    );
    assert_eq!(
        gaps[0]["events"].as_u64(),
        Some(last - first + 1),
        "{}",
        gaps[0]
    );
    assert_eq!(
        reported[0],
        (first, last),
        "wal verify and the gap record disagree on the lost range"
    );
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(report.missing.is_empty(), "{report:?}");
    let not_corrupt: Vec<&Value> = events
        .iter()
        .filter(|e| e["gapless"] == "gap" && e["reason"] != "wal_corrupt")
        .collect();
    assert!(not_corrupt.is_empty(), "other gap events: {not_corrupt:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_newest_refuses_posts_with_503_and_a_wal_full_drop_newest_gap_event_says_so() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let agent = Agent::builder()
        .listening_on(port)
        .config(&format!(
            "[wal]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\nwhen_full = \"drop_newest\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 500, "")
        ))
        .start()
        .await;
    let ingest = Ingest::new(port);
    let lines = numbered_lines("drop-newest", 0, 12_000);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for chunk in lines.chunks(500) {
        let answer = ingest.post_lines(chunk).await.unwrap();
        match answer.status {
            200 => acknowledged.extend_from_slice(chunk),
            503 => refused += chunk.len(),
            other => panic!("unexpected answer {other}: {answer:?}"),
        }
    }
    assert!(refused > 0, "a 1 MiB WAL took 3 MiB of events?");
    receiver.set_mode(Mode::Ok);
    receiver.wait_for_lines(&acknowledged, DELIVERY).await;
    wait_until(DELIVERY, "a wal_full_drop_newest gap event", async || {
        !gap_events(&receiver.events(), "wal_full_drop_newest").is_empty()
    })
    .await;
    let events = receiver.events();
    // Refused lines were answered 503 and are not in the stream.
    let arrived: BTreeSet<String> = lines_in(&events).into_iter().collect();
    let stray: Vec<&String> = lines
        .iter()
        .filter(|l| !acknowledged.contains(l) && arrived.contains(*l))
        .take(3)
        .collect();
    assert!(stray.is_empty(), "lines answered 503 arrived: {stray:?}");
    let named: u64 = gap_events(&events, "wal_full_drop_newest")
        .iter()
        .map(|g| g["events"].as_u64().unwrap())
        .sum();
    assert_eq!(
        named, refused as u64,
        "the gap events count the refused events"
    );
    assert_eq!(
        agent
            .metric(
                "gapless_dropped_events_total",
                &[("reason", "wal_full_drop_newest")]
            )
            .await,
        Some(refused as f64)
    );
    let report = check(&received_batches(&receiver.requests()), "seq", Some(1));
    assert!(report.missing.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_deleted_before_it_was_read_to_its_end_arrives_as_a_source_overflow_gap_of_its_unread_bytes(
) {
    // The WAL is full under `block` and the platform is down, so the file source cannot
    // read on; the file is deleted while the agent is stopped.
    let receiver = Receiver::start(Mode::Status(503)).await;
    let builder = Agent::builder().top("shutdown_timeout = \"2s\"");
    let logs = builder.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let app = logs.join("app.log");
    let mut agent = builder
        .config(&format!(
            "[wal]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\n{}{}",
            crate::harness::snippets::file_source("app", &app, ""),
            http_sink(&receiver.url(), &["app"], 500, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("overflow", 0, 20_000);
    LogFile::create(&app).append(&lines);
    let size = std::fs::metadata(&app).unwrap().len();
    wait_for_status(&agent, "the file source blocked on the full WAL", |s| {
        s["sources"]["app"]["files"][0]["size"].as_u64() == Some(size)
            && s["sources"]["app"]["files"][0]["offset"].as_u64() < Some(size)
    })
    .await;
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(15)).await.success());
    std::fs::remove_file(&app).unwrap();
    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    wait_until(DELIVERY, "a source_overflow gap event", async || {
        !gap_events(&receiver.events(), "source_overflow").is_empty()
    })
    .await;
    let events = receiver.events();
    let arrived: BTreeSet<String> = lines_in(&events).into_iter().collect();
    // What arrived is a prefix of the file; the gap counts the bytes of the rest.
    let delivered = lines.iter().take_while(|l| arrived.contains(*l)).count();
    assert_eq!(arrived.len(), delivered, "what arrived is not a prefix");
    let unread: u64 = lines[delivered..].iter().map(|l| l.len() as u64 + 1).sum();
    let gaps = gap_events(&events, "source_overflow");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["bytes"].as_u64(), Some(unread), "{}", gaps[0]);
    assert!(unread > 0);
    assert!(
        agent
            .metric(
                "gapless_dropped_events_total",
                &[("reason", "source_overflow")]
            )
            .await
            >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_file_deleted_while_stopped_arrives_as_a_wal_missing_gap_of_exactly_its_seqs() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let port = free_port();
    let mut agent = Agent::builder()
        .listening_on(port)
        .top("shutdown_timeout = \"2s\"")
        .config(&format!(
            "[wal]\nsegment_bytes = \"64KiB\"\n{}{}",
            http_source("in", port, ""),
            http_sink(&receiver.url(), &["in"], 500, "")
        ))
        .start()
        .await;
    let lines = numbered_lines("missing", 0, 3_000);
    let ingest = Ingest::new(port);
    for chunk in lines.chunks(250) {
        ingest.post_ok(chunk).await;
    }
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)).await.success());
    let segs = segments(agent.data_dir());
    assert!(segs.len() >= 4, "{segs:?}");
    let first_seq =
        |p: &PathBuf| -> u64 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
    let victim = segs.len() / 2;
    let (a, z) = (first_seq(&segs[victim]), first_seq(&segs[victim + 1]) - 1);
    std::fs::remove_file(&segs[victim]).unwrap();

    receiver.set_mode(Mode::Ok);
    agent.restart().await;
    let last_seq = lines.len() as u64;
    wait_until(DELIVERY, "the stream to reach the last seq", async || {
        event_seqs(&receiver.events(), "seq").contains(&last_seq)
    })
    .await;
    let events = receiver.events();
    let gaps = gap_events(&events, "wal_missing");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gap_range(&gaps[0]), (a, z), "{}", gaps[0]);
    let arrived = event_seqs(&events, "seq");
    let lost: Vec<u64> = (1..=last_seq).filter(|s| !arrived.contains(s)).collect();
    assert_eq!(lost, (a..=z).collect::<Vec<_>>());
}
