//! The file source against real files in a temp dir and a real WAL, read back through a
//! cursor. Grouped by concern: reading, restarts, rotation, line shapes, releasing files,
//! and the WAL pushing back.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gapless_wal::{Cursor, RecordKind, Wal, WalOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::checkpoint::CHECKPOINT_FILE;
use super::*;
use crate::config::ReadFrom;
use crate::event::split_payload;

const WAIT: Duration = Duration::from_secs(20);
const PARTIAL: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    message: String,
    file: String,
    truncated: bool,
    partial: bool,
    continued: bool,
}

struct Harness {
    dir: tempfile::TempDir,
    wal: Wal,
    cursor: Cursor,
    got: Vec<Event>,
    running: Option<(watch::Sender<bool>, JoinHandle<crate::Result<()>>)>,
}

impl Harness {
    fn new() -> Self {
        Self::with_wal(WalOptions::default())
    }

    fn with_wal(opts: WalOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("logs")).unwrap();
        fs::create_dir_all(dir.path().join("state")).unwrap();
        let wal = Wal::open(dir.path().join("wal"), opts).unwrap();
        let cursor = wal.cursor("test").unwrap();
        Harness {
            dir,
            wal,
            cursor,
            got: Vec::new(),
            running: None,
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(name)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> FileSourceConfig {
        FileSourceConfig {
            include: vec![format!("{}/*.log", self.dir.path().join("logs").display())],
            exclude: Vec::new(),
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1 << 20,
            poll_interval: Duration::from_millis(20),
            partial_line_timeout: PARTIAL,
            max_open_files: None,
            close_inactive: Duration::from_secs(300),
        }
    }

    fn start(&mut self, config: FileSourceConfig) {
        assert!(self.running.is_none());
        let (tx, rx) = watch::channel(false);
        let ctx = SourceContext {
            name: "app".into(),
            appender: self.wal.appender(),
            encoder: EventEncoder::new("app", "test-host"),
            state_dir: self.state(),
            shutdown: rx,
            metrics: Arc::new(Metrics::new()),
            started: Arc::new(watch::channel(false).0),
        };
        self.running = Some((tx, tokio::spawn(run(ctx, config))));
    }

    async fn stop(&mut self) {
        let (tx, task) = self.running.take().unwrap();
        tx.send(true).unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the source stops")
            .unwrap()
            .unwrap();
    }

    /// Reads (and acknowledges) what the source appended so far.
    fn collect(&mut self) {
        loop {
            let records = self.cursor.try_read(10_000, 64 << 20).unwrap();
            let Some(last) = records.last() else {
                return;
            };
            let last = last.seq;
            for r in &records {
                assert_eq!(r.kind, RecordKind::Event, "no gap expected: {:?}", r.gap());
                let (_, json) = split_payload(&r.payload).unwrap();
                let v: serde_json::Value = serde_json::from_slice(json).unwrap();
                self.got.push(Event {
                    message: v["message"].as_str().unwrap().to_string(),
                    file: v["file"].as_str().unwrap().to_string(),
                    truncated: v["truncated"] == true,
                    partial: v["partial"] == true,
                    continued: v["continued"] == true,
                });
            }
            self.cursor.ack(last).unwrap();
        }
    }

    /// Waits until `n` events have arrived, then returns their messages.
    async fn wait_for(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.collect();
            if self.got.len() >= n {
                return self.messages();
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} events, got {}: last {:?}",
                self.got.len(),
                self.got.last()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lets a few polls pass and checks that nothing more arrives.
    async fn assert_quiet(&mut self, n: usize) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.collect();
        assert_eq!(
            self.got.len(),
            n,
            "unexpected extra events: {:?}",
            &self.got[n.min(self.got.len())..]
        );
    }

    fn messages(&self) -> Vec<String> {
        self.got.iter().map(|e| e.message.clone()).collect()
    }
}

/// Waits until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Lines `prefix {i}` for `i` in `range`, each with its newline.
fn lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i}\n")).collect()
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

