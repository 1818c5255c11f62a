//! The dead-letter queue: batches a destination rejected for good (a 4xx other than 408,
//! 429, 401, 403 and 413-with-one-event) are written here, with the status and response,
//! instead of being thrown away: `data_dir/dead-letter/<sink>/<first>-<last>.ndjson` and a
//! `.meta.json` beside it. Files are written to a temp name, synced, then renamed. A store
//! that fails is an error for the sink to retry: the batch counts as handled only once
//! stored.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the `.meta.json` of a dead-lettered batch says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterMeta {
    /// The sink that gave up on it.
    pub sink: String,
    /// First and last sequence number the batch covered.
    pub first_seq: u64,
    /// Last sequence number.
    pub last_seq: u64,
    /// Events in it.
    pub events: usize,
    /// The HTTP status of the rejection (or the item's status, for a platform answering
    /// item by item).
    pub status: u16,
    /// The platform's error type or code (`mapper_parsing_exception`, `splunk code 6`);
    /// empty when it gave none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The start of the response body.
    pub response: String,
    /// When (RFC 3339).
    pub at: String,
}

/// Stores one rejected batch. Returns the path of its NDJSON file.
pub fn store(dir: &Path, meta: &DeadLetterMeta, ndjson: &[u8]) -> Result<PathBuf> {
    crate::durable::create_dir_all(dir)
        .map_err(|e| Error::io("create dead-letter directory", dir, e))?;
    let stem = format!("{:020}-{:020}", meta.first_seq, meta.last_seq);
    let body_path = dir.join(format!("{stem}.ndjson"));
    let meta_path = dir.join(format!("{stem}.meta.json"));
    write_atomic(&body_path, ndjson)?;
    let meta_json = serde_json::to_vec_pretty(meta).unwrap_or_default();
    write_atomic(&meta_path, &meta_json)?;
    // The batch counts as handled only once both names are durable.
    crate::durable::sync_dir(dir).map_err(|e| Error::io("sync dead-letter directory", dir, e))?;
    Ok(body_path)
}

/// Temp file, sync, rename; a failure leaves no temporary file behind (the store is tried
/// again, and a full disk should not fill up with halves).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).map_err(|e| Error::io("create dead letter", &tmp, e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write dead letter", &tmp, e))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| Error::io("rename dead letter", path, e))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The dead-lettered batches of a sink, oldest first: (ndjson path, meta).
pub fn list(dir: &Path) -> Result<Vec<(PathBuf, DeadLetterMeta)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list dead letters", dir, e)),
    };
    for entry in rd.flatten() {
        let p = entry.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".meta.json") {
            let meta: Option<DeadLetterMeta> = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(meta) = meta {
                out.push((dir.join(format!("{stem}.ndjson")), meta));
            }
        }
    }
    out.sort_by_key(|(_, m)| m.first_seq);
    Ok(out)
}
