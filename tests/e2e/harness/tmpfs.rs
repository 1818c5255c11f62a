//! [`Tmpfs`]: a small tmpfs mounted on a temporary directory, to fill a file system for
//! real. Needs root (tests and CI run as root); says so clearly otherwise.

use std::path::Path;
use std::process::Command;

use super::effective_uid;

/// A tmpfs of a given size, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `"16m"`).
    pub fn mount(size: &str) -> Tmpfs {
        let euid = effective_uid();
        assert!(
            euid == 0,
            "this test mounts a {size} tmpfs to fill it and needs root (CI runs as root); \
             it runs as uid {euid}"
        );
        let dir = tempfile::Builder::new()
            .prefix("gapless-e2e-tmpfs-")
            .tempdir()
            .expect("a mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {}: {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something (a killed agent's files) may still be busy: detach lazily.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
