//! End-to-end tests of gapless: the real `gapless` binary, driven over real sockets and
//! real files, against a receiver that misbehaves on cue. One binary; the shared harness
//! is in `harness/`, and each other module covers one concern.
//!
//! Run them with `cargo test -p gapless --test e2e` (a filter narrows them down). The
//! disk-full tests mount a tmpfs and need root, as on CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod client_json;
mod config;
mod continuity;
mod crash;
mod dead_letter;
mod disk_full;
mod file_faults;
mod gap_records;
mod health;
mod heartbeat;
mod http_source;
mod journald;
mod monitoring;
mod outage;
mod packaging;
mod platforms;
mod power_cut;
mod relay;
mod reload;
mod responses;
mod rotation;
mod shutdown;
mod status;
mod stdin;
mod storage_faults;
mod syslog;
mod tls;
mod top;
mod wal_tools;
