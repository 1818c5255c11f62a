//! # gapless: the agent
//!
//! Sources (tailed files, HTTP, syslog, stdin) append events to the write-ahead log of
//! [`gapless_wal`]; one uploader per sink drains it from its own cursor and advances that
//! cursor only when the destination confirms. The flow, and the folders, follow the data:
//!
//! ```text
//! sources/ ──append──▶ WAL (gapless-wal) ──cursor per sink──▶ sinks/
//!   file, http, syslog, stdin                                  http, console
//! ```
//!
//! - [`config`] parses and validates the one TOML file (errors name key and line).
//! - [`event`] is the shape of an event in the WAL and on the wire; [`client_json`] reads
//!   a client's JSON and writes it back byte for byte; [`reserved`] owns the field names
//!   only the agent writes (`gapless`, every sink's `seq_field`, `client_fields`).
//! - [`pipeline`] starts everything in order (WAL, sinks, sources, API) and stops it in
//!   reverse on SIGTERM.
//! - [`api`] serves `/health`, `/ready`, `/metrics` and `/status`.
//! - [`cli`] is the command line; `main.rs` only calls it.
//!
//! The promise: an event is acknowledged to its sender (or its file offset checkpointed)
//! only once it is in the WAL as durably as configured — syslog, which has no
//! acknowledgement, reads no further from a TCP connection until then — and it leaves the
//! WAL only once every sink delivered it, or once a policy dropped it, which is then said
//! downstream in a gap record.

pub mod api;
pub mod cli;
pub mod client_json;
pub mod config;
pub mod continuity;
pub mod descriptors;
pub mod durable;
pub mod error;
pub mod event;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod reserved;
pub mod sinks;
pub mod sources;
pub mod top;
pub mod wal_tools;

pub use error::{Error, Result};
