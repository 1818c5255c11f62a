//! The relay tier: config snippets for the `gapless` sink (on every host) and the `gapless`
//! source (on the relay); [`RelayClient`], a raw client of a gapless source that sends what
//! an origin agent's sink would — or what it never would; and the per-origin view of what
//! reached the platform behind a relay ([`origins`], [`verify_relay`]).
//!
//! Starting agents and the receiver is left to [`super::agent`] and [`super::receiver`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::capture::{capture_lines, verify_stream, write_capture};
use super::client::Answer;
use super::Receiver;

/// A `gapless` sink `name` taking `inputs`, posting to `uri`, batching up to `max_events`
/// events or 100 ms, retrying after 50–500 ms, giving up on a request after 2 s. `extra`
/// lines go into its table (`auth = { … }`, `tls = { … }`).
pub fn gapless_sink(
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
type = "gapless"
inputs = [{inputs}]
uri = "{uri}"
batch = {{ max_events = {max_events}, timeout = "100ms" }}
retry = {{ initial_backoff = "50ms", max_backoff = "500ms" }}
request_timeout = "2s"
{extra}
"#,
        inputs = inputs.join(", ")
    )
}

/// A `gapless` source `name` on 127.0.0.1:`port`; `extra` lines go into its table (it needs
/// an `auth` or a `tls.ca_file`).
pub fn gapless_source(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
[sources.{name}]
type = "gapless"
address = "127.0.0.1:{port}"
{extra}
"#
    )
}

/// `auth = { bearer_token = "<token>" }`: the shared token.
pub fn shared_token(token: &str) -> String {
    format!("auth = {{ bearer_token = \"{token}\" }}")
}

/// `count` origin events as an agent's sink writes them, `seq` first: seqs `first..`,
/// `message` `"<tag> <seq>"`.
pub fn origin_lines(tag: &str, first: u64, count: u64) -> Vec<String> {
    (first..first + count)
        .map(|s| {
            format!(
                r#"{{"seq":{s},"message":"{tag} {s}","timestamp":"2026-11-30T12:00:00.000Z","host":"origin-host","source":"app"}}"#
            )
        })
        .collect()
}

/// The `message`s of [`origin_lines`].
pub fn origin_messages(tag: &str, first: u64, count: u64) -> Vec<String> {
    (first..first + count)
        .map(|s| format!("{tag} {s}"))
        .collect()
}

/// The continuity headers of an origin sink's request for seqs `first..=last`.
pub fn continuity_headers(agent_id: &str, first: u64, last: u64) -> Vec<(String, String)> {
    vec![
        ("gapless-agent-id".into(), agent_id.into()),
        ("gapless-seq-range".into(), format!("{first}-{last}")),
        ("gapless-prev-seq".into(), (first - 1).to_string()),
        (
            "idempotency-key".into(),
            format!("{agent_id}-relay-{first}-{last}"),
        ),
    ]
}

/// A client of one gapless source: NDJSON bodies, gzip (by default), headers as given.
pub struct RelayClient {
    url: String,
    token: Option<String>,
    gzip: bool,
    http: reqwest::Client,
}

impl RelayClient {
    /// A client of the gapless source on http://127.0.0.1:`port`/.
    pub fn new(port: u16) -> RelayClient {
        RelayClient {
            url: format!("http://127.0.0.1:{port}/"),
            token: None,
            gzip: true,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// A client of the gapless source on https://localhost:`port`/, trusting `ca_pem` and
    /// presenting `identity` (certificate and key, PEM) when given.
    pub fn tls(port: u16, ca_pem: &str, identity: Option<(&str, &str)>) -> RelayClient {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("the CA certificate"),
            );
        if let Some((cert, key)) = identity {
            let pem = format!("{cert}\n{key}");
            builder = builder
                .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("a client identity"));
        }
        RelayClient {
            url: format!("https://localhost:{port}/"),
            token: None,
            gzip: true,
            http: builder.build().expect("an HTTPS client"),
        }
    }

    /// Sends `Authorization: Bearer <token>` from now on.
    pub fn with_token(mut self, token: &str) -> RelayClient {
        self.token = Some(token.to_string());
        self
    }

    /// Sends bodies as they are, without `Content-Encoding` (big bodies: gzip in a debug
    /// build is slow).
    pub fn without_gzip(mut self) -> RelayClient {
        self.gzip = false;
        self
    }

    /// Posts `lines` as one NDJSON body (gzip unless [`RelayClient::without_gzip`]) with
    /// these headers.
    pub async fn post(
        &self,
        headers: &[(String, String)],
        lines: &[String],
    ) -> Result<Answer, reqwest::Error> {
        let mut body = lines.join("\n");
        body.push('\n');
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-ndjson");
        req = if self.gzip {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(body.as_bytes()).expect("gzip in memory");
            req.header("content-encoding", "gzip")
                .body(gz.finish().expect("gzip in memory"))
        } else {
            req.body(body)
        };
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Answer::of(req.send().await?).await
    }

    /// Posts origin events `first..first+count` of [`origin_lines`] from `agent_id`, with the
    /// headers its sink would send; panics if the request fails to get an answer.
    pub async fn post_range(&self, agent_id: &str, tag: &str, first: u64, count: u64) -> Answer {
        self.post(
            &continuity_headers(agent_id, first, first + count - 1),
            &origin_lines(tag, first, count),
        )
        .await
        .unwrap_or_else(|e| panic!("POST to the gapless source: {e}"))
    }
}

/// The JSON body of an answer; panics naming `what` if it is not JSON.
pub fn answer_json(what: &str, answer: &Answer) -> Value {
    serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{what}: the answer is not JSON ({e}): {answer:?}"))
}

