//! Config snippets the scenarios share: sources and sinks tuned for fast tests (small
//! batches, short timeouts and backoffs), so that retries take milliseconds, not minutes.

use std::path::Path;

use super::toml_path;

/// An http sink `out` taking `inputs`, batching up to `max_events` events or 100 ms,
/// retrying after 50–500 ms, giving up on a request after 2 s. `extra` lines go into the
/// same table (`concurrency = 1`, `tls = { … }`).
pub fn http_sink(uri: &str, inputs: &[&str], max_events: usize, extra: &str) -> String {
    named_http_sink(
        "out",
        uri,
        inputs,
        max_events,
        &format!("request_timeout = \"2s\"\n{extra}"),
    )
}

/// [`http_sink`] named `name`, and without a `request_timeout` (the default, 30 s, unless
/// `extra` sets one), for tests that tune the timeouts or run several sinks.
pub fn named_http_sink(
    name: &str,
    uri: &str,
    inputs: &[&str],
    max_events: usize,
    extra: &str,
) -> String {
    let inputs: Vec<String> = inputs.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"
[sinks.{name}]
type = "http"
inputs = [{inputs}]
uri = "{uri}"
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
{extra}
"#,
        inputs = inputs.join(", ")
    )
}

/// An http source `name` on 127.0.0.1:`port`; `extra` lines go into its table.
pub fn http_source(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "http"
address = "127.0.0.1:{port}"
{extra}
"#
    )
}

/// A file source `name` following `include` (a glob), polling every 50 ms.
pub fn file_source(name: &str, include: &Path, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "file"
include = [{include}]
poll_interval = "50ms"
partial_line_timeout = "500ms"
{extra}
"#,
        include = toml_path(include)
    )
}

/// A journald source `name` reading the journal files in `dir`; `extra` lines go into its
/// table.
pub fn journald_source(name: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "journald"
journal_directory = {dir}
{extra}
"#,
        dir = toml_path(dir)
    )
}
