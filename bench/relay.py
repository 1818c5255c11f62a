#!/usr/bin/env python3
"""Relay benchmark: many agents -> one relay (gapless source, WAL durability always, http
sink, gzip) -> a local receiver that counts events (agent/examples/count_receiver.rs, as
bench/e2e.py).

By default the agents are simulated: --agents threads, each with its own agent id, posting
gzip NDJSON batches of --batch events of about 200 bytes, seqs 1, 2, … in order, with the
headers an agent's gapless sink sends (Gapless-Agent-Id, Gapless-Seq-Range, Gapless-Prev-Seq,
Idempotency-Key) and a shared bearer token; a 503 or a lost connection is retried with the
same request, as the sink does. Bodies are built and gzipped before the clock starts, so
that Python is not what is measured (only their gzipped bytes are kept: ~7 B per event).

Prints events/s through the relay (first request to the last event counted at the
receiver), the rate at which the relay answered 200 (events durable in its WAL), the relay's
CPU seconds and µs per event, and its peak RSS.

    python3 bench/relay.py [--agents 200] [--events 1000000] [--batch 500]

With --outage-gib G the receiver is started only after the relay's WAL holds a backlog of
about G GiB (--events is raised to what that takes); the relay's RSS is printed at every
eighth of G as the backlog grows, then the drain is timed.

    python3 bench/relay.py --outage-gib 1

With --real-agents K, K real gapless agents (file source over a pre-written file of
--events/K lines, gapless sink, durability always) send instead of the simulated ones.

--no-build skips `cargo build --release` (build first with the same toolchain); --relay PATH
runs another gapless binary as the relay (and the real agents).
"""
import argparse, gzip, http.client, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Measuring helpers shared with the end-to-end bench.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import count_http as count, free_port, metric, proc_stats, wal_bytes  # noqa: E402


TOKEN = "bench-shared-token"
MESSAGE = b"INFO checkout request_id=%010d user=42 path=/api/v1/cart status=200 msg=added pad="
# What an agent's sink writes for a file event, `seq` first: about 200 bytes.
EVENT = (b'{"seq":%d,"message":"%s","timestamp":"2026-11-30T12:00:00.000Z",'
         b'"host":"host-%03d","source":"app","file":"/var/log/app.log"}')


def event(agent, seq):
    m = MESSAGE % seq
    return EVENT % (seq, m + b"x" * max(0, 90 - len(m)), agent % 1000)


def body(agent, first, last):
    """One request of agent `agent` for seqs first..=last: (headers, gzip NDJSON body)."""
    ndjson = b"\n".join(event(agent, s) for s in range(first, last + 1)) + b"\n"
    agent_id = f"bench-agent-{agent:04}"
    headers = {
        "content-type": "application/x-ndjson",
        "content-encoding": "gzip",
        "authorization": f"Bearer {TOKEN}",
        "gapless-agent-id": agent_id,
        "gapless-seq-range": f"{first}-{last}",
        "gapless-prev-seq": str(first - 1),
        "idempotency-key": f"{agent_id}-relay-{first}-{last}",
    }
    return headers, gzip.compress(ndjson, compresslevel=1), len(ndjson)


def requests_of(agent, events, batch):
    """The (first, last) seqs of each request of one agent."""
    return [(f, min(f + batch - 1, events)) for f in range(1, events + 1, batch)]


