//! `durafs`: mounts a power-cut test file system and serves its control socket.

use std::process::ExitCode;

fn main() -> ExitCode {
    match durafs::cli::run(std::env::args_os().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durafs: {e}\n{}", durafs::cli::USAGE);
            ExitCode::FAILURE
        }
    }
}
