//! Durable file-system steps for the agent's own state outside the WAL (`data_dir`, source
//! state directories, dead letters, `agent_id`). A file or directory entry survives a power
//! cut only once the file *and the directory holding its name* are synced; these helpers
//! do both, parent first, before anything that depends on them is acknowledged. The WAL
//! does the same for its own files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Syncs the directory `dir` (its entries: creations, renames, removals).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `create_dir_all`, durably: every directory it creates is synced, and so is the
/// directory that holds its name. Directories that already exist are synced too (a
/// previous run may have created them and lost power before syncing), which costs one
/// fsync per component at start.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` crash-atomically and durably: a temporary file beside it is
/// written and synced, renamed over `path`, and the directory synced. A reader sees the
/// old content or the new, never a mix or a prefix, after a crash or a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_dir_all_creates_every_missing_level_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(create_dir_all(&dir.path().join("file/sub")).is_err());
    }

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent_id");
        write_atomic(&p, b"one\n").unwrap();
        write_atomic(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert!(!dir.path().join("agent_id.tmp").exists());
    }
}