class Simulated:
    """--agents threads posting their batches in order, each over one keep-alive connection."""

    def __init__(self, port, agents, events, batch):
        per = [events // agents + (1 if a < events % agents else 0) for a in range(agents)]
        self.port, self.batch = port, batch
        self.plan = [requests_of(a, per[a], batch) for a in range(agents)]
        self.raw_bytes = 0
        t0 = time.time()
        self.bodies = [[body(a, f, l) for f, l in self.plan[a]] for a in range(agents)]
        self.raw_bytes = sum(b[2] for bs in self.bodies for b in bs)
        wire = sum(len(b[1]) for bs in self.bodies for b in bs)
        print(f"built {sum(len(p) for p in self.plan):,} requests in {time.time() - t0:.1f} s "
              f"({self.raw_bytes / events:.0f} B per event, {wire / events:.1f} B gzipped)")
        self.errors, self.retries, self.done_at = [], 0, None
        self.posted = 0
        self.lock = threading.Lock()

    def run_agent(self, a):
        conn = None
        for i, (first, last) in enumerate(self.plan[a]):
            headers, payload, _ = self.bodies[a][i]
            while True:
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                    conn.request("POST", "/", body=payload, headers=headers)
                    r = conn.getresponse()
                    answer = r.read()
                except OSError:
                    conn = None
                    with self.lock:
                        self.retries += 1
                    time.sleep(0.1)
                    continue
                if r.status == 200:
                    break
                if r.status in (429, 503):
                    with self.lock:
                        self.retries += 1
                    time.sleep(float(r.getheader("retry-after") or 0.2))
                    continue
                self.errors.append(f"{r.status} {answer[:300]!r}")
                return
            with self.lock:
                self.posted += last - first + 1

    def start(self):
        self.t0 = time.time()
        self.threads = [threading.Thread(target=self.run_agent, args=(a,), daemon=True)
                        for a in range(len(self.plan))]
        for t in self.threads:
            t.start()
        def wait():
            for t in self.threads:
                t.join()
            self.done_at = time.time()
        threading.Thread(target=wait, daemon=True).start()


def wait_ready(api_port, proc, what):
    t0 = time.time()
    while True:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.time() - t0 > 60:
            sys.exit(f"{what} never became ready")
        time.sleep(0.05)


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=500, help="events per request of an agent")
    ap.add_argument("--outage-gib", type=float, default=0.0)
    ap.add_argument("--real-agents", type=int, default=0)
    ap.add_argument("--relay", help="a gapless binary to run instead of target/release/gapless")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.outage_gib > 0:
        # A relay record of one of these events takes about 250-300 bytes in the WAL.
        needed = int(args.outage_gib * (1 << 30) / 250)
        if args.events < needed:
            print(f"--outage-gib {args.outage_gib}: {needed:,} events instead of {args.events:,}")
            args.events = needed

    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "gapless", "--bin", "gapless",
                        "--example", "count_receiver"], cwd=ROOT, check=True)
    exe = args.relay or os.path.join(ROOT, "target", "release", "gapless")
    recv_exe = os.path.join(ROOT, "target", "release", "examples", "count_receiver")

    work = tempfile.mkdtemp(prefix="gapless-relay-bench-", dir=os.path.join(ROOT, "target"))
    relay_port, api_port, recv_port = free_port(), free_port(), free_port()
    cfg = os.path.join(work, "relay.toml")
    with open(cfg, "w") as f:
        f.write(f"""
data_dir = "{work}/relay-data"
[api]
address = "127.0.0.1:{api_port}"
[wal]
durability = "always"
max_bytes = "8GiB"
[sources.agents]
type = "gapless"
address = "127.0.0.1:{relay_port}"
max_body_bytes = "64MiB"
auth = {{ bearer_token = "{TOKEN}" }}
[sinks.platform]
type = "http"
uri = "http://127.0.0.1:{recv_port}/ingest"
compression = "gzip"
batch = {{ max_events = 5000, max_bytes = "4MiB", timeout = "200ms" }}
retry = {{ initial_backoff = "100ms", max_backoff = "1s" }}
[log]
level = "warn"
""")

    agents_procs, sim = [], None
    if args.real_agents:
        per = -(-args.events // args.real_agents)
        raw_bytes = 0
        for k in range(args.real_agents):
            d = os.path.join(work, f"agent-{k}")
            os.makedirs(os.path.join(d, "logs"))
            with open(os.path.join(d, "logs", "app.log"), "wb") as f:
                for i in range(k * per, min(args.events, (k + 1) * per)):
                    m = MESSAGE % i
                    f.write(m + b"x" * max(0, 90 - len(m)) + b"\n")
            raw_bytes += os.path.getsize(os.path.join(d, "logs", "app.log"))
    else:
        sim = Simulated(relay_port, args.agents, args.events, args.batch)

    recv = None
    if args.outage_gib == 0:
        recv = subprocess.Popen([recv_exe, f"127.0.0.1:{recv_port}"])
        time.sleep(0.3)
    relay = subprocess.Popen([exe, "run", "--config", cfg], stderr=open(os.path.join(work, "relay.log"), "wb"))
    wait_ready(api_port, relay, "the relay")
    samples = []
    try:
        t0 = time.time()
        if sim:
            sim.start()
        for k in range(args.real_agents):
            d = os.path.join(work, f"agent-{k}")
            agent_cfg = os.path.join(d, "gapless.toml")
            with open(agent_cfg, "w") as f:
                f.write(f"""
data_dir = "{d}/data"
agent_id = "bench-real-agent-{k:03}"
[api]
address = "127.0.0.1:{free_port()}"
[wal]
durability = "always"
[sources.app]
type = "file"
include = ["{d}/logs/*.log"]
[sinks.relay]
type = "gapless"
uri = "http://127.0.0.1:{relay_port}/"
auth = {{ bearer_token = "{TOKEN}" }}
batch = {{ max_events = 5000, max_bytes = "4MiB", timeout = "200ms" }}
retry = {{ initial_backoff = "100ms", max_backoff = "1s" }}
[log]
level = "warn"
""")
            agents_procs.append(subprocess.Popen([exe, "run", "--config", agent_cfg],
                                                 stderr=open(os.path.join(d, "agent.log"), "wb")))
        if args.outage_gib > 0:
            target = args.outage_gib * (1 << 30)
            step = target / 8
            next_sample = step
            while True:
                backlog = wal_bytes(api_port)
                if backlog >= next_sample:
                    samples.append((backlog, rss(relay.pid)))
                    print(f"backlog {backlog / (1 << 30):.2f} GiB: relay RSS {samples[-1][1] / (1 << 20):.1f} MiB")
                    next_sample = (int(backlog / step) + 1) * step
                if backlog >= target:
                    break
                if sim and sim.done_at and time.time() - sim.done_at > 2:
                    print(f"every event posted with a backlog of {backlog / (1 << 30):.2f} GiB")
                    break
                if sim and sim.errors:
                    sys.exit(f"the relay refused a request: {sim.errors[0]}")
                if relay.poll() is not None:
                    sys.exit(f"the relay exited with {relay.returncode}")
                if time.time() - t0 > 1800:
                    sys.exit("the backlog did not build up")
                time.sleep(0.25)
            _, peak_backlog_rss = proc_stats(relay.pid)
            print(f"backlog of {wal_bytes(api_port) / (1 << 30):.2f} GiB built in {time.time() - t0:.0f} s; "
                  f"relay RSS {rss(relay.pid) / (1 << 20):.1f} MiB, peak so far {peak_backlog_rss / (1 << 20):.1f} MiB")
            cpu_before, _ = proc_stats(relay.pid)
            recv = subprocess.Popen([recv_exe, f"127.0.0.1:{recv_port}"])
            time.sleep(0.3)
            t0 = time.time()
        expected = args.events
        last_n, last_change = -1, time.time()
        while True:
            n, _ = count(recv_port) if recv else (0, 0)
            if n >= expected:
                break
            if n != last_n:
                last_n, last_change = n, time.time()
            if sim and sim.errors:
                sys.exit(f"the relay refused a request: {sim.errors[0]}")
            if relay.poll() is not None:
                sys.exit(f"the relay exited with {relay.returncode}")
            if time.time() - last_change > 120:
                sys.exit(f"stuck: {n:,} of {expected:,} events arrived")
            time.sleep(0.05)
        took = time.time() - t0
        cpu, hwm = proc_stats(relay.pid)
        wire = metric(api_port, "gapless_sink_bytes_sent_total", 'sink="platform"')
        _, plain_bytes = count(recv_port)
    finally:
        for p in agents_procs:
            p.send_signal(signal.SIGTERM)
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
        for p in agents_procs:
            p.wait(timeout=30)
        if recv:
            recv.terminate()

    senders = f"{args.real_agents} real agents" if args.real_agents else f"{args.agents} simulated agents"
    print(f"senders:   {senders}, {args.events:,} events" + ("" if args.real_agents else f" in requests of {args.batch}"))
    if sim and sim.done_at and (args.outage_gib == 0 or sim.done_at < t0):
        took_ingest = sim.done_at - sim.t0
        print(f"relay answered 200 for all events in {took_ingest:.2f} s: {args.events / took_ingest:,.0f} events/s "
              f"({sim.retries} retries)")
    print(f"seconds:   {took:.2f}" + (" (drain)" if args.outage_gib else ""))
    print(f"events/s:  {expected / took:,.0f} through the relay" + (" (drain of the backlog)" if args.outage_gib else ""))
    if args.outage_gib:
        print(f"relay CPU: {cpu:.2f} s in all ({cpu / expected * 1e6:.2f} µs per event, ingest and drain); "
              f"drain {cpu - cpu_before:.2f} s ({(cpu - cpu_before) / expected * 1e6:.2f} µs per event)")
        print("relay RSS while the backlog grew: " + ", ".join(
            f"{b / (1 << 30):.2f} GiB {r / (1 << 20):.1f} MiB" for b, r in samples))
    else:
        print(f"relay CPU: {cpu:.2f} s ({cpu / took:.2f} cores, {cpu / expected * 1e6:.2f} µs per event)")
    print(f"peak RSS:  {hwm / (1 << 20):.1f} MiB (relay)")
    if wire and plain_bytes:
        print(f"wire:      {wire / expected:.1f} bytes per event to the platform (gzip), {plain_bytes / expected:.1f} before gzip")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
