//! Injected faults: failed fsyncs that lose the data for good, a full disk, short writes,
//! unreadable byte ranges; through the library API and through the `durafs` binary's
//! control socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use durafs::{CutMode, Fault};

#[test]
fn eio_on_fsync_then_a_successful_fsync_does_not_resurrect_the_data() {
    // fsyncgate: after a failed fsync the dirty pages may be gone; a later fsync that
    // succeeds must not make them durable.
    let mut rig = Rig::new();
    write_synced(&rig.p("seg"), b"synced ");
    sync_dir(rig.mnt.path());
    rig.handle().inject(Fault::FsyncEio {
        count: 1,
        path: Some("seg".into()),
    });
    let mut f = OpenOptions::new().append(true).open(rig.p("seg")).unwrap();
    f.write_all(b"lost").unwrap();
    let err = f.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    f.sync_data().unwrap();
    assert_eq!(fs::read(rig.p("seg")).unwrap(), b"synced ");
    rig.cut(CutMode::Pages);
    assert_eq!(fs::read(rig.b("seg")).unwrap(), b"synced ");
}

#[test]
fn fsync_fault_limited_to_a_path_spares_other_files() {
    let rig = Rig::new();
    rig.handle().inject(Fault::FsyncEio {
        count: 5,
        path: Some(".seg".into()),
    });
    write_synced(&rig.p("a.cursor"), b"ok");
    let f = File::create(rig.p("1.seg")).unwrap();
    assert!(f.sync_all().is_err());
    assert_eq!(rig.handle().stats().faults_fired, 1);
}

#[test]
fn enospc_fails_writes_creates_mkdirs_and_renames_with_enospc() {
    let rig = Rig::new();
    write(&rig.p("f"), b"before");
    rig.handle().inject(Fault::Enospc {
        on: true,
        path: None,
    });
    let enospc = |r: std::io::Result<()>| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    };
    enospc(
        OpenOptions::new()
            .append(true)
            .open(rig.p("f"))
            .unwrap()
            .write_all(b"x"),
    );
    enospc(File::create(rig.p("g")).map(drop));
    enospc(fs::create_dir(rig.p("d")));
    enospc(fs::rename(rig.p("f"), rig.p("h")));
    rig.handle().inject(Fault::Enospc {
        on: false,
        path: None,
    });
    append(&rig.p("f"), b" after");
    assert_eq!(fs::read(rig.p("f")).unwrap(), b"before after");
}

#[test]
fn short_write_writes_and_reports_fewer_bytes() {
    let rig = Rig::new();
    rig.handle().inject(Fault::ShortWrite { count: 1 });
    let mut f = File::create(rig.p("f")).unwrap();
    assert_eq!(f.write(b"0123456789").unwrap(), 5);
    assert_eq!(f.write(b"abc").unwrap(), 3);
    assert_eq!(fs::read(rig.p("f")).unwrap(), b"01234abc");
}

#[test]
fn read_eio_fails_reads_of_its_range_only() {
    let rig = Rig::new();
    write(&rig.p("seg"), &pattern(10_000, 5));
    rig.handle().inject(Fault::ReadEio {
        path: "seg".into(),
        offset: 4_000,
        len: 100,
    });
    let f = File::open(rig.p("seg")).unwrap();
    let mut buf = [0u8; 100];
    f.read_exact_at(&mut buf, 0).unwrap();
    f.read_exact_at(&mut buf, 4_100).unwrap();
    let err = f.read_exact_at(&mut buf, 3_950).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    rig.handle().inject(Fault::Clear);
    f.read_exact_at(&mut buf, 3_950).unwrap();
}

#[test]
fn stats_count_fsyncs_directory_syncs_and_pending_bytes() {
    let rig = Rig::new();
    write_synced(&rig.p("f"), b"x");
    sync_dir(rig.mnt.path());
    append(&rig.p("f"), b"y");
    let s = rig.handle().stats();
    assert_eq!((s.fsyncs, s.fsyncdirs, s.cuts), (1, 1, 0));
    assert_eq!(s.bytes_pending, 2, "one dirty page holding 2 live bytes");
}

/// Sends one line and reads the answer.
fn ask(conn: &mut UnixStream, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(conn.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    answer.trim_end().to_string()
}

#[test]
fn the_binary_takes_faults_stats_and_a_cut_on_its_control_socket() {
    let backing = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let sock = backing.path().with_extension("ctl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_durafs"))
        .arg("mount")
        .args([backing.path(), mnt.path()])
        .arg("--control")
        .arg(&sock)
        .args(["--seed", "9"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut conn = loop {
        match UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("no control socket: {e}"),
        }
    };
    write_synced(&mnt.path().join("kept"), b"kept");
    sync_dir(mnt.path());
    write(&mnt.path().join("kept"), b"rewritten, not synced");
    assert_eq!(ask(&mut conn, "fault fsync-eio 1 nothing-matches"), "ok");
    assert!(ask(&mut conn, "fault melt").starts_with("error: "));
    let stats = ask(&mut conn, "stats");
    assert!(stats.contains(r#""fsyncs":1,"fsyncdirs":1"#), "{stats}");
    assert_eq!(ask(&mut conn, "cut drop"), "ok");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("seed 9"), "{stderr}");
    assert_eq!(fs::read(backing.path().join("kept")).unwrap(), b"kept");
    assert!(matches!(
        fs::read(mnt.path().join("kept")).map_err(|e| e.kind()),
        Err(ErrorKind::NotFound)
    ));
}
