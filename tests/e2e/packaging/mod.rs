//! What `packaging/` ships, checked against what the agent does: the Kubernetes sidecar
//! manifest (parsed as YAML), the container image's config (the real binary runs on it,
//! configured from the environment alone, as in the image), the Dockerfile and the systemd
//! unit (as text).
//!
//! There is no Docker engine on the development machine or CI, so the image itself is
//! never built here: the test runs the binary the image would hold on the config file the
//! image copies, with `GAPLESS_CONFIG` and plain `gapless run` as its entrypoint does, and
//! checks the Dockerfile's instructions as text. `packaging/test-deb.sh` covers the .deb
//! and `systemd-analyze verify`.
//!
//! `kubernetes`, `container` (the image's config and Dockerfile) and `systemd`, one file each.

mod container;
mod docs;
mod kubernetes;
mod systemd;

use std::collections::BTreeSet;
use std::path::PathBuf;

/// A file under `packaging/`.
pub fn packaging(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(path)
}

/// A file under `packaging/`, as text.
pub fn read(path: &str) -> String {
    let path = packaging(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The variables a config takes from the environment without a default (`${VAR}`).
pub fn required_variables(config: &str) -> BTreeSet<String> {
    config
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(inner, _)| inner))
        .filter(|inner| !inner.contains(":-"))
        .map(str::to_string)
        .collect()
}