/// Open descriptors of this process that point at `path` (deleted or not).
fn open_fds(path: &Path) -> usize {
    let target = path.to_string_lossy().to_string();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|l| {
            let l = l.to_string_lossy();
            l == target || l == format!("{target} (deleted)")
        })
        .count()
}

/// Sorts messages so that lines of several files can be compared as sets, and checks
/// that none came twice.
fn sorted_unique(mut got: Vec<String>) -> Vec<String> {
    got.sort();
    let n = got.len();
    got.dedup();
    assert_eq!(got.len(), n, "duplicates");
    got
}

// --- reading ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_appended_while_running_are_read() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("line", 0..3));
    h.start(h.config());
    assert_eq!(h.wait_for(3).await, names("line", 0..3));
    append(&app, &lines("line", 3..5000));
    assert_eq!(h.wait_for(5000).await, names("line", 0..5000));
    assert!(h
        .got
        .iter()
        .all(|e| e.file == app.to_string_lossy() && !e.truncated));
    h.assert_quiet(5000).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_read_in_order_across_many_chunks() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let pad = "x".repeat(190);
    let text: String = (0..40_000).map(|i| format!("{i:08} {pad}\n")).collect();
    append(&app, &text);
    h.start(h.config());
    let got = h.wait_for(40_000).await;
    let want: Vec<String> = (0..40_000).map(|i| format!("{i:08} {pad}")).collect();
    assert!(got == want, "lines out of order, missing or doubled");
    h.stop().await;
}

// --- restarts --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_exactly_at_the_checkpoint() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("line", 0..100));
    h.start(h.config());
    h.wait_for(100).await;
    h.stop().await;
    append(&app, &lines("line", 100..200));
    h.start(h.config());
    assert_eq!(h.wait_for(200).await, names("line", 0..200));
    h.assert_quiet(200).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_in_the_middle_of_a_large_file_resumes_without_duplicates_or_gaps() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let pad = "y".repeat(190);
    let text: String = (0..40_000).map(|i| format!("{i:08} {pad}\n")).collect();
    append(&app, &text);
    let mut runs = 0;
    while h.got.len() < 40_000 {
        assert!(runs < 500, "no progress");
        runs += 1;
        h.start(h.config());
        tokio::time::sleep(Duration::from_millis(3)).await;
        h.stop().await;
        h.collect();
    }
    assert!(
        runs > 1,
        "the first stop came after the end; nothing resumed mid-file"
    );
    let want: Vec<String> = (0..40_000).map(|i| format!("{i:08} {pad}")).collect();
    assert!(
        h.messages() == want,
        "lines missing, doubled or out of order"
    );
    h.start(h.config());
    h.assert_quiet(40_000).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_while_stopped_is_read_from_its_start() {
    // Same inode, other content: what inode reuse looks like to the checkpoint.
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("old", 0..50));
    h.start(h.config());
    h.wait_for(50).await;
    h.stop().await;
    let ino = fs::metadata(&app).unwrap().ino();
    fs::write(&app, lines("new", 0..80)).unwrap();
    assert_eq!(fs::metadata(&app).unwrap().ino(), ino);
    h.start(h.config());
    let got = h.wait_for(130).await;
    assert_eq!(got[50..], names("new", 0..80)[..]);
    h.assert_quiet(130).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_a_reused_inode_is_not_applied_to_the_new_file() {
    // The checkpointed file was deleted and a new one got its inode, starting with the
    // same bytes: only the birth time tells them apart.
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("line", 0..10));
    let meta = fs::metadata(&app).unwrap();
    let Some(created) = fingerprint::created_nanos(&meta) else {
        eprintln!("no birth times on this file system; nothing to test");
        return;
    };
    let head = fs::read(&app).unwrap();
    let fp = fingerprint::Fingerprint::of(&head);
    let entry = checkpoint::Entry {
        dev: meta.dev(),
        ino: meta.ino(),
        created: Some(created + 1),
        fp_len: fp.len,
        fp_hash: fp.hash,
        path: app.to_string_lossy().into(),
        offset: meta.len(),
        before_len: Some(fp.len),
        before_hash: Some(fp.hash),
        size: meta.len(),
    };
    checkpoint::CheckpointFile::new(&h.state())
        .store(&[entry], true)
        .unwrap();
    h.start(h.config());
    assert_eq!(h.wait_for(10).await, names("line", 0..10));
    h.assert_quiet(10).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_skips_existing_content_only_at_first_start() {
    let mut h = Harness::new();
    let (a, b, c) = (h.log("a.log"), h.log("b.log"), h.log("c.log"));
    append(&a, &lines("old a", 0..10));
    append(&a, "half a line");
    let mut config = h.config();
    config.read_from = ReadFrom::End;
    // Long enough that the half line is not emitted before its end is written.
    config.partial_line_timeout = Duration::from_secs(10);
    h.start(config.clone());
    let state = h.state().join(CHECKPOINT_FILE);
    eventually("the first scan wrote a checkpoint", || state.exists()).await;
    append(&a, &format!(" ends here\n{}", lines("new a", 0..5)));
    append(&b, &lines("b", 0..5));
    let got = sorted_unique(h.wait_for(11).await);
    let mut want = vec!["half a line ends here".to_string()];
    want.extend(names("new a", 0..5));
    want.extend(names("b", 0..5));
    assert_eq!(got, sorted_unique(want));
    h.stop().await;
    // Not a first start any more: files new to the source are read from their beginning.
    append(&a, &lines("later a", 0..3));
    append(&c, &lines("c", 0..4));
    h.start(config);
    let got = h.wait_for(18).await;
    let mut want = names("later a", 0..3);
    want.extend(names("c", 0..4));
    assert_eq!(sorted_unique(got[11..].to_vec()), sorted_unique(want));
    h.assert_quiet(18).await;
    h.stop().await;
}

