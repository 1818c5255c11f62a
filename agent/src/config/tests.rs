//! Unit tests of config parsing and validation: every error names its key and line.

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
    (k == "PLATFORM_TOKEN").then(|| "s3cr3t-value".to_string())
}

/// The 1-based line of `text` containing `needle`.
fn line(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
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
    assert_eq!(h.auth.bearer_token.as_deref(), Some("s3cr3t-value"));
    assert_eq!(h.delivery.batch_max_bytes, 4 << 20);
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cr3t"),
        "secrets are redacted in Debug: {debug}"
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
    assert_eq!(e.line, line(&text, "follow_symlinks"), "{e}");
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let text = EXAMPLE.replace("request_timeout = \"30s\"", "request_timeout = 30");
    let e = err(&text);
    assert_eq!(e.key, "sinks.platform.request_timeout", "{e}");
    assert_eq!(e.line, line(&text, "request_timeout = 30"));
}

#[test]
fn a_bad_size_names_the_key_and_its_line() {
    let text = EXAMPLE.replace("\"10GiB\"", "\"10GB!\"");
    let e = err(&text);
    assert_eq!(e.key, "wal.max_bytes", "{e}");
    assert_eq!(e.line, line(&text, "10GB!"));
}

#[test]
fn a_bad_enum_value_names_the_key_and_its_line() {
    let text = EXAMPLE.replace("when_full = \"block\"", "when_full = \"panic\"");
    let e = err(&text);
    assert_eq!(e.key, "wal.when_full");
    assert_eq!(e.line, line(&text, "\"panic\""));
    assert!(e.reason.contains("drop_oldest"), "{e}");
}

#[test]
fn an_input_naming_no_source_is_an_error_at_its_line() {
    let text = EXAMPLE.replace(
        "inputs = [\"app\", \"ingest\"]",
        "inputs = [\"app\", \"ingset\"]",
    );
    let e = err(&text);
    assert_eq!(e.key, "sinks.platform.inputs");
    assert_eq!(e.line, line(&text, "ingset"));
}

#[test]
fn a_key_of_another_type_is_refused() {
    let text = EXAMPLE.replace("type = \"stdin\"", "type = \"stdin\"\ninclude = [\"/x\"]");
    let e = err(&text);
    assert_eq!(e.key, "sources.pipe.include");
    assert_eq!(e.line, line(&text, "include = [\"/x\"]"));
}

#[test]
fn a_seq_field_naming_a_field_the_agent_writes_is_refused_at_its_line() {
    for taken in crate::reserved::AGENT_FIELDS {
        let text = EXAMPLE.replace(
            "request_timeout = \"30s\"",
            &format!("request_timeout = \"30s\"\nseq_field = \"{taken}\""),
        );
        let e = err(&text);
        assert_eq!(e.key, "sinks.platform.seq_field", "{taken}: {e}");
        assert_eq!(e.line, line(&text, "seq_field"), "{taken}: {e}");
        assert!(e.reason.contains(&format!("{taken:?}")), "{taken}: {e}");
    }
    let text = EXAMPLE.replace(
        "request_timeout = \"30s\"",
        "request_timeout = \"30s\"\nseq_field = \"n\"",
    );
    let c = Config::parse_with_env(&text, env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sinks["platform"].seq_field.as_deref(), Some("n"));
}

