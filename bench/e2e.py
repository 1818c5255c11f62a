#!/usr/bin/env python3
"""End-to-end benchmark: N pre-written 200-byte lines in a file -> gapless (file source,
durability always, gzip) -> a local receiver that counts lines.

Prints lines/s, MB/s (of raw lines), the agent's CPU seconds and peak RSS.

    python3 bench/e2e.py [--lines 2000000] [--outage-gib 0] [--files 1] [--nofile N]

With --files F the lines are spread over F files (many small files: the descriptor budget
and per-file costs); --nofile N starts the agent with `ulimit -n N` (soft and hard).

With --outage-gib G the receiver is started only after the agent has built a backlog of
about G GiB in its WAL, to show that memory does not grow with the backlog.

With --source http the N events are JSON objects of about 200 bytes instead, posted as
NDJSON bodies of --events-per-request events by --clients keep-alive connections to an http
source; it also prints the rate at which the source answered 200 (events durable in the WAL).

    python3 bench/e2e.py --source http [--lines 1000000] [--events-per-request 1000] [--clients 2]

With --shape json the file lines are JSON objects full of quotes (~200 B), whose escaping in
the event's message costs more than plain text.

With --sink azure_monitor_logs|splunk_hec|elasticsearch the agent sends to that platform's
API instead of the generic http sink; the count receiver answers as the platform documents.

With --sink nats the agent publishes to a real `nats-server -js` (Debian package
nats-server) started here with a monitoring port, into an R1 file stream (created over the
NATS protocol with the JetStream API, duplicate window 2 minutes); messages are counted from
the stream's state (`/jsz` of the monitoring port). Batches are 20,000 events, uncompressed.

    python3 bench/e2e.py --sink nats [--lines 2000000]

With --source journald the N lines are entries of a pre-filled journal file (written, before
the clock starts, by systemd-journal-remote from export format: MESSAGE of about 200 bytes,
_SYSTEMD_UNIT, PRIORITY, SYSLOG_IDENTIFIER, _PID, two boots), read through journalctl by a
journald source with journal_directory.

    python3 bench/e2e.py --source journald [--lines 200000]

With --source syslog-tcp the N events are RFC 5424 messages of about 200 bytes, octet-counted,
written by --clients TCP connections to a syslog source; with --source syslog-udp they are
datagrams from --clients senders. Both print the rate at which the source appended them to
the WAL (`gapless_source_events_total`); UDP also prints the drops the kernel counted (reported
as `gapless_dropped_events_total{reason="source_overflow"}`), and then waits for what was
appended rather than for all N.

    python3 bench/e2e.py --source syslog-tcp [--lines 1000000] [--clients 2] [--sender loggen]

--sender loggen sends with syslog-ng's `loggen` instead (`-S -P` for TCP, `-D` for UDP; 200-byte
messages, --clients active connections), which writes faster than Python.
"""
import argparse, http.client, json, os, resource, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

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

def count_http(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        lines, nbytes = r.read().split()
        return int(lines), int(nbytes)

def nats_request(port, subject, payload):
    """One request over the NATS protocol (what `nats req` does): its reply as JSON."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    f.readline()  # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _INBOX.bench 1\r\n'
              + b"PUB %s _INBOX.bench %d\r\n%s\r\nPING\r\n" % (subject.encode(), len(payload), payload))
    while True:
        line = f.readline()
        if not line:
            sys.exit(f"nats-server closed the connection during {subject}")
        if line.startswith(b"MSG"):
            data = f.read(int(line.split()[-1]) + 2)[:-2]
            s.close()
            return json.loads(data)
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
        if line.startswith(b"-ERR"):
            sys.exit(f"nats-server: {line!r}")

def nats_count(monitor_port):
    """Messages and bytes in the JetStream streams of the server (the bench's one stream)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/jsz", timeout=5) as r:
        jsz = json.loads(r.read())
        return jsz["messages"], jsz["bytes"]

def start_nats(work):
    """`nats-server -js` on free ports, with an R1 file stream BENCH taking bench.logs."""
    port, monitor = free_port(), free_port()
    server = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
                               "-sd", os.path.join(work, "jetstream")],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "nats.log"), "wb"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    cfg = {"name": "BENCH", "subjects": ["bench.logs"], "storage": "file", "num_replicas": 1,
           "duplicate_window": 120_000_000_000}
    answer = nats_request(port, "$JS.API.STREAM.CREATE.BENCH", json.dumps(cfg).encode())
    if "error" in answer:
        sys.exit(f"cannot create the stream: {answer['error']}")
    return server, port, monitor