// --- rotation --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_while_running_loses_and_duplicates_nothing() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let rotated = h.log("app.log.1");
    append(&app, &lines("line", 0..100));
    h.start(h.config());
    h.wait_for(100).await;
    // The writer keeps its descriptor across the rename and writes on for a moment.
    let mut writer = OpenOptions::new().append(true).open(&app).unwrap();
    writer
        .write_all(lines("line", 100..150).as_bytes())
        .unwrap();
    fs::rename(&app, &rotated).unwrap();
    writer
        .write_all(lines("line", 150..170).as_bytes())
        .unwrap();
    drop(writer);
    append(&app, &lines("line", 170..250));
    let got = h.wait_for(250).await;
    assert_eq!(sorted_unique(got), sorted_unique(names("line", 0..250)));
    h.assert_quiet(250).await;
    // The rotated file, outside the globs, is released once read.
    eventually("the rotated file is released", || open_fds(&rotated) == 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rotation_while_stopped_loses_nothing() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let rotated = h.log("app.log.1");
    append(&app, &lines("line", 0..100));
    h.start(h.config());
    h.wait_for(100).await;
    h.stop().await;
    append(&app, &lines("line", 100..130));
    fs::rename(&app, &rotated).unwrap();
    append(&app, &lines("line", 130..160));
    h.start(h.config());
    let got = h.wait_for(160).await;
    assert_eq!(sorted_unique(got), sorted_unique(names("line", 0..160)));
    h.assert_quiet(160).await;
    eventually("the rotated file is released", || open_fds(&rotated) == 0).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_to_a_name_the_glob_matches_keeps_the_offset() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let rotated = h.log("app-1.log");
    append(&app, &lines("line", 0..100));
    h.start(h.config());
    h.wait_for(100).await;
    fs::rename(&app, &rotated).unwrap();
    append(&rotated, &lines("line", 100..110));
    append(&app, &lines("line", 110..120));
    let got = h.wait_for(120).await;
    assert_eq!(sorted_unique(got), sorted_unique(names("line", 0..120)));
    // The scan that found the new app.log also saw the rename: later lines say so.
    append(&rotated, &lines("line", 120..125));
    let got = h.wait_for(125).await;
    assert_eq!(got[120..], names("line", 120..125)[..]);
    let rotated_str = rotated.to_string_lossy();
    assert!(
        h.got[120..].iter().all(|e| e.file == rotated_str),
        "events name the new path"
    );
    h.assert_quiet(125).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_is_detected_and_the_new_content_read() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("old", 0..100));
    h.start(h.config());
    h.wait_for(100).await;
    fs::copy(&app, h.log("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&app, &lines("new", 0..10));
    let got = h.wait_for(110).await;
    assert_eq!(got[100..], names("new", 0..10)[..]);
    h.assert_quiet(110).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_and_refilled_past_its_offset_is_detected_by_its_first_bytes() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("old", 0..20));
    h.start(h.config());
    h.wait_for(20).await;
    // Truncate and write more than before at once: the size never looks smaller.
    fs::write(&app, lines("new", 0..200)).unwrap();
    let got = h.wait_for(220).await;
    assert_eq!(got[20..], names("new", 0..200)[..]);
    h.assert_quiet(220).await;
    h.stop().await;
}