#[test]
fn an_unset_variable_is_an_error() {
    let e = Config::parse_with_env(EXAMPLE, |_| None)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(e.to_string().contains("PLATFORM_TOKEN"), "{e}");
    assert_eq!(e.line, line(EXAMPLE, "${PLATFORM_TOKEN}"));
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

#[test]
fn the_shipped_example_configs_are_valid() {
    let env = |k: &str| (k == "PLATFORM_TOKEN").then(|| "t".to_string());
    for text in [
        include_str!("../../../examples/stdin-to-console.toml"),
        include_str!("../../../examples/files-to-http.toml"),
        include_str!("../../../examples/syslog-to-http.toml"),
    ] {
        Config::parse_with_env(text, env).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn errors_inside_inline_tables_name_the_full_key() {
    let text = EXAMPLE.replace("max_events = 5000", "max_events = \"many\"");
    let e = err(&text);
    assert_eq!(e.key, "sinks.platform.batch.max_events", "{e}");
    assert_eq!(e.line, line(&text, "\"many\""));
    let text = EXAMPLE.replace("initial_backoff = \"500ms\"", "initial_backoff = \"soon\"");
    let e = err(&text);
    assert_eq!(e.key, "sinks.platform.retry.initial_backoff", "{e}");
    let text = EXAMPLE.replace("max_events = 5000", "max_event = 5000");
    let e = err(&text);
    assert_eq!(e.key, "sinks.platform.batch.max_event", "{e}");
}

#[test]
fn key_paths_follow_inline_tables() {
    assert_eq!(
        key_path_at("batch = { max_events = \"x\" }", 23),
        vec!["batch", "max_events"]
    );
    assert_eq!(key_path_at("uri = \"x\"", 6), vec!["uri"]);
    assert_eq!(
        key_path_at("a = { b = 1, c = { d = 2 } }", 22),
        vec!["a", "c", "d"]
    );
}

#[test]
fn the_packaged_configs_are_valid() {
    let env = |k: &str| {
        matches!(k, "GAPLESS_ENDPOINT" | "GAPLESS_TOKEN")
            .then(|| "https://x.invalid/ingest".to_string())
    };
    for text in [
        include_str!("../../../packaging/gapless.toml"),
        include_str!("../../../packaging/container/gapless.toml"),
    ] {
        let c = Config::parse_with_env(text, env).unwrap_or_else(|e| panic!("{e}"));
        assert!(c
            .sources
            .values()
            .any(|s| matches!(s, SourceConfig::Heartbeat { .. })));
    }
}

const JOURNALD: &str = r#"
[sources.journal]
type = "journald"
units = ["ssh.service", "sudo.service"]
matches = { SYSLOG_FACILITY = ["4", "10"] }
read_from = "end"
journal_directory = "/var/log/journal"

[sinks.debug]
type = "console"
"#;

#[test]
fn a_journald_source_takes_its_documented_keys_and_defaults() {
    let c = Config::parse_with_env(JOURNALD, env).unwrap_or_else(|e| panic!("{e}"));
    let SourceConfig::Journald(j) = &c.sources["journal"] else {
        panic!("not journald")
    };
    assert_eq!(j.units, ["ssh.service", "sudo.service"]);
    assert_eq!(j.matches["SYSLOG_FACILITY"], ["4", "10"]);
    assert_eq!(j.read_from, ReadFrom::End);
    assert_eq!(
        j.journal_directory.as_deref(),
        Some(Path::new("/var/log/journal"))
    );
    assert_eq!(j.journalctl_path, Path::new("journalctl"));
}

#[test]
fn a_journald_source_refuses_bad_field_names_empty_matches_and_file_keys() {
    let text = JOURNALD.replace("SYSLOG_FACILITY", "syslog_facility");
    let e = err(&text);
    assert_eq!(e.key, "sources.journal.matches", "{e}");
    let text = JOURNALD.replace("[\"4\", \"10\"]", "[]");
    let e = err(&text);
    assert_eq!(e.key, "sources.journal.matches.SYSLOG_FACILITY", "{e}");
    let text = JOURNALD.replace("read_from = \"end\"", "include = [\"/x\"]");
    let e = err(&text);
    assert_eq!(e.key, "sources.journal.include", "{e}");
    assert_eq!(e.line, line(&text, "include"));
    let text = EXAMPLE.replace("type = \"stdin\"", "type = \"stdin\"\nunits = [\"a\"]");
    assert_eq!(err(&text).key, "sources.pipe.units");
}

fn with_syslog(source: &str) -> String {
    format!("{EXAMPLE}\n[sources.net]\ntype = \"syslog\"\n{source}\n")
}

#[test]
fn a_syslog_source_takes_its_defaults_and_its_keys() {
    let c = Config::parse_with_env(&with_syslog("address = \"0.0.0.0:514\""), env)
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceConfig::Syslog(s)) = c.sources.get("net") else {
        panic!("not a syslog source")
    };
    assert_eq!(s.mode, SyslogMode::Udp);
    assert_eq!(
        (
            s.max_message_bytes,
            s.max_connections,
            s.receive_buffer_bytes
        ),
        (64 << 10, 1024, 8 << 20)
    );
    let c = Config::parse_with_env(
        &with_syslog(
            "mode = \"tcp\"\naddress = \"127.0.0.1:1514\"\nframing = \"newline\"\nmax_message_bytes = \"1KiB\"\nmax_connections = 2",
        ),
        env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceConfig::Syslog(s)) = c.sources.get("net") else {
        panic!("not a syslog source")
    };
    assert_eq!(
        (s.mode, s.framing, s.max_message_bytes, s.max_connections),
        (
            SyslogMode::Tcp,
            crate::sources::syslog::Framing::Newline,
            1024,
            2
        )
    );
}

#[test]
fn syslog_errors_name_the_key_and_its_line() {
    for (source, key, needle) in [
        ("mode = \"tcp\"\naddress = \"x:y\"", "sources.net.address", "x:y"),
        ("mode = \"sctp\"\naddress = \"0.0.0.0:514\"", "sources.net.mode", "sctp"),
        (
            "mode = \"tcp\"\naddress = \"0.0.0.0:514\"\nreceive_buffer_bytes = \"1MiB\"",
            "sources.net.receive_buffer_bytes",
            "receive_buffer_bytes",
        ),
        ("mode = \"tls\"\naddress = \"0.0.0.0:6514\"", "sources.net", "[sources.net]"),
        (
            "mode = \"tls\"\naddress = \"0.0.0.0:6514\"\ntls = { cert_file = \"/nonexistent/c.pem\", key_file = \"/nonexistent/k.pem\" }",
            "sources.net.tls.cert_file",
            "tls = {",
        ),
        ("address = \"0.0.0.0:514\"\npath = \"/x\"", "sources.net.path", "path = "),
    ] {
        let text = with_syslog(source);
        let e = err(&text);
        assert_eq!(e.key, key, "{e}");
        assert_eq!(e.line, line(&text, needle), "{e}");
    }
}

fn with_sink(sink: &str) -> String {
    format!("[sources.app]\ntype = \"stdin\"\n\n[sinks.out]\n{sink}\n")
}

#[test]
fn the_platform_sinks_take_their_documented_keys_and_defaults() {
    let c = Config::parse(&with_sink(
        r#"type = "azure_monitor_logs"
endpoint = "https://my-dce.eastus-1.ingest.monitor.azure.com"
dcr_immutable_id = "dcr-0123456789abcdef0123456789abcdef"
stream_name = "Custom-GaplessLogs_CL"
auth = { tenant_id = "t", client_id = "c", client_secret_file = "/etc/gapless/azure.secret" }"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let SinkKind::AzureMonitorLogs(a) = &c.sinks["out"].kind else {
        panic!("not azure")
    };
    assert_eq!(a.authority.as_str(), "https://login.microsoftonline.com/");
    assert_eq!(a.scope, "https://monitor.azure.com/.default");
    assert_eq!(a.time_field, "TimeGenerated");
    assert!(a.delivery.gzip);

    let c = Config::parse(&with_sink(
        "type = \"splunk_hec\"\nendpoint = \"https://splunk:8088\"\ntoken = \"abc\"\nindex = \"main\"",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let SinkKind::SplunkHec(s) = &c.sinks["out"].kind else {
        panic!("not splunk")
    };
    assert!(!s.indexer_acknowledgement);
    assert_eq!(s.index.as_deref(), Some("main"));
    assert!(!format!("{c:?}").contains("abc"), "the token is redacted");

    let c = Config::parse(&with_sink(
        "type = \"elasticsearch\"\nendpoints = [\"https://es1:9200\", \"https://es2:9200\"]\nauth = { api_key_file = \"/k\" }",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let SinkKind::Elasticsearch(e) = &c.sinks["out"].kind else {
        panic!("not elasticsearch")
    };
    assert_eq!(e.endpoints.len(), 2);
    assert_eq!(e.index, "logs-gapless-default");
    assert!(matches!(e.auth, ElasticsearchAuth::ApiKey(Secret::File(_))));
    // Their fields are reserved at ingest, like the seq field.
    let reserved = crate::reserved::ReservedFields::from_config(&c);
    assert!(reserved.contains("@timestamp") && reserved.contains("agent_id"));
}

#[test]
fn platform_sink_errors_name_the_key() {
    let cases = [
        (
            "type = \"azure_monitor_logs\"\nendpoint = \"https://x\"\nstream_name = \"Custom-A\"\nauth = { tenant_id = \"t\", client_id = \"c\", client_secret = \"s\" }",
            "sinks.out",
            "dcr_immutable_id",
        ),
        (
            "type = \"azure_monitor_logs\"\nendpoint = \"https://x\"\ndcr_immutable_id = \"dcr-1\"\nstream_name = \"Custom-A\"\nauth = { tenant_id = \"t\", client_id = \"c\" }",
            "sinks.out.auth",
            "client_secret",
        ),
        (
            "type = \"azure_monitor_logs\"\nendpoint = \"https://x\"\ndcr_immutable_id = \"dcr-1\"\nstream_name = \"Custom-A\"\nauth = { tenant_id = \"t\", client_id = \"c\", client_secret = \"s\", api_key = \"k\" }",
            "sinks.out.auth.api_key",
            "does not apply",
        ),
        (
            "type = \"splunk_hec\"\nendpoint = \"https://x\"",
            "sinks.out",
            "token_file",
        ),
        (
            "type = \"splunk_hec\"\nendpoint = \"https://x\"\ntoken = \"a\"\nuri = \"https://y\"",
            "sinks.out.uri",
            "does not apply",
        ),
        (
            "type = \"elasticsearch\"\nindex = \"logs\"",
            "sinks.out",
            "endpoints",
        ),
        (
            "type = \"elasticsearch\"\nendpoints = [\"https://es\"]\nauth = { username = \"u\" }",
            "sinks.out.auth",
            "together",
        ),
        (
            "type = \"elasticsearch\"\nendpoints = [\"https://es\"]\nseq_field = \"@timestamp\"",
            "sinks.out.seq_field",
            "writes itself",
        ),
        (
            "type = \"elasticsearch\"\nendpoints = [\"https://es\"]\nindex = \"Logs-App\"",
            "sinks.out.index",
            "uppercase",
        ),
        (
            "type = \"elasticsearch\"\nendpoints = [\"https://es\"]\nindex = \"_logs\"",
            "sinks.out.index",
            "starts with",
        ),
        (
            "type = \"elasticsearch\"\nendpoints = [\"https://es\"]\nindex = \"logs:app\"",
            "sinks.out.index",
            "contains",
        ),
        (
            "type = \"http\"\nuri = \"https://x\"\nindex = \"i\"",
            "sinks.out.index",
            "does not apply",
        ),
    ];
    for (sink, key, reason) in cases {
        let e = err(&with_sink(sink));
        assert_eq!(e.key, key, "{sink}: {e}");
        assert!(e.reason.contains(reason), "{sink}: {e}");
        assert!(e.line.is_some(), "{sink}: {e}");
    }
}

#[test]
fn a_nats_sink_takes_a_url_list_a_subject_and_never_compresses() {
    let c = Config::parse(&with_sink(
        "type = \"nats\"\nurl = \"nats://127.0.0.1:4222, tls://n2:4222\"\nsubject = \"logs.gapless\"\nauth = { token_file = \"/t\" }",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let SinkKind::Nats(n) = &c.sinks["out"].kind else {
        panic!("not nats")
    };
    assert_eq!(n.urls, ["nats://127.0.0.1:4222", "tls://n2:4222"]);
    assert_eq!(n.subject, "logs.gapless");
    assert!(!n.delivery.gzip);
    assert_eq!(
        c.sinks["out"].kind.files(),
        [("auth.token_file", std::path::Path::new("/t"))]
    );
    let reserved = crate::reserved::ReservedFields::from_config(&c);
    assert!(reserved.contains("agent_id"));
}

#[test]
fn nats_sink_errors_name_the_key() {
    let cases = [
        ("type = \"nats\"\nsubject = \"a\"", "sinks.out", "url"),
        (
            "type = \"nats\"\nurl = \"http://127.0.0.1:4222\"\nsubject = \"a\"",
            "sinks.out.url",
            "not a NATS server URL",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a:4222,\"\nsubject = \"a\"",
            "sinks.out.url",
            "not a NATS server URL",
        ),
        (
            "type = \"nats\"\nurl = \"nats://user:secret@a:4222\"\nsubject = \"a\"",
            "sinks.out.url",
            "credentials do not go in the URL",
        ),
        (
            "type = \"nats\"\nurl = \"nats://s3cr3t-token@a:4222\"\nsubject = \"a\"",
            "sinks.out.url",
            "credentials do not go in the URL",
        ),
        ("type = \"nats\"\nurl = \"nats://a\"", "sinks.out", "subject"),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"logs.*\"",
            "sinks.out.subject",
            "wildcard",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"logs.>\"",
            "sinks.out.subject",
            "wildcard",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"logs..x\"",
            "sinks.out.subject",
            "empty token",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"a\"\ncompression = \"gzip\"",
            "sinks.out.compression",
            "uncompressed",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"a\"\nauth = { api_key = \"k\" }",
            "sinks.out.auth.api_key",
            "does not apply",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"a\"\nendpoints = [\"https://es\"]",
            "sinks.out.endpoints",
            "does not apply",
        ),
        (
            "type = \"http\"\nuri = \"https://x\"\nsubject = \"a\"",
            "sinks.out.subject",
            "does not apply",
        ),
        (
            "type = \"nats\"\nurl = \"nats://a\"\nsubject = \"a\"\ntls = { insecure_skip_verify = true }",
            "sinks.out.tls.insecure_skip_verify",
            "not available",
        ),
    ];
    for (sink, key, reason) in cases {
        let e = err(&with_sink(sink));
        assert_eq!(e.key, key, "{sink}: {e}");
        assert!(e.reason.contains(reason), "{sink}: {e}");
        assert!(e.line.is_some(), "{sink}: {e}");
    }
}

#[test]
fn an_agent_id_that_cannot_travel_in_a_header_is_refused_naming_the_key() {
    for id in ["wéb-1", "web 1", "tab\tid"] {
        let text = format!("agent_id = {id:?}\n");
        let e = err(&text).to_string();
        assert!(
            e.contains("agent_id") && e.contains("visible ASCII"),
            "{id:?}: {e}"
        );
    }
    let fine = format!("agent_id = \"web-17.fleet_a\"\n{EXAMPLE}");
    assert!(Config::parse_with_env(&fine, env).is_ok());
}
