#!/usr/bin/env bash
# Builds the .deb, checks its contents and control data, installs it into this machine,
# validates the installed config, runs the installed binary as the gapless user against a
# local receiver, checks delivery, then removes (WAL kept) and purges (WAL gone) it.
# Needs root and a throwaway machine (CI). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then echo "test-deb.sh needs root" >&2; exit 1; fi
export DEBIAN_FRONTEND=noninteractive

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet
cargo build --release --quiet -p gapless --bin gapless --example count_receiver
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
deb=$(cargo deb -p gapless --no-build --quiet 2>/dev/null | tail -n 1)
[ -f "$deb" ] || deb=$(ls -t "$target"/debian/gapless_*.deb | head -n 1)
echo "== built $deb"

dpkg-deb -I "$deb" | tee /tmp/gapless-deb-info
grep -q "Package: gapless" /tmp/gapless-deb-info
grep -q "Depends:.*adduser" /tmp/gapless-deb-info
dpkg-deb -c "$deb" | tee /tmp/gapless-deb-contents
for f in ./usr/bin/gapless ./etc/gapless/gapless.toml ./etc/default/gapless gapless.service \
         ./usr/share/bash-completion/completions/gapless ./usr/share/zsh/vendor-completions/_gapless \
         ./usr/share/fish/vendor_completions.d/gapless.fish ./usr/share/man/man1/gapless.1 \
         ./usr/share/man/man1/gapless-run.1 ./usr/share/man/man1/gapless-top.1; do
    grep -q "$f" /tmp/gapless-deb-contents || { echo "missing $f in the package" >&2; exit 1; }
done
# The installed binary is stripped and small; its symbols are in the -dbgsym package.
size=$(dpkg-deb --fsys-tarfile "$deb" | tar -tvf - ./usr/bin/gapless | awk '{print $3}')
echo "usr/bin/gapless: $size bytes"
[ "$size" -lt $((30 * 1024 * 1024)) ] || { echo "usr/bin/gapless is $size bytes: not stripped?" >&2; exit 1; }
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./usr/bin/gapless > /tmp/gapless-bin
if readelf -S /tmp/gapless-bin | grep -q '\.debug_'; then echo "usr/bin/gapless keeps debug sections" >&2; exit 1; fi
dbgsym=$(ls -t "$(dirname "$deb")"/gapless-dbgsym_*.*deb 2>/dev/null | head -n 1)
[ -f "$dbgsym" ] || { echo "no gapless-dbgsym package next to $deb" >&2; exit 1; }
dpkg-deb -c "$dbgsym" | grep -q '/usr/lib/debug/.build-id/.*\.debug' || { echo "no .debug file in $dbgsym" >&2; exit 1; }
echo "== debug symbols in $dbgsym"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | tee /tmp/gapless-conffiles
grep -qx /etc/gapless/gapless.toml /tmp/gapless-conffiles

echo "== install"
dpkg -i "$deb"
id gapless
id -nG gapless | grep -qw adm
if getent group systemd-journal >/dev/null; then id -nG gapless | grep -qw systemd-journal; fi
[ "$(stat -c '%U %a' /var/lib/gapless)" = "gapless 750" ]

echo "== systemd unit"
if ! command -v systemd-analyze >/dev/null; then
    apt-get install -y -q systemd >/dev/null
fi
unit=$(ls /lib/systemd/system/gapless.service /usr/lib/systemd/system/gapless.service 2>/dev/null | head -n 1)
systemd-analyze verify "$unit"
# The hardening is part of the package: an exposure score above 2.0 fails the test.
score=$(systemd-analyze security --offline=true "$unit" | tail -n 1 | grep -oE '[0-9]+\.[0-9]+' | head -n 1)
echo "systemd-analyze security: exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || { echo "exposure score $score is above 2.0" >&2; exit 1; }

echo "== man page and completions installed"
man -w gapless >/dev/null 2>&1 || [ -f /usr/share/man/man1/gapless.1 ] || [ -f /usr/share/man/man1/gapless.1.gz ]
bash -c 'source /usr/share/bash-completion/completions/gapless && complete -p gapless' | grep -q gapless

echo "== validate the installed config as the gapless user"
runuser -u gapless -- /usr/bin/gapless validate --config /etc/gapless/gapless.toml

