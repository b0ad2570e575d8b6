#!/usr/bin/env bash
# Where the CPU goes at 10k msg/s: one `chat rate` run (1000 connections x 10 msg/s) against
# a fresh server, and each thread's share of a core (server and generator) over 6 s of
# steady state, with the machine's busy and steal shares over the same 6 s.
#
# Usage: bench/thread-cpu.sh SERVER_BINARY    (BENCH: switchboard-bench binary, PORT)
set -euo pipefail
BIN=${1:?usage: bench/thread-cpu.sh SERVER_BINARY}
BENCH=${BENCH:-target/release/switchboard-bench}
PORT=${PORT:-10611}
OUT=$(mktemp -d /tmp/sb-cpu.XXXXXX)
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_sb EXIT
start_sb "$BIN" "$(mktemp -d "$OUT/db.XXXXXX")" "$OUT/sb.log"
"$BENCH" --json chat rate --connections 1000 --rate 10 --duration-secs 10 --warmup-secs 2 \
    --proto ws --url "http://127.0.0.1:$PORT" >"$OUT/run.json" 2>"$OUT/run.err" &
GEN=$!
# Set-up registers 1000 users first; the load runs once they are connected.
for _ in $(seq 600); do
    [ "$(ls "/proc/$SB_PID/fd" | wc -l)" -gt 1000 ] && break
    sleep 0.2
done
sleep 4
snap() { # "pid/tid name ticks" per thread, then the machine's steal and busy ticks
    thread_ticks "$SB_PID"
    thread_ticks "$GEN"
    echo "0 machine-steal $(steal_ticks)"
    echo "0 machine-busy $(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
}
snap >"$OUT/a"; sleep 6; snap >"$OUT/b"
wait "$GEN"
# Ticks are 1/100 s: over 6 s, ticks / 6 is a percentage of one core.
awk 'NR == FNR {a[$1 " " $2] = $3; next}
     ($1 " " $2) in a {split($1, p, "/"); s[p[1] " " $2] += $3 - a[$1 " " $2]}
     END {for (k in s) if (s[k] > 3) printf "%s=%.0f%%  ", k, s[k] / 6; print ""}' "$OUT/a" "$OUT/b"
python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print('p99', d['p99_us'], 'µs; generator late p99', d['late_p99_us'], 'µs; delivered', d['delivered_pct'], '%')" "$OUT/run.json"
stop_sb
rm -rf "$OUT"
