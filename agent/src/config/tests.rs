use super::*;

const EXAMPLE: &str = r#"
data_dir = "/var/lib/gapless"

[api]
address = "127.0.0.1:8686"

[wal]
max_bytes = "10GiB"
segment_bytes = "64MiB"
durability = "always"
sync_interval = "100ms"
when_full = "block"

[sources.app]
type = "file"
include = ["/var/log/app/*.log"]
exclude = ["/var/log/app/debug*.log"]
read_from = "beginning"

[sources.ingest]
type = "http"
address = "0.0.0.0:9880"

[sources.pipe]
type = "stdin"

[sinks.platform]
type = "http"
inputs = ["app", "ingest"]
uri = "https://logs.example.com/ingest"
encoding = "ndjson"
compression = "gzip"
batch = { max_events = 5000, max_bytes = "4MiB", timeout = "1s" }
auth = { bearer_token = "${PLATFORM_TOKEN}" }
headers = { "X-Tenant" = "acme" }
retry = { initial_backoff = "500ms", max_backoff = "60s" }
request_timeout = "30s"

[sinks.debug]
type = "console"
inputs = ["pipe"]
"#;

fn env(k: &str) -> Option<String> {
    (k == "PLATFORM_TOKEN").then(|| "tok".to_string())
}

fn err(text: &str) -> ConfigError {
    Config::parse_with_env(text, env)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
}

#[test]
fn the_documented_example_parses() {
    let c = Config::parse_with_env(EXAMPLE, env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sources.len(), 3);
    let SinkKind::Http(h) = &c.sinks["platform"].kind else {
        panic!("not http")
    };
    assert_eq!(h.auth.bearer_token.as_deref(), Some("tok"));
    assert_eq!(h.batch_max_bytes, 4 << 20);
    assert!(
        !format!("{:?}", h.auth).contains("tok"),
        "secrets are redacted in Debug"
    );
}

#[test]
fn an_unknown_key_names_the_key_and_its_line() {
    let text = EXAMPLE.replace(
        "read_from = \"beginning\"",
        "read_from = \"beginning\"\nfollow_symlinks = true",
    );
    let e = err(&text);
    assert_eq!(e.key, "sources.app.follow_symlinks");
    assert_eq!(e.line, Some(21), "{e}");
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let e = err(&EXAMPLE.replace("request_timeout = \"30s\"", "request_timeout = 30"));
    assert_eq!(e.key, "sinks.platform.request_timeout", "{e}");
    assert_eq!(e.line, Some(39));
}

#[test]
fn a_bad_size_names_the_key_and_its_line() {
    let e = err(&EXAMPLE.replace("\"10GiB\"", "\"10GB!\""));
    assert_eq!(e.key, "wal.max_bytes", "{e}");
    assert_eq!(e.line, Some(8));
}

#[test]
fn a_bad_enum_value_names_the_key_and_its_line() {
    let e = err(&EXAMPLE.replace("when_full = \"block\"", "when_full = \"panic\""));
    assert_eq!(e.key, "wal.when_full");
    assert_eq!(e.line, Some(12));
    assert!(e.reason.contains("drop_oldest"), "{e}");
}

#[test]
fn an_input_naming_no_source_is_an_error_at_its_line() {
    let e = err(&EXAMPLE.replace(
        "inputs = [\"app\", \"ingest\"]",
        "inputs = [\"app\", \"ingset\"]",
    ));
    assert_eq!(e.key, "sinks.platform.inputs");
    assert_eq!(e.line, Some(30));
}

#[test]
fn a_key_of_another_type_is_refused() {
    let e = err(&EXAMPLE.replace("type = \"stdin\"", "type = \"stdin\"\ninclude = [\"/x\"]"));
    assert_eq!(e.key, "sources.pipe.include");
    assert_eq!(e.line, Some(26));
}

#[test]
fn an_unset_variable_is_an_error() {
    let e = Config::parse_with_env(EXAMPLE, |_| None)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(e.to_string().contains("PLATFORM_TOKEN"), "{e}");
    assert_eq!(e.line, Some(36));
}

#[test]
fn a_bad_uri_is_an_error() {
    let e = err(&EXAMPLE.replace("https://logs.example.com/ingest", "not a url"));
    assert_eq!(e.key, "sinks.platform.uri");
}

#[test]
fn broken_toml_names_its_line() {
    let e = err("data_dir = \"/x\"\n[wal\nmax_bytes = 1\n");
    assert_eq!(e.line, Some(2), "{e}");
}