run_agent() { # endpoint port; runs the installed binary as the gapless user in the background
    # setpriv execs the agent itself (no session wrapper), so $! is its pid and SIGTERM is its own.
    GAPLESS_ENDPOINT="http://127.0.0.1:$1/ingest" GAPLESS_TOKEN=t \
        setpriv --reuid=gapless --regid=gapless --init-groups \
        /usr/bin/gapless run --config /etc/gapless/gapless.toml &
    agent=$!
}
stop_agent() {
    kill -TERM $agent
    wait $agent || { echo "the agent did not exit 0 on SIGTERM" >&2; exit 1; }
}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

echo "== run the installed binary while the platform is down: a backlog builds in the WAL"
run_agent "$port"
# The first heartbeat is written at start: wait until the WAL holds it (the backlog).
backlog=0
for _ in $(seq 1 100); do
    backlog=$(curl -s 127.0.0.1:8686/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["wal"]["next_seq"] - 1)' 2>/dev/null || echo 0)
    [ "${backlog:-0}" -ge 1 ] && break
    sleep 0.1
done
[ "${backlog:-0}" -ge 1 ] || { echo "no backlog was built" >&2; exit 1; }
stop_agent
[ "$(stat -c '%a' "$(ls /var/lib/gapless/wal/*.seg | head -n 1)")" = 600 ]

echo "== upgrade (install again): the WAL is kept"
dpkg -i "$deb"
ls /var/lib/gapless/wal/*.cursor

echo "== run against a local receiver: the backlog from before the upgrade arrives"
"$target/release/examples/count_receiver" "127.0.0.1:$port" &
recv=$!
trap 'kill $recv 2>/dev/null || true' EXIT
run_agent "$port"
delivered=0
for _ in $(seq 1 100); do
    delivered=$(curl -s "127.0.0.1:$port/count" | cut -d' ' -f1 || echo 0)
    [ "${delivered:-0}" -ge 2 ] && break
    sleep 0.1
done
stop_agent
[ "${delivered:-0}" -ge 2 ] || { echo "the backlog was not delivered ($delivered events)" >&2; exit 1; }
echo "delivered $delivered events (heartbeats from before and after the upgrade)"

echo "== the journald path: the installed binary, as the gapless user, reads a journal directory"
if [ -x /lib/systemd/systemd-journal-remote ]; then
    jdir=$(mktemp -d /tmp/gapless-journal.XXXXXX)
    for i in 1 2 3; do
        printf '__REALTIME_TIMESTAMP=170000000000000%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=debtest\nSYSLOG_FACILITY=4\n_SYSTEMD_UNIT=ssh.service\nMESSAGE=deb test auth entry %d\n\n' "$i" "$i" "$i"
    done > "$jdir/entries.export"
    /lib/systemd/systemd-journal-remote --output="$jdir/system.journal" --split-mode=none - < "$jdir/entries.export" 2>/dev/null
    rm "$jdir/entries.export"
    chmod -R a+rX "$jdir"
    jport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    japi=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    jconf=$(mktemp /tmp/gapless-journal-XXXXXX.toml)
    {
        echo 'data_dir = "/var/lib/gapless/journal-test"'
        echo '[api]'
        echo "address = \"127.0.0.1:$japi\""
        echo '[sources.journal]'
        echo 'type = "journald"'
        echo 'matches = { SYSLOG_FACILITY = ["4", "10"] }'
        echo "journal_directory = \"$jdir\""
        echo '[sinks.out]'
        echo 'type = "http"'
        echo "uri = \"http://127.0.0.1:$jport/ingest\""
        echo 'batch = { max_events = 10, timeout = "100ms" }'
    } > "$jconf"
    chmod 644 "$jconf"
    "$target/release/examples/count_receiver" "127.0.0.1:$jport" &
    jrecv=$!
    setpriv --reuid=gapless --regid=gapless --init-groups /usr/bin/gapless run --config "$jconf" &
    jagent=$!
    got=0
    for _ in $(seq 1 100); do
        got=$(curl -s "127.0.0.1:$jport/count" | cut -d' ' -f1 || echo 0)
        [ "${got:-0}" -ge 3 ] && break
        sleep 0.1
    done
    kill -TERM "$jagent"
    wait "$jagent" || true
    kill "$jrecv" 2>/dev/null || true
    [ "${got:-0}" -ge 3 ] || { echo "the journald source delivered ${got:-0} of 3 entries" >&2; exit 1; }
    echo "the journald source delivered $got journal entries"
    rm -rf "$jdir" "$jconf"
else
    echo "SKIPPED the journald path: systemd-journal-remote is not installed" >&2
fi

echo "== remove keeps the WAL, purge deletes it"
dpkg -r gapless
[ -d /var/lib/gapless/wal ]
dpkg -P gapless
[ ! -e /var/lib/gapless ]
echo "deb test passed"