/// A 1,100-byte header line: longer than the first-bytes fingerprint.
fn long_header() -> String {
    format!("{}\n", "H".repeat(1100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_while_stopped_with_the_same_long_head_loses_no_new_line() {
    // The issue's example: truncated and rewritten in place (same inode, same birth
    // time), starting with the same 1,100 bytes, already past the old offset at start.
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &format!("{}old-1\n", long_header()));
    h.start(h.config());
    h.wait_for(2).await;
    h.stop().await;
    let ino = fs::metadata(&app).unwrap().ino();
    fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&app, &format!("{}new-1\nnew-2\nnew-3\n", long_header()));
    assert_eq!(fs::metadata(&app).unwrap().ino(), ino);
    assert_eq!(fs::metadata(&app).unwrap().len(), 1119);
    h.start(h.config());
    let got = h.wait_for(6).await;
    assert_eq!(got[2..], [&"H".repeat(1100), "new-1", "new-2", "new-3"]);
    h.assert_quiet(6).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_between_two_polls_with_the_same_long_head_loses_no_new_line() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &format!("{}old-1\n", long_header()));
    let mut config = h.config();
    config.poll_interval = Duration::from_millis(400);
    h.start(config);
    h.wait_for(2).await;
    // One write: truncate and refill past the old offset before the next poll looks.
    fs::write(&app, format!("{}new-1\nnew-2\nnew-3\n", long_header())).unwrap();
    let got = h.wait_for(6).await;
    assert_eq!(got[2..], [&"H".repeat(1100), "new-1", "new-2", "new-3"]);
    h.assert_quiet(6).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_a_full_anchor_are_read_on_without_starting_over() {
    // The anchor check must not mistake plain growth for a rewrite.
    let mut h = Harness::new();
    let app = h.log("app.log");
    let body = lines("line", 0..400);
    append(&app, &body);
    h.start(h.config());
    h.wait_for(400).await;
    append(&app, &lines("more", 0..5));
    let got = h.wait_for(405).await;
    assert_eq!(got[400..], names("more", 0..5)[..]);
    h.assert_quiet(405).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_checkpoint_without_an_anchor_past_the_fingerprint_reads_the_file_again() {
    // A checkpoint of an older version: no anchor, and an offset the first-bytes
    // fingerprint does not cover. It cannot be told whether the bytes before the offset
    // changed: duplicates rather than a possible gap.
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &format!("{}old-1\n", long_header()));
    let meta = fs::metadata(&app).unwrap();
    let head = fs::read(&app).unwrap();
    let fp = fingerprint::Fingerprint::of(&head[..1024]);
    let entry = checkpoint::Entry {
        dev: meta.dev(),
        ino: meta.ino(),
        created: fingerprint::created_nanos(&meta),
        fp_len: fp.len,
        fp_hash: fp.hash,
        path: app.to_string_lossy().into(),
        offset: meta.len(),
        before_len: None,
        before_hash: None,
        size: meta.len(),
    };
    checkpoint::CheckpointFile::new(&h.state())
        .store(&[entry], true)
        .unwrap();
    h.start(h.config());
    assert_eq!(h.wait_for(2).await, [&"H".repeat(1100), "old-1"]);
    h.assert_quiet(2).await;
    h.stop().await;
}

// --- line shapes -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_cut_by_the_partial_line_timeout_arrives_as_two_flagged_pieces() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    h.start(h.config());
    append(&app, r#"{"user":"alice","action":"lo"#);
    h.wait_for(1).await;
    append(&app, "gin\"}\nnext\n");
    h.wait_for(3).await;
    let got: Vec<(&str, bool, bool)> = h
        .got
        .iter()
        .map(|e| (e.message.as_str(), e.partial, e.continued))
        .collect();
    assert_eq!(
        got,
        [
            (r#"{"user":"alice","action":"lo"#, true, false),
            (r#"gin"}"#, false, true),
            ("next", false, false)
        ]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_a_partial_line_is_flagged_continued_after_a_restart_too() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    h.start(h.config());
    append(&app, "first half");
    h.wait_for(1).await;
    h.stop().await;
    append(&app, " second half\n");
    h.start(h.config());
    h.wait_for(2).await;
    h.assert_quiet(2).await;
    let got: Vec<(&str, bool, bool)> = h
        .got
        .iter()
        .map(|e| (e.message.as_str(), e.partial, e.continued))
        .collect();
    assert_eq!(
        got,
        [("first half", true, false), (" second half", false, true)]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_line_without_newline_is_emitted_after_the_timeout() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, "a\nb\npartial");
    let written = Instant::now();
    h.start(h.config());
    assert_eq!(h.wait_for(2).await, ["a", "b"]);
    assert_eq!(h.wait_for(3).await, ["a", "b", "partial"]);
    assert!(written.elapsed() >= PARTIAL, "emitted before the timeout");
    // The line end arriving late is not an empty event.
    append(&app, "\nnext\n");
    assert_eq!(h.wait_for(4).await, ["a", "b", "partial", "next"]);
    h.assert_quiet(4).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_line_is_split_into_flagged_pieces() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    let long = "z".repeat(200);
    append(&app, &format!("{long}\nshort\n"));
    let mut config = h.config();
    config.max_line_bytes = 64;
    h.start(config);
    let got = h.wait_for(5).await;
    assert_eq!(got.concat(), format!("{long}short"));
    assert_eq!(
        got.iter().map(String::len).collect::<Vec<_>>(),
        [64, 64, 64, 8, 5]
    );
    let flags: Vec<bool> = h.got.iter().map(|e| e.truncated).collect();
    assert_eq!(flags, [true, true, true, true, false]);
    h.stop().await;
}

// --- releasing files -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_open_file_is_read_to_its_end_and_released() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("line", 0..10));
    h.start(h.config());
    h.wait_for(10).await;
    let mut writer = OpenOptions::new().append(true).open(&app).unwrap();
    fs::remove_file(&app).unwrap();
    writer.write_all(lines("line", 10..30).as_bytes()).unwrap();
    assert_eq!(open_fds(&app), 2, "the source and the writer hold it");
    drop(writer);
    assert_eq!(h.wait_for(30).await, names("line", 0..30));
    eventually("the deleted file is released", || open_fds(&app) == 0).await;
    h.assert_quiet(30).await;
    h.stop().await;
}

// --- the WAL pushing back --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_wal_gets_smaller_batches_and_nothing_is_lost() {
    // 256 KiB of WAL refuses the first 1 MiB chunk as too large, then blocks whenever it
    // is full until the cursor acknowledges: the source must retry and wait, not skip.
    let mut h = Harness::with_wal(WalOptions {
        max_bytes: 256 << 10,
        segment_bytes: 64 << 10,
        ..WalOptions::default()
    });
    let app = h.log("app.log");
    append(&app, &lines("line", 0..20_000));
    h.start(h.config());
    assert_eq!(h.wait_for(20_000).await, names("line", 0..20_000));
    h.assert_quiet(20_000).await;
    h.stop().await;
}

// --- throughput ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p gapless --lib throughput -- --ignored --nocapture"]
async fn throughput_of_200_byte_lines() {
    const LINES: usize = 1_000_000;
    let h = Harness::new();
    let app = h.log("app.log");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&app).unwrap());
        let pad = "p".repeat(190);
        for i in 0..LINES {
            writeln!(f, "{i:08} {pad}").unwrap();
        }
    }
    let mut h = h;
    let started = Instant::now();
    h.start(h.config());
    let wal = &h.wal;
    eventually("every line is in the WAL", || wal.next_seq() > LINES as u64).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{LINES} lines of 200 bytes: {secs:.2} s, {:.0} lines/s, {:.0} MB/s",
        LINES as f64 / secs,
        (LINES * 200) as f64 / secs / 1e6
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_before_it_was_read_to_its_end_becomes_a_source_overflow_gap() {
    // The agent saw app.log.1 at 300 bytes with 100 durable, then was stopped; the file
    // was rotated away and deleted before the next start. The 200 bytes cannot be read:
    // the loss is said in the stream.
    let mut h = Harness::new();
    let entry = checkpoint::Entry {
        dev: 1,
        ino: 999_999_999,
        created: None,
        fp_len: 8,
        fp_hash: 42,
        path: h.log("app.log.1").to_string_lossy().into(),
        offset: 100,
        before_len: None,
        before_hash: None,
        size: 300,
    };
    checkpoint::CheckpointFile::new(&h.state())
        .store(&[entry], true)
        .unwrap();
    h.start(h.config());
    let gap = tokio::time::timeout(WAIT, async {
        loop {
            let records = h.cursor.read(100, 1 << 20).await.unwrap();
            if let Some(g) = records.iter().find_map(|r| r.gap()) {
                return g;
            }
        }
    })
    .await
    .expect("a gap record");
    assert_eq!(gap.reason, gapless_wal::GapReason::SourceOverflow);
    assert_eq!(gap.bytes, 200);
    h.stop().await;
}

