//! Reload on SIGHUP: the agent re-reads its config file. An invalid one is logged and the
//! running config kept; a valid one replaces sources and sinks on the same WAL, so that
//! nothing in it is lost or sent twice — whether a source or sink is added, a sink removed
//! (its cursor stays until `gapless wal forget-cursor`), or a sink moved to another endpoint
//! with other credentials. Tokens can come from files: a sink reads its file for every
//! request, an http source at each (re)start.
//!
//! Lines are written before, during (from another thread, while the reload runs) and after
//! each reload, and the receivers answer slowly where it matters, so that a reload meets a
//! backlog and a request in flight.
//!
//! `invalid` covers configs the reload refuses, `sinks` what a valid one changes, and
//! `credentials` tokens read from files.

mod credentials;
mod invalid;
mod sinks;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::receiver::Request;
use crate::harness::toml_path;

/// Short enough that a sink which never stops fails the reload within [`SHORT`].
///
/// [`SHORT`]: crate::harness::SHORT
pub const TOP: &str = "shutdown_timeout = \"3s\"";

/// What the agent logs when it keeps the running config.
pub const INVALID: &str = "reload: the config is invalid";
/// What the agent logs when it applies a new one.
pub const APPLYING: &str = "reload: applying the new config";

/// Receivers that answer after this long, so that a request is in flight at the SIGHUP.
pub const SLOW: Duration = Duration::from_millis(100);

/// The largest `seq` among `events`.
pub fn last_seq(events: &[Value]) -> u64 {
    events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .expect("some events")
}

/// The `Authorization` header of every request, with how many requests carried each.
pub fn authorizations(requests: &[Request]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in requests {
        *seen
            .entry(r.header("authorization").unwrap_or("<none>").to_string())
            .or_default() += 1;
    }
    seen
}

/// Replaces a file's content at once (write, then rename), as Kubernetes updates a
/// mounted Secret: a reader never sees it half written.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `auth = { bearer_token = "<token>" }`.
pub fn token(token: &str) -> String {
    format!("auth = {{ bearer_token = \"{token}\" }}")
}

/// `auth = { bearer_token_file = "<path>" }`.
pub fn token_file(path: &Path) -> String {
    format!("auth = {{ bearer_token_file = {} }}", toml_path(path))
}
