//! Config errors and where they are: [`ConfigError`], turning TOML/serde errors into
//! "key and line", and finding the line of a key for errors found after parsing.

use std::fmt;
use std::path::PathBuf;

/// A config problem: where (line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, when known.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`sinks.platform.uri`), when known.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn at(line: usize, key: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            line: Some(line),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error")?;
        if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ", key `{}`", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a TOML/serde error into one naming the key and line, in words a user knows:
/// "expected a whole number" rather than `usize`, "did you mean `include`?" rather than
/// every key any type takes, and for a table header without its `]` that line and no key.
pub(super) fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let reason = plain_reason(e.message().trim());
    if let Some(line) = unclosed_header(text, e.span().map(|s| s.start)) {
        let header = text.lines().nth(line - 1).unwrap_or("").trim();
        return ConfigError {
            file: None,
            line: Some(line),
            key: String::new(),
            reason: format!("table header {header:?} is not closed: write it as [name]"),
        };
    }
    let Some(span) = e.span() else {
        return ConfigError {
            file: None,
            line: None,
            key: String::new(),
            reason,
        };
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    // An unknown table (`[apii]`) is a field of the table above its name, not of itself.
    let table = match text.lines().nth(line - 1).and_then(header_path) {
        Some(mut path) => {
            path.pop();
            path
        }
        None => table_at(text, line),
    };
    // For an unknown field serde names it; the span may cover the whole table.
    let named = reason
        .strip_prefix("unknown key `")
        .and_then(|r| r.split('`').next())
        .map(str::to_string);
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let (line, key) = match named {
        Some(field) => match locate_in_table(text, &table, &field, line) {
            Some(found) => (found, join(&table, &field)),
            None => {
                // Inside an inline table on the spanned line, e.g. `batch = { typo = 1 }`.
                let this_line = text[line_start..].lines().next().unwrap_or("");
                let at = this_line
                    .find(&format!("{field} "))
                    .or_else(|| this_line.find(&format!("{field}=")));
                let mut path = table.clone();
                if let Some(at) = at {
                    path.extend(
                        key_path_at(this_line, at)
                            .into_iter()
                            .filter(|k| k != &field),
                    );
                }
                (line, join(&path, &field))
            }
        },
        None => {
            let this_line = text[line_start..].lines().next().unwrap_or("");
            let col = span.start.saturating_sub(line_start);
            let mut path = table.clone();
            path.extend(key_path_at(this_line, col));
            (line, path.join("."))
        }
    };
    ConfigError {
        file: None,
        line: Some(line),
        key,
        reason,
    }
}

/// The line of a table header without its closing `]` at or before `at` (the error's
/// position), if there is one: the parser notices it later, on some other line.
fn unclosed_header(text: &str, at: Option<usize>) -> Option<usize> {
    let upto = at.map_or(text.len(), |a| {
        text[a.min(text.len())..]
            .find('\n')
            .map_or(text.len(), |n| a + n)
    });
    text[..upto]
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.split('#').next().unwrap_or("").trim();
            t.starts_with('[') && !t.ends_with(']')
        })
        .map(|(i, _)| i + 1)
        .last()
}

/// serde's message in a user's words: Rust type names become what to write, and the list of
/// every key any type takes becomes the nearest key, if one is near.
fn plain_reason(message: &str) -> String {
    let mut reason = message.to_string();
    for (rust, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected u8", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list like [\"a\", \"b\"]"),
        (
            "expected a map",
            "expected a table like { key = \"value\" }",
        ),
    ] {
        if let Some(at) = reason.find(rust) {
            reason.replace_range(at..at + rust.len(), plain);
        }
    }
    if let Some(rest) = reason.strip_prefix("invalid type: string \"") {
        if let Some(value) = rest.split('"').next() {
            if value.parse::<f64>().is_ok() && reason.contains("number") {
                reason.push_str(&format!(" (write it without quotes: {value})"));
            }
        }
    }
    if let Some(rest) = reason.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let nearest = known
            .iter()
            .map(|k| (edit_distance(field, k), *k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 4))
            .min();
        reason = match nearest {
            Some((_, k)) => format!("unknown key `{field}`: did you mean `{k}`?"),
            None => format!("unknown key `{field}`"),
        };
    }
    reason
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The key path that a value at column `col` of `line` belongs to, following inline tables:
/// for `batch = { max_events = "many" }` at the value, `["batch", "max_events"]`.
pub(super) fn key_path_at(line: &str, col: usize) -> Vec<String> {
    let prefix = &line[..col.min(line.len())];
    let mut stack: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut pending: Option<String> = None;
    let mut in_string: Option<char> = None;
    for c in prefix.chars() {
        if let Some(q) = in_string {
            if c == q {
                in_string = None;
            }
            if pending.is_none() {
                token.push(c);
            }
            continue;
        }
        match c {
            '"' | '\'' => {
                in_string = Some(c);
                if pending.is_none() {
                    token.push(c);
                }
            }
            '=' => {
                pending = Some(token.trim().trim_matches('"').to_string());
                token.clear();
            }
            '{' => {
                if let Some(k) = pending.take() {
                    stack.push(k);
                }
                token.clear();
            }
            '}' => {
                stack.pop();
                pending = None;
                token.clear();
            }
            ',' => {
                pending = None;
                token.clear();
            }
            _ if pending.is_none() => token.push(c),
            _ => {}
        }
    }
    if let Some(k) = pending {
        stack.push(k);
    } else if !token.trim().is_empty() && !prefix.contains('=') {
        stack.push(token.trim().trim_matches('"').to_string());
    }
    stack.into_iter().filter(|k| !k.is_empty()).collect()
}

fn join(table: &[String], key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{}.{}", table.join("."), key)
    }
}

/// The table header in force at `line`, as a path.
fn table_at(text: &str, line: usize) -> Vec<String> {
    let mut table = Vec::new();
    for l in text.lines().take(line) {
        if let Some(path) = header_path(l) {
            table = path;
        }
    }
    table
}

fn header_path(line: &str) -> Option<Vec<String>> {
    let t = line.trim();
    let inner = t
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim_start_matches('[');
    Some(
        inner
            .split('.')
            .map(|p| p.trim().trim_matches('"').to_string())
            .collect(),
    )
}

fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

/// The line where `key` is set inside `table` (or, failing that, `fallback`).
fn locate_in_table(text: &str, table: &[String], key: &str, _fallback: usize) -> Option<usize> {
    let mut current: Vec<String> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(path) = header_path(l) {
            current = path;
            continue;
        }
        if current == table && key_on_line(text, i + 1).as_deref() == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

/// The line of a dotted key path, searching its table then its parents (for keys set in
/// inline tables such as `batch = { … }`).
fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    for cut in (1..=path.len()).rev() {
        let (table, key) = path[..cut].split_at(cut - 1);
        let table: Vec<String> = table.iter().map(|s| s.to_string()).collect();
        if let Some(l) = locate_in_table(text, &table, key[0], 0) {
            return Some(l);
        }
        // A whole table header, e.g. [sinks.platform].
        let header: Vec<String> = path[..cut].iter().map(|s| s.to_string()).collect();
        for (i, l) in text.lines().enumerate() {
            if header_path(l).as_ref() == Some(&header) {
                return Some(i + 1);
            }
        }
    }
    None
}

/// An error about a validated key: finds its line in the text.
pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
}

impl Checker<'_> {
    pub(super) fn err(&self, path: &[&str], reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: None,
            line: line_of(self.text, path),
            key: path.join("."),
            reason: reason.into(),
        }
    }
}