// --- descriptors -----------------------------------------------------------------------

/// Open descriptors of this process on files in `dir`.
fn open_fds_in(dir: &Path) -> usize {
    let dir = dir.to_string_lossy().to_string();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with(&format!("{dir}/")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_files_than_max_open_files_are_all_read_exactly_once_within_the_cap() {
    let mut h = Harness::new();
    let logs = h.dir.path().join("logs");
    for i in 0..30 {
        append(
            &h.log(&format!("f{i:02}.log")),
            &lines(&format!("f{i:02}"), 0..5),
        );
    }
    let mut config = h.config();
    config.max_open_files = Some(3);
    h.start(config);
    let mut most = 0;
    let deadline = Instant::now() + WAIT;
    while h.got.len() < 150 {
        most = most.max(open_fds_in(&logs));
        assert!(Instant::now() < deadline, "got {} of 150", h.got.len());
        h.collect();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        most <= 3,
        "{most} log files open at once, max_open_files = 3"
    );
    let want: Vec<String> = (0..30)
        .flat_map(|i| names(&format!("f{i:02}"), 0..5))
        .collect();
    assert_eq!(sorted_unique(h.messages()), sorted_unique(want));
    // Files written to again while they wait for a descriptor are read on, not again.
    for i in 0..30 {
        append(
            &h.log(&format!("f{i:02}.log")),
            &lines(&format!("g{i:02}"), 0..2),
        );
    }
    h.wait_for(210).await;
    h.assert_quiet(210).await;
    assert_eq!(sorted_unique(h.messages()).len(), 210);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_file_gives_its_descriptor_back_and_is_read_on_when_it_grows() {
    let mut h = Harness::new();
    let app = h.log("app.log");
    append(&app, &lines("a", 0..3));
    let mut config = h.config();
    config.close_inactive = Duration::from_millis(100);
    h.start(config);
    h.wait_for(3).await;
    eventually("the idle file is closed", || open_fds(&app) == 0).await;
    append(&app, &lines("b", 0..3));
    let got = h.wait_for(6).await;
    assert_eq!(got[3..], names("b", 0..3)[..]);
    // Rewritten in place while closed, same first bytes: read again from its start.
    eventually("the idle file is closed again", || open_fds(&app) == 0).await;
    fs::write(&app, format!("{}{}", lines("a", 0..3), lines("c", 0..4))).unwrap();
    let got = h.wait_for(13).await;
    assert_eq!(got[6..], [names("a", 0..3), names("c", 0..4)].concat()[..]);
    h.assert_quiet(13).await;
    h.stop().await;
}
