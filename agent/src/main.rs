//! The `gapless` binary: everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    gapless::cli::main()
}
