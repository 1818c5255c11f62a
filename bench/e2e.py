#!/usr/bin/env python3
"""End-to-end benchmark: N pre-written 200-byte lines in a file -> gapless (file source,
durability always, gzip) -> a local receiver that counts lines.

Prints lines/s, MB/s (of raw lines), the agent's CPU seconds and peak RSS.

    python3 bench/e2e.py [--lines 2000000] [--outage-gib 0] [--files 1] [--nofile N]

With --files F the lines are spread over F files (many small files: the descriptor budget
and per-file costs); --nofile N starts the agent with `ulimit -n N` (soft and hard).

With --outage-gib G the receiver is started only after the agent has built a backlog of
about G GiB in its WAL, to show that memory does not grow with the backlog.
"""
import argparse, os, resource, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / tick
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm

def count(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        lines, nbytes = r.read().split()
        return int(lines), int(nbytes)

def wal_bytes(api_port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("gapless_wal_bytes "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--outage-gib", type=float, default=0.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--nofile", type=int, default=0)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gapless", "--bin", "gapless", "--example", "count_receiver"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "release", "gapless")
    recv_exe = os.path.join(ROOT, "target", "release", "examples", "count_receiver")

    work = tempfile.mkdtemp(prefix="gapless-bench-", dir=os.path.join(ROOT, "target"))
    logdir = os.path.join(work, "logs"); os.makedirs(logdir)
    line = (b"2026-11-26T12:00:00.000Z INFO  service=checkout request_id=%010d user=42 "
            b"path=/api/v1/cart/items status=200 latency_ms=12 bytes=5123 msg=\"item added to cart\" pad=")
    per_file = -(-args.lines // args.files)
    raw_bytes = 0
    for n in range(args.files):
        log = os.path.join(logdir, "app.log" if args.files == 1 else f"app-{n:06}.log")
        with open(log, "wb") as f:
            for i in range(n * per_file, min(args.lines, (n + 1) * per_file)):
                l = line % i
                f.write(l + b"x" * (199 - len(l)) + b"\n")
        raw_bytes += os.path.getsize(log)

    recv_port, api_port = free_port(), free_port()
    cfg = os.path.join(work, "gapless.toml")
    with open(cfg, "w") as f:
        f.write(f"""
data_dir = "{work}/data"
[api]
address = "127.0.0.1:{api_port}"
[wal]
durability = "always"
max_bytes = "8GiB"
[sources.app]
type = "file"
include = ["{logdir}/*.log"]
[sinks.platform]
type = "http"
uri = "http://127.0.0.1:{recv_port}/ingest"
compression = "gzip"
batch = {{ max_events = 5000, max_bytes = "4MiB", timeout = "200ms" }}
retry = {{ initial_backoff = "100ms", max_backoff = "1s" }}
[log]
level = "warn"
""")
    recv = None
    if args.outage_gib == 0:
        recv = subprocess.Popen([recv_exe, f"127.0.0.1:{recv_port}"])
        time.sleep(0.3)
    t0 = time.time()
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))) if args.nofile else None
    agent = subprocess.Popen([exe, "run", "--config", cfg], stderr=open(os.path.join(work, "agent.log"), "wb"), preexec_fn=limit)
    peak_backlog_rss = None
    try:
        if args.outage_gib > 0:
            target = args.outage_gib * (1 << 30)
            while wal_bytes(api_port) < target:
                if time.time() - t0 > 600:
                    sys.exit("backlog did not build up")
                time.sleep(0.5)
            _, peak_backlog_rss = proc_stats(agent.pid)
            print(f"backlog of {wal_bytes(api_port)/(1<<30):.2f} GiB built; agent peak RSS so far {peak_backlog_rss/(1<<20):.1f} MiB")
            recv = subprocess.Popen([recv_exe, f"127.0.0.1:{recv_port}"])
            time.sleep(0.3)
            t0 = time.time()
        while True:
            n, _ = count(recv_port) if recv else (0, 0)
            if n >= args.lines:
                break
            if time.time() - t0 > 900:
                sys.exit(f"timeout: only {n} of {args.lines} lines arrived")
            time.sleep(0.05)
        took = time.time() - t0
        cpu, hwm = proc_stats(agent.pid)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        if recv:
            recv.terminate()
    print(f"lines:     {args.lines}")
    print(f"seconds:   {took:.2f}")
    print(f"lines/s:   {args.lines / took:,.0f}")
    print(f"MB/s:      {raw_bytes / took / 1e6:.1f} (raw lines)")
    print(f"agent CPU: {cpu:.2f} s ({cpu / took:.2f} cores)")
    print(f"peak RSS:  {hwm / (1 << 20):.1f} MiB")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
