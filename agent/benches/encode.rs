//! The encode path per function (criterion), for both line shapes of `bench/e2e.py` — plain
//! text and JSON full of quotes, ~200 B each: a line becoming a WAL payload (the file
//! source's event, JSON-escaped), WAL records becoming an NDJSON request body with each
//! event's seq spliced in (the `http` sink), and that body gzipped at level 1. 1,000 lines a
//! batch, as the sources and sinks work.
//!
//! Run: `cargo bench -p gapless --bench encode` (about a minute on 2 cores).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gapless::config::Encoding;
use gapless::event::{EventEncoder, Timestamp};
use gapless::sinks::encode::{encode, gzip};
use gapless_wal::{AppendBatch, Durability, Record, Wal, WalOptions, WhenFull};

const LINES: usize = 1000;

fn lines(shape: &str) -> Vec<Vec<u8>> {
    (0..LINES)
        .map(|i| {
            let mut l = match shape {
                "json" => format!(
                    r#"{{"ts":"2026-11-26T12:00:00.000Z","level":"info","msg":"login ok","user":"u17","req":"{i:010}","path":"/api/v1/session","status":200,"pad":""#
                ),
                _ => format!(
                    r#"2026-11-26T12:00:00.000Z INFO  service=checkout request_id={i:010} user=42 path=/api/v1/cart/items status=200 latency_ms=12 bytes=5123 msg="item added to cart" pad="#
                ),
            }
            .into_bytes();
            let close: &[u8] = if shape == "json" { b"\"}" } else { b"" };
            l.resize(199 - close.len(), b'x');
            l.extend_from_slice(close);
            l
        })
        .collect()
}

fn to_batch(encoder: &EventEncoder, lines: &[Vec<u8>], ts: &Timestamp) -> AppendBatch {
    let mut batch = AppendBatch::with_capacity(lines.len(), lines.len() * 300);
    for l in lines {
        encoder.push_line(&mut batch, l, ts, &[("file", "/var/log/app/app.log")], &[]);
    }
    batch
}

/// The records a WAL gives back for `lines` (appended once, durability never).
fn records(lines: &[Vec<u8>]) -> Vec<Record> {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        dir.path(),
        WalOptions {
            durability: Durability::Never,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            sync_interval: Duration::from_millis(100),
            when_full: WhenFull::Block,
        },
    )
    .unwrap();
    let encoder = EventEncoder::new("app", "host1");
    wal.appender()
        .append_blocking(to_batch(&encoder, lines, &Timestamp::now()))
        .unwrap();
    let got = wal.reader_from(1).try_read(LINES, 64 << 20).unwrap();
    assert_eq!(got.len(), LINES);
    got
}

fn encode_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(LINES as u64));
    let encoder = EventEncoder::new("app", "host1");
    let ts = Timestamp::now();
    for shape in ["plain", "json"] {
        let lines = lines(shape);
        g.bench_with_input(
            BenchmarkId::new("line_to_wal_payload", shape),
            &lines,
            |b, l| b.iter(|| to_batch(&encoder, l, &ts)),
        );
        let records = records(&lines);
        g.bench_with_input(
            BenchmarkId::new("records_to_ndjson", shape),
            &records,
            |b, r| b.iter(|| encode(r, Encoding::Ndjson, "host1", Some("seq"))),
        );
        let body = encode(&records, Encoding::Ndjson, "host1", Some("seq"));
        g.bench_with_input(BenchmarkId::new("gzip_level_1", shape), &body, |b, body| {
            b.iter(|| gzip(body))
        });
    }
    g.finish();
}

criterion_group!(benches, encode_path);
criterion_main!(benches);
