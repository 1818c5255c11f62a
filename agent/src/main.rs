//! The `gapless` binary: everything is in the library; see `cli`.

/// jemalloc rather than glibc's malloc: the agent allocates and frees buffers of hundreds
/// of KiB from several threads, which glibc's per-thread arenas turn into resident memory
/// that is not given back (measured in the end-to-end bench: 52 vs 45 MiB peak RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    gapless::cli::main()
}
