//! Real journal files for the journald source: entries written in journal export format and
//! turned into a `.journal` file by `systemd-journal-remote` (package
//! `systemd-journal-remote`), which appends to the file on every run. `journalctl
//! --directory` reads them as it reads the system journal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The converter from export format to journal files.
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// One entry: fields in order; a value with a newline or a byte that is not printable
/// text is written in the export format's binary form.
#[derive(Debug, Clone, Default)]
pub struct JournalEntry {
    fields: Vec<(String, Vec<u8>)>,
}

impl JournalEntry {
    /// An entry with `MESSAGE` set to `message`.
    pub fn message(message: impl AsRef<[u8]>) -> Self {
        JournalEntry::default().field("MESSAGE", message)
    }

    /// Adds a field.
    pub fn field(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.fields.push((key.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets `_SYSTEMD_UNIT`.
    pub fn unit(self, unit: &str) -> Self {
        self.field("_SYSTEMD_UNIT", unit)
    }
}

/// A journal directory holding one journal file that tests append to.
pub struct Journal {
    dir: PathBuf,
    file: String,
    boot: String,
    /// Realtime of the next entry, µs since the epoch.
    clock_us: u64,
    monotonic_us: u64,
}

impl Journal {
    /// A journal in `dir` (created), its first boot `boot` (32 hex digits).
    pub fn create(dir: &Path) -> Journal {
        std::fs::create_dir_all(dir).unwrap();
        Journal {
            dir: dir.to_path_buf(),
            file: "system.journal".into(),
            boot: format!("{:032x}", 0xa),
            // 2023-11-14T22:13:20Z
            clock_us: 1_700_000_000_000_000,
            monotonic_us: 1_000_000,
        }
    }

    /// The directory (`journal_directory`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries written from now on belong to a new boot.
    pub fn new_boot(&mut self, n: u32) {
        self.boot = format!("{n:032x}");
        self.monotonic_us = 1_000_000;
    }

    /// The journal is vacuumed: every file is deleted; later entries go to a new file.
    pub fn vacuum(&mut self) {
        for e in std::fs::read_dir(&self.dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        self.file = format!("system-{}.journal", self.clock_us);
    }

    /// Appends `lines` as entries of `unit`, each with the usual fields.
    pub fn write_lines(&mut self, unit: &str, lines: &[String]) {
        let entries: Vec<JournalEntry> = lines
            .iter()
            .map(|l| JournalEntry::message(l).unit(unit).field("PRIORITY", "6"))
            .collect();
        self.write(&entries);
    }

    /// Appends `entries`, adding `__REALTIME_TIMESTAMP` (1 ms apart),
    /// `__MONOTONIC_TIMESTAMP`, `_BOOT_ID` and `_HOSTNAME=journalhost` to each.
    pub fn write(&mut self, entries: &[JournalEntry]) {
        let mut export = Vec::new();
        for e in entries {
            self.clock_us += 1000;
            self.monotonic_us += 1000;
            write_field(
                &mut export,
                "__REALTIME_TIMESTAMP",
                self.clock_us.to_string().as_bytes(),
            );
            write_field(
                &mut export,
                "__MONOTONIC_TIMESTAMP",
                self.monotonic_us.to_string().as_bytes(),
            );
            write_field(&mut export, "_BOOT_ID", self.boot.as_bytes());
            write_field(&mut export, "_HOSTNAME", b"journalhost");
            for (k, v) in &e.fields {
                write_field(&mut export, k, v);
            }
            export.push(b'\n');
        }
        let out = self.dir.join(&self.file);
        let mut child = Command::new(JOURNAL_REMOTE)
            .arg(format!("--output={}", out.display()))
            .arg("--split-mode=none")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run {JOURNAL_REMOTE} (apt-get install systemd-journal-remote): {e}")
            });
        child.stdin.take().unwrap().write_all(&export).unwrap();
        let result = child.wait_with_output().unwrap();
        assert!(
            result.status.success(),
            "{JOURNAL_REMOTE} failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

fn write_field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let text = value.iter().all(|b| *b >= 0x20 && *b != 0x7f) && std::str::from_utf8(value).is_ok();
    out.extend_from_slice(key.as_bytes());
    if text {
        out.push(b'=');
        out.extend_from_slice(value);
    } else {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.push(b'\n');
}

/// The `journalctl` processes reading `dir`, by pid.
pub fn journalctl_pids(dir: &Path) -> Vec<u32> {
    let needle = format!("--directory={}", dir.display());
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"journalctl"))
            && args.contains(&needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}