/// Panics unless `answer` has `status` and, when it is a refusal, a JSON `{"error": …}`.
pub fn assert_answer(what: &str, answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    if status != 200 {
        assert!(
            answer_json(what, answer)["error"].is_string(),
            "{what}: a refusal without a JSON error: {answer:?}"
        );
    }
}

/// What the platform got from one origin agent through the relay.
#[derive(Debug, Default)]
pub struct OriginStream {
    /// Each origin seq of an event, with the relay seqs it arrived under.
    pub events: BTreeMap<u64, BTreeSet<u64>>,
    /// Range records: seqs the origin's sink accounted for without an event.
    pub ranges: Vec<(u64, u64)>,
    /// The origin's gap records (in origin seqs).
    pub gaps: Vec<(u64, u64)>,
}

impl OriginStream {
    /// The origin seqs in `1..=last` that no event, range record or gap record accounts for.
    pub fn holes(&self, last: u64) -> Vec<(u64, u64)> {
        let mut covered: Vec<(u64, u64)> = self.events.keys().map(|&s| (s, s)).collect();
        covered.extend(&self.ranges);
        covered.extend(&self.gaps);
        super::lines::seq_holes(&covered, last)
    }

    /// The highest origin seq accounted for.
    pub fn last(&self) -> u64 {
        let events = self.events.keys().next_back().copied().unwrap_or(0);
        let ranges = self.ranges.iter().chain(&self.gaps).map(|r| r.1).max();
        events.max(ranges.unwrap_or(0))
    }

    /// Origin seqs that the relay stored more than once (under several relay seqs): the
    /// relay did not de-duplicate a repeated request.
    pub fn stored_twice(&self) -> Vec<(u64, &BTreeSet<u64>)> {
        self.events
            .iter()
            .filter(|(_, r)| r.len() > 1)
            .map(|(&s, r)| (s, r))
            .collect()
    }
}

/// The events that came through a relay, by `origin_agent_id`. Panics on an event with an
/// origin id but no numeric `origin_seq` (gap and range records excepted).
pub fn origins(events: &[Value]) -> BTreeMap<String, OriginStream> {
    let mut by: BTreeMap<String, OriginStream> = BTreeMap::new();
    for e in events {
        let Some(id) = e["origin_agent_id"].as_str() else {
            continue;
        };
        let stream = by.entry(id.to_string()).or_default();
        let span = || (e["first_seq"].as_u64(), e["last_seq"].as_u64());
        match e["gapless"].as_str() {
            Some("range") => match span() {
                (Some(a), Some(z)) => stream.ranges.push((a, z)),
                _ => panic!("a range record without first_seq/last_seq: {e}"),
            },
            Some("gap") => {
                if let (Some(a), Some(z)) = span() {
                    stream.gaps.push((a, z));
                }
            }
            _ => {
                let seq = e["origin_seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("an origin event without origin_seq: {e}"));
                let relay_seq = e["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("an event without the relay's seq: {e}"));
                stream.events.entry(seq).or_default().insert(relay_seq);
            }
        }
    }
    by
}

/// What `gapless verify-stream` said about a capture of the platform behind a relay.
pub struct Verified {
    /// Exit status of the text run.
    pub status: ExitStatus,
    /// Its stdout.
    pub text: String,
    /// `--json`'s output: `{"hop": {…}, "origins": {"<id>": {…}}}`.
    pub json: Value,
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}; text:\n{}\njson: {:#}",
            self.status, self.text, self.json
        )
    }
}

impl Verified {
    /// The report of one origin, `Null` if there is none.
    pub fn origin(&self, id: &str) -> &Value {
        &self.json["origins"][id]
    }

    /// Panics unless the run exited 0 and neither the hop nor any origin (and at least
    /// `ids`) has a missing range, in the text and in the JSON.
    pub fn assert_no_missing(&self, ids: &[&str]) {
        assert!(self.status.success(), "verify-stream: {self:?}");
        assert_eq!(
            self.json["hop"]["missing"],
            serde_json::json!([]),
            "{self:?}"
        );
        for id in ids {
            assert_eq!(
                self.origin(id)["missing"],
                serde_json::json!([]),
                "origin {id}: {self:?}"
            );
            assert!(
                self.text
                    .lines()
                    .any(|l| l.starts_with(&format!("origin {id}: seqs 1..")) && l.ends_with(" 0 missing ranges")),
                "verify-stream's text has no line \"origin {id}: seqs 1..…, 0 missing ranges\": {self:?}"
            );
        }
        for (id, report) in self.json["origins"].as_object().into_iter().flatten() {
            assert_eq!(
                report["missing"],
                serde_json::json!([]),
                "origin {id}: {self:?}"
            );
        }
        assert!(!self.text.contains("MISSING"), "{self:?}");
    }
}

/// Writes what `receiver` accepted as a capture in `dir` and runs `gapless verify-stream`
/// on it, as text and as JSON.
pub fn verify_relay(receiver: &Receiver, dir: &Path) -> Verified {
    let capture = dir.join("relay-capture.ndjson");
    write_capture(&capture, &capture_lines(&receiver.requests()));
    let (status, text, stderr) = verify_stream(&capture, 1, &[]);
    let (_, json, _) = verify_stream(&capture, 1, &["--json"]);
    let json = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("verify-stream --json is not JSON ({e}): {json}\ntext run: {text}\n{stderr}")
    });
    Verified { status, text, json }
}

/// The top-level keys of a JSON object's text, in the order written.
pub fn top_level_keys(raw: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    de.deserialize_map(Keys)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {raw}"))
}
