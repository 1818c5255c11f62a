//! Links the `gapless` binary with its functions in the order of `layout/symbol-order.txt`:
//! the functions a run of the agent executes (start, file and http sources, WAL, gzip,
//! http sink, shutdown), one after another at the start of `.text`, instead of spread over
//! the whole 9 MiB of code. The kernel maps code in 64 KiB runs around each page touched, so
//! spread code made most of the binary resident (7.5 MiB of the peak RSS); packed, what runs
//! fits in under 3 MiB. Only the layout changes, never what the code does.
//!
//! The list is written by `bench/symbol_order.py` (callgrind over the benchmark's runs);
//! names the build no longer has are ignored and new functions go after the listed ones, so
//! a stale list costs memory, never correctness. The ordering file is an LLD option — the
//! linker Rust uses on x86_64 Linux since 1.90; elsewhere, or with `GAPLESS_SYMBOL_ORDER=0`,
//! the binary is linked as usual.

use std::env;
use std::path::Path;
use std::process::Command;

/// Whether the compiler is 1.90 or later (LLD by default on x86_64 Linux).
fn links_with_lld() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

fn main() {
    println!("cargo:rerun-if-changed=layout/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=GAPLESS_SYMBOL_ORDER");
    if env::var("GAPLESS_SYMBOL_ORDER").is_ok_and(|v| v == "0") {
        return;
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") || !links_with_lld() {
        return;
    }
    let Ok(dir) = env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = Path::new(&dir).join("layout").join("symbol-order.txt");
    if !order.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=gapless=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=gapless=-Wl,--no-warn-symbol-ordering");
}
