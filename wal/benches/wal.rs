//! WAL benchmarks (criterion): appends in batches and one record at a time, for each
//! durability mode and several producer counts; reads; open time with a large backlog; and
//! the bench process's peak RSS, printed at the end.
//!
//! Run: `cargo bench -p gapless-wal` (set `GAPLESS_BENCH_BACKLOG_GIB` to change the 5 GiB
//! backlog of the open-time bench; its directory is kept under `target/` between runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gapless_wal::{AppendBatch, Durability, Wal, WalOptions, WhenFull};

const RECORD: usize = 256;

fn options(durability: Durability) -> WalOptions {
    WalOptions {
        durability,
        segment_bytes: 64 << 20,
        max_bytes: 64 << 30,
        sync_interval: Duration::from_millis(100),
        when_full: WhenFull::Block,
    }
}

fn batch(records: usize) -> AppendBatch {
    let mut b = AppendBatch::with_capacity(records, records * RECORD);
    let line = [b'x'; RECORD];
    for _ in 0..records {
        b.push(&line);
    }
    b
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wal-bench")
}

/// A new log in a temp dir under `target/` (kept alive by the returned guard).
fn fresh_wal(durability: Durability) -> (tempfile::TempDir, Wal) {
    std::fs::create_dir_all(bench_dir()).unwrap();
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let wal = Wal::open(dir.path(), options(durability)).unwrap();
    (dir, wal)
}

/// The agent's shape: async producers on two worker threads.
fn two_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// Runs `per_producer` appends of `records`-record batches from each of `producers`
/// threads against a fresh log, and returns the wall time.
fn run_appends(
    durability: Durability,
    producers: usize,
    per_producer: usize,
    records: usize,
) -> Duration {
    let (_dir, wal) = fresh_wal(durability);
    let start = Arc::new(Barrier::new(producers + 1));
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let appender = wal.appender();
            let start = start.clone();
            let template = batch(records);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..per_producer {
                    appender.append_blocking(template.clone()).unwrap();
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let took = t0.elapsed();
    drop(wal);
    took
}

fn modes() -> [(Durability, &'static str); 3] {
    [
        (Durability::Always, "always"),
        (Durability::Interval, "interval"),
        (Durability::Never, "never"),
    ]
}

/// One producer keeping two batches in flight, as the file source does: it reads and
/// encodes the next batch while the previous one is being synced.
fn run_pipelined_appends(durability: Durability, batches: usize) -> Duration {
    let (_dir, wal) = fresh_wal(durability);
    let rt = two_thread_runtime();
    let appender = wal.appender();
    let took = rt.block_on(async move {
        let template = batch(1000);
        let t0 = Instant::now();
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..batches {
            if in_flight.len() == 2 {
                let h: tokio::task::JoinHandle<_> = in_flight.pop_front().unwrap();
                h.await.unwrap();
            }
            let appender = appender.clone();
            let b = template.clone();
            in_flight.push_back(tokio::spawn(
                async move { appender.append(b).await.unwrap() },
            ));
        }
        for h in in_flight {
            h.await.unwrap();
        }
        t0.elapsed()
    });
    drop(wal);
    took
}

/// (a) Producers appending batches of 1,000 records, as a file source would.
fn batched_appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_batches_of_1000");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (mode, name) in modes() {
        for producers in [1usize, 8] {
            let per = 200 / producers;
            g.throughput(Throughput::Bytes((producers * per * 1000 * RECORD) as u64));
            g.bench_function(
                BenchmarkId::new(name, format!("{producers}_producers")),
                |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| run_appends(mode, producers, per, 1000))
                            .sum()
                    })
                },
            );
        }
        g.throughput(Throughput::Bytes((200 * 1000 * RECORD) as u64));
        g.bench_function(BenchmarkId::new(name, "1_producer_2_in_flight"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_pipelined_appends(mode, 200)).sum())
        });
    }
    g.finish();
}

/// (b) Producers appending one record at a time and waiting, as an HTTP request carrying
/// one event would: async tasks on a two-thread runtime, as in the agent. Group commit is
/// what makes 64 producers fast.
fn run_single_appends(durability: Durability, producers: usize, per_producer: usize) -> Duration {
    let (_dir, wal) = fresh_wal(durability);
    let rt = two_thread_runtime();
    let took = rt.block_on(async {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..producers)
            .map(|_| {
                let appender = wal.appender();
                tokio::spawn(async move {
                    let line = [b'x'; RECORD];
                    for _ in 0..per_producer {
                        let mut b = AppendBatch::with_capacity(1, RECORD);
                        b.push(&line);
                        appender.append(b).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        t0.elapsed()
    });
    drop(wal);
    took
}

fn single_record_appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_one_record");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (mode, name) in modes() {
        for producers in [1usize, 64] {
            let per = if producers == 1 { 2000 } else { 300 };
            g.throughput(Throughput::Elements((producers * per) as u64));
            g.bench_function(
                BenchmarkId::new(name, format!("{producers}_producers")),
                |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| run_single_appends(mode, producers, per))
                            .sum()
                    })
                },
            );
        }
    }
    g.finish();
}

/// Read throughput: a cursor streaming 256 MiB of 256-byte records from the page cache.
fn reads(c: &mut Criterion) {
    let (_dir, wal) = fresh_wal(Durability::Never);
    let appender = wal.appender();
    let total_records = (256 << 20) / RECORD;
    for _ in 0..total_records / 1000 {
        appender.append_blocking(batch(1000)).unwrap();
    }
    let records = (total_records / 1000) * 1000;
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes((records * RECORD) as u64));
    let mut n = 0;
    g.bench_function("cursor_256MiB", |b| {
        b.iter(|| {
            n += 1;
            let mut cursor = wal.cursor(&format!("reader{n}")).unwrap();
            let mut got = 0;
            loop {
                let batch = cursor.try_read(5000, 4 << 20).unwrap();
                if batch.is_empty() {
                    break;
                }
                got += batch.len();
            }
            assert_eq!(got, records);
            drop(cursor);
            wal.remove_cursor(&format!("reader{n}")).unwrap();
        })
    });
    g.finish();
}

/// Open time with a large backlog (default 5 GiB): only the active segment is scanned.
fn open_with_backlog(c: &mut Criterion) {
    let gib: u64 = std::env::var("GAPLESS_BENCH_BACKLOG_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = bench_dir().join(format!("backlog-{gib}gib"));
    let want = gib << 30;
    let have: u64 = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    if have < want {
        let _ = std::fs::remove_dir_all(&dir);
        let wal = Wal::open(&dir, options(Durability::Never)).unwrap();
        // A cursor that never acks keeps the whole backlog.
        drop(wal.cursor("slow-sink").unwrap());
        let appender = wal.appender();
        let per = (1000 * (RECORD + 32)) as u64;
        for _ in 0..want / per {
            appender.append_blocking(batch(1000)).unwrap();
        }
    }
    let mut g = c.benchmark_group("open");
    g.sample_size(20);
    g.bench_function(format!("backlog_{gib}GiB"), |b| {
        b.iter(|| {
            let wal = Wal::open(&dir, options(Durability::Always)).unwrap();
            let mut cursor = wal.cursor("slow-sink").unwrap();
            let first = cursor.try_read(1, 1 << 20).unwrap();
            assert_eq!(first.len(), 1);
        })
    });
    g.finish();
}

fn peak_rss(_c: &mut Criterion) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
    {
        println!("bench process {line}");
    }
}

criterion_group!(
    benches,
    batched_appends,
    single_record_appends,
    reads,
    open_with_backlog,
    peak_rss
);
criterion_main!(benches);
