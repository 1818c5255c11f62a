#!/usr/bin/env python3
"""Writes agent/layout/symbol-order.txt: the functions of the `gapless` binary that a run of
the agent executes, for the linker to place together (see agent/build.rs).

For each way the binary is built here — `cargo build --release -p gapless` (a user's build,
the container's) and with the benchmark's `--example count_receiver` (bench/e2e.py,
packaging/test-deb.sh; dev-dependencies change some dependencies' features and so their
symbol names) — it runs bench/e2e.py's file (plain and JSON lines) and http-source
workloads under `valgrind --tool=callgrind` and keeps every function callgrind saw executed
in the binary. The list is the union, sorted. Run it again after changing dependencies or
the compiler (names the build no longer has are ignored by the linker: a stale list costs
memory, never correctness). Needs valgrind; takes about 15 minutes on 2 cores.

    python3 bench/symbol_order.py [--lines 30000]
"""
import argparse, glob, os, re, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "agent", "layout", "symbol-order.txt")
FLAVOURS = [["--bin", "gapless"], ["--bin", "gapless", "--example", "count_receiver"]]
WORKLOADS = [["--shape", "plain"], ["--shape", "json"], ["--source", "http"]]


def executed(profile_dir, binary):
    """Names of the functions in `binary` that the callgrind profiles saw executed."""
    names = set()
    for path in glob.glob(os.path.join(profile_dir, "*.out")):
        ob = None
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("ob="):
                    ob = line[3:].strip()
                elif line.startswith("fn=") and ob == binary:
                    # callgrind marks recursion levels as name'2
                    names.add(re.sub(r"'\d+$", "", line[3:].strip()))
    return names


def defined(binary):
    out = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    return {p[2] for p in (l.split() for l in out.splitlines()) if len(p) == 3 and p[1] in "tTwW"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=30000)
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed (apt install valgrind)")
    work = tempfile.mkdtemp(prefix="gapless-order-")
    names = set()
    for flavour in FLAVOURS:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "gapless", *flavour], cwd=ROOT, check=True)
        binary = os.path.join(work, "gapless-" + str(len(names)))
        shutil.copy(os.path.join(ROOT, "target", "release", "gapless"), binary)
        profiles = os.path.join(work, "profiles-" + os.path.basename(binary))
        os.makedirs(profiles)
        wrapper = binary + ".sh"
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --compress-strings=no "
                    f"--dump-line=no --callgrind-out-file={profiles}/cg.%p.out {binary} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        for workload in WORKLOADS:
            subprocess.run([sys.executable, os.path.join(ROOT, "bench", "e2e.py"), "--lines", str(args.lines),
                            "--agent", wrapper, *workload], check=True, stdout=subprocess.DEVNULL)
        seen = executed(profiles, binary) & defined(binary)
        print(f"{' '.join(flavour)}: {len(seen)} functions executed", file=sys.stderr)
        names |= seen
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("".join(n + "\n" for n in sorted(names)))
    print(f"{OUT}: {len(names)} names", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
