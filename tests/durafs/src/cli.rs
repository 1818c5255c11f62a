//! The `durafs` command line: `durafs mount <backing_dir> <mountpoint> --control <socket>
//! [--seed N]`. Runs in the foreground until a `cut` arrives on the control socket.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::control::serve;
use crate::error::{Error, Result};
use crate::mount::MountOptions;
use crate::DuraFs;

/// The usage line.
pub const USAGE: &str =
    "usage: durafs mount <backing_dir> <mountpoint> --control <unix_socket_path> [--seed N]";

struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    control: PathBuf,
    seed: Option<u64>,
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let usage = |reason| Error::BadCommand {
        line: USAGE.to_string(),
        reason,
    };
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("mount".as_ref()) {
        return Err(usage("the only command is mount"));
    }
    let mut positional = Vec::new();
    let (mut control, mut seed) = (None, None);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--control") => control = args.next().map(PathBuf::from),
            Some("--seed") => {
                let s = args.next().and_then(|s| s.to_str()?.parse().ok());
                seed = Some(s.ok_or_else(|| usage("--seed takes a number"))?);
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [backing, mountpoint] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| usage("mount takes a backing directory and a mount point"))?;
    Ok(Args {
        backing,
        mountpoint,
        control: control.ok_or_else(|| usage("--control is required"))?,
        seed,
    })
}

/// Parses `args` (without the program name), mounts and serves until the cut.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<()> {
    let args = parse(args)?;
    let handle = DuraFs::mount(
        &args.backing,
        &args.mountpoint,
        MountOptions { seed: args.seed },
    )?;
    eprintln!(
        "durafs: {} mounted on {} (seed {}; control socket {})",
        args.backing.display(),
        args.mountpoint.display(),
        handle.seed(),
        args.control.display()
    );
    let report = serve(handle, &args.control)?;
    eprintln!(
        "durafs: cut {:?} (seed {}), {} unsynced bytes kept",
        report.mode, report.seed, report.kept_bytes
    );
    Ok(())
}