def wal_bytes(api_port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("gapless_wal_bytes "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0

def metric(api_port, name, label):
    """The value of `name{label}` on /metrics, 0 when absent."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{") and label in line:
                    return int(float(line.split()[-1]))
    except OSError:
        pass
    return 0

def syslog_messages(n, clients):
    """Per client, chunks of about 256 KiB of octet-counted RFC 5424 messages of 200 bytes
    (without the count); the chunks' frames, one per message, for UDP."""
    head = b'<134>1 2026-11-30T05:00:00.123456Z web-1 checkout 4242 ID47 [meta seq="%010d"] '
    out = [[] for _ in range(clients)]
    for c in range(clients):
        chunk = []
        for i in range(c, n, clients):
            m = head % i
            m += b"item added to cart user=42 path=/api/v1/cart/items status=200 pad=" + b"x" * 200
            chunk.append(m[:200])
            if len(chunk) == 1300:
                out[c].append(chunk); chunk = []
        if chunk:
            out[c].append(chunk)
    return out

def syslog_send(mode, port, per_client):
    """Sends every message; returns when all are written."""
    def tcp(chunks):
        s = socket.create_connection(("127.0.0.1", port))
        for chunk in chunks:
            s.sendall(b"".join(b"%d %s" % (len(m), m) for m in chunk))
        s.close()
    def udp(chunks):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for chunk in chunks:
            for m in chunk:
                s.sendto(m, ("127.0.0.1", port))
    threads = [threading.Thread(target=tcp if mode == "tcp" else udp, args=(c,)) for c in per_client]
    for t in threads: t.start()
    for t in threads: t.join()

def http_bodies(n, per_request):
    """NDJSON bodies of JSON objects of about 200 bytes: strings, integers, a float, a
    nested object and an array, as an application would send them."""
    obj = ('{"message":"item added to cart","level":"info","service":"checkout","request_id":%d,'
           '"user":{"id":42,"plan":"pro"},"path":"/api/v1/cart/items","status":200,'
           '"latency_ms":12.5,"bytes":5123,"tags":["web","eu-west-1"],"pad":"')
    bodies, i = [], 0
    while i < n:
        k = min(per_request, n - i)
        lines = []
        for j in range(i, i + k):
            o = obj % j
            lines.append(o + "x" * max(0, 197 - len(o)) + '"}')
        bodies.append(("\n".join(lines) + "\n").encode())
        i += k
    return bodies

def post_all(port, bodies, clients):
    """Posts every body (each once) over `clients` keep-alive connections; returns the
    seconds until the last one was answered 200."""
    todo = list(reversed(bodies))
    lock = threading.Lock()
    errors = []
    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not todo:
                    return
                body = todo.pop()
            while True:
                conn.request("POST", "/", body=body, headers={"content-type": "application/x-ndjson"})
                r = conn.getresponse()
                answer = r.read()
                if r.status == 200:
                    break
                if r.status != 503:
                    errors.append(f"{r.status} {answer[:200]!r}")
                    return
                time.sleep(0.05)
    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    if errors:
        sys.exit(f"the http source refused a request: {errors[0]}")
    return time.time() - t0

def sink_keys(sink, port):
    """The keys of the benchmarked sink, pointed at the count receiver."""
    base = f"http://127.0.0.1:{port}"
    if sink == "azure_monitor_logs":
        return (f'type = "azure_monitor_logs"\nendpoint = "{base}"\nauthority = "{base}"\n'
                'dcr_immutable_id = "dcr-bench"\nstream_name = "Custom-Bench_CL"\n'
                'auth = { tenant_id = "bench", client_id = "bench", client_secret = "bench" }')
    if sink == "splunk_hec":
        return f'type = "splunk_hec"\nendpoint = "{base}"\ntoken = "bench"'
    if sink == "elasticsearch":
        return f'type = "elasticsearch"\nendpoints = ["{base}"]'
    if sink == "nats":
        return f'type = "nats"\nurl = "nats://127.0.0.1:{port}"\nsubject = "bench.logs"'
    return f'type = "http"\nuri = "{base}/ingest"'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--outage-gib", type=float, default=0.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--nofile", type=int, default=0)
    ap.add_argument("--source", choices=["file", "http", "journald", "syslog-tcp", "syslog-udp"], default="file")
    ap.add_argument("--events-per-request", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--sender", choices=["python", "loggen"], default="python")
    ap.add_argument("--shape", choices=["plain", "json"], default="plain",
                    help="file lines: plain text, or JSON objects full of quotes (~200 B either way)")
    ap.add_argument("--sink", choices=["http", "azure_monitor_logs", "splunk_hec", "elasticsearch", "nats"], default="http",
                    help="the platform the agent sends to (the count receiver answers as each documents)")
    ap.add_argument("--agent", help="a gapless binary to run instead of building target/release/gapless")
    args = ap.parse_args()
    if args.source != "file" and args.outage_gib > 0:
        sys.exit("--outage-gib goes with --source file")

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "gapless", "--bin", "gapless", "--example", "count_receiver"], cwd=ROOT, check=True)
    exe = args.agent or os.path.join(ROOT, "target", "release", "gapless")
    recv_exe = os.path.join(ROOT, "target", "release", "examples", "count_receiver")

    work = tempfile.mkdtemp(prefix="gapless-bench-", dir=os.path.join(ROOT, "target"))
    logdir = os.path.join(work, "logs"); os.makedirs(logdir)
    line = (b"2026-11-26T12:00:00.000Z INFO  service=checkout request_id=%010d user=42 "
            b"path=/api/v1/cart/items status=200 latency_ms=12 bytes=5123 msg=\"item added to cart\" pad=")
    if args.shape == "json":
        # A JSON line full of quotes: every one is escaped in the event's message.
        line = (b'{"ts":"2026-11-26T12:00:00.000Z","level":"info","msg":"login ok","user":"u17",'
                b'"req":"%010d","path":"/api/v1/session","status":200,"pad":"')
    if args.source == "file":
        per_file = -(-args.lines // args.files)
        raw_bytes = 0
        for n in range(args.files):
            log = os.path.join(logdir, "app.log" if args.files == 1 else f"app-{n:06}.log")
            with open(log, "wb") as f:
                for i in range(n * per_file, min(args.lines, (n + 1) * per_file)):
                    l = line % i
                    f.write(l + b"x" * (199 - len(l) - (2 if args.shape == "json" else 0))
                            + (b'"}' if args.shape == "json" else b"") + b"\n")
            raw_bytes += os.path.getsize(log)
        source = f'type = "file"\ninclude = ["{logdir}/*.log"]'
    elif args.source == "journald":
        jdir = os.path.join(work, "journal"); os.makedirs(jdir)
        export = bytearray()
        raw_bytes = 0
        for i in range(args.lines):
            l = line % i
            msg = l + b"x" * (199 - len(l))
            raw_bytes += len(msg) + 1
            boot = b"a" * 32 if i < args.lines // 2 else b"b" * 32
            export += (b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n_HOSTNAME=benchhost\n"
                       b"_SYSTEMD_UNIT=checkout.service\nPRIORITY=6\nSYSLOG_IDENTIFIER=checkout\n_PID=4242\nMESSAGE=%s\n\n"
                       % (1_700_000_000_000_000 + i, 1_000_000 + i, boot, msg))
        subprocess.run(["/lib/systemd/systemd-journal-remote", f"--output={jdir}/system.journal", "--split-mode=none", "-"],
                       input=bytes(export), check=True, stderr=subprocess.DEVNULL)
        source = f'type = "journald"\njournal_directory = "{jdir}"'
    elif args.source.startswith("syslog"):
        mode = args.source.split("-")[1]
        per_client = syslog_messages(args.lines, args.clients) if args.sender == "python" else None
        raw_bytes = 200 * args.lines
        syslog_port = free_port()
        source = f'type = "syslog"\nmode = "{mode}"\naddress = "127.0.0.1:{syslog_port}"'
    else:
        bodies = http_bodies(args.lines, args.events_per_request)
        raw_bytes = sum(len(b) for b in bodies)
        http_port = free_port()
        source = f'type = "http"\naddress = "127.0.0.1:{http_port}"\nmax_body_bytes = "64MiB"'

    recv_port, api_port = free_port(), free_port()
    nats = None
    if args.sink == "nats":
        if args.outage_gib > 0:
            sys.exit("--outage-gib goes with an http platform sink")
        nats, recv_port, monitor_port = start_nats(work)
        count = lambda _port: nats_count(monitor_port)
        # One message per event: nothing to compress; up to 1,024 PubAcks in flight.
        delivery = 'compression = "none"\nbatch = { max_events = 5000, max_bytes = "4MiB", timeout = "200ms" }'
    else:
        count = count_http
        delivery = 'compression = "gzip"\nbatch = { max_events = 5000, max_bytes = "4MiB", timeout = "200ms" }'
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
{source}
[sinks.platform]
{sink_keys(args.sink, recv_port)}
{delivery}
retry = {{ initial_backoff = "100ms", max_backoff = "1s" }}
[log]
level = "warn"
""")
    recv = None
    if nats:
        recv = nats
    elif args.outage_gib == 0:
        recv = subprocess.Popen([recv_exe, f"127.0.0.1:{recv_port}"])
        time.sleep(0.3)
    t0 = time.time()
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))) if args.nofile else None
    agent = subprocess.Popen([exe, "run", "--config", cfg], stderr=open(os.path.join(work, "agent.log"), "wb"), preexec_fn=limit)
    peak_backlog_rss = None
    ingest_took = None
    try:
        if args.source != "file":
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/ready", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() - t0 > 60:
                    sys.exit("the agent never became ready")
                time.sleep(0.05)
            t0 = time.time()
            if args.source == "http":
                ingest_took = post_all(http_port, bodies, args.clients)
        expected = args.lines
        if args.source.startswith("syslog"):
            if args.sender == "python":
                syslog_send(mode, syslog_port, per_client)
            else:
                # loggen sends --number per connection.
                per = -(-args.lines // args.clients)
                subprocess.run(["loggen", "-i", "-S" if mode == "tcp" else "-D", *(["-P"] if mode == "tcp" else []),
                                "-Q", "-s", "200", "-r", "100000000", "-I", "600", "-n", str(per),
                                f"--active-connections={args.clients}", "127.0.0.1", str(syslog_port)],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                args.lines = per * args.clients
            sent_took = time.time() - t0
            last, last_change = -1, time.time()
            while True:
                appended = metric(api_port, "gapless_source_events_total", 'source="app"')
                dropped = metric(api_port, "gapless_dropped_events_total", 'reason="source_overflow"')
                if appended != last:
                    last, last_change = appended, time.time()
                if appended >= args.lines or (mode == "udp" and time.time() - last_change > 2 and appended + dropped >= args.lines):
                    break
                if time.time() - last_change > 30:
                    sys.exit(f"stuck: {appended} appended, {dropped} dropped of {args.lines}")
                time.sleep(0.01)
            ingest_took = last_change - t0
            print(f"syslog {mode}: sender wrote {args.lines:,} in {sent_took:.2f} s; {appended:,} appended to the WAL "
                  f"at {appended / ingest_took:,.0f} messages/s; kernel drops reported: {dropped:,}")
            expected = appended
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
            if n >= expected:
                break
            if time.time() - t0 > 900:
                sys.exit(f"timeout: only {n} of {expected} lines arrived")
            time.sleep(0.05)
        took = time.time() - t0
        cpu, hwm = proc_stats(agent.pid)
        wire = metric(api_port, "gapless_sink_bytes_sent_total", 'sink="platform"')
        _, plain_bytes = count(recv_port) if recv else (0, 0)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        if recv:
            recv.terminate()
    if ingest_took is not None and args.source == "http":
        print(f"http source: {args.lines / ingest_took:,.0f} events/s answered 200 ({raw_bytes / ingest_took / 1e6:.1f} MB/s of bodies)")
    print(f"lines:     {expected}")
    print(f"seconds:   {took:.2f}")
    print(f"lines/s:   {expected / took:,.0f}")
    print(f"MB/s:      {raw_bytes * expected / args.lines / took / 1e6:.1f} (raw lines)")
    print(f"agent CPU: {cpu:.2f} s ({cpu / took:.2f} cores, {cpu / expected * 1e6:.2f} µs per event)")
    print(f"peak RSS:  {hwm / (1 << 20):.1f} MiB")
    if wire and plain_bytes and not nats:
        print(f"wire:      {wire / expected:.1f} bytes per event sent (gzip), {plain_bytes / expected:.1f} "
              f"before gzip: ratio {plain_bytes / wire:.1f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
