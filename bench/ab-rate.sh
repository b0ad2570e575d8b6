#!/usr/bin/env bash
# A/B of Switchboard builds at a fixed message rate: rounds interleaved arm by arm, a fresh
# server and database for every run, started as bench/chat.sh starts it. The way sessions
# 9 to 12 of BENCHMARKS.md compared a change with the build before it.
#
# Usage: bench/ab-rate.sh ROUNDS LABEL=SERVER_BINARY [LABEL=SERVER_BINARY ...]
#   e.g. bench/ab-rate.sh 5 base=/tmp/base/switchboard new=target/release/switchboard
#
# Environment:
#   BENCH        switchboard-bench binary (default target/release/switchboard-bench)
#   CONNECTIONS  connections, in pairs (default 1000); RATE messages/s each (default 10)
#   DBROOT       where the databases go (default a directory under /tmp; a tmpfs such as
#                /dev/shm takes the disk out)
#   OUT          where each run's JSON, trace and server log go (default a temp directory)
#   PORT         the server's loopback port (default 10595)
#
# Prints per run: label, p99 and p99.9 from the schedule (µs), the generator's lateness
# p99, delivered %, megabytes the server process wrote (`wchar`: the WAL and the
# checkpointer's copies), the machine's steal time in ticks (CPU a virtual machine's host
# took from it; on the bench host its disk flushes do) and CPU ticks per server thread;
# then the medians per label.
set -euo pipefail
ROUNDS=${1:?usage: bench/ab-rate.sh ROUNDS LABEL=SERVER_BINARY ...}
shift
[ $# -ge 1 ] || { echo "give at least one LABEL=SERVER_BINARY" >&2; exit 2; }
BENCH=${BENCH:-target/release/switchboard-bench}
PORT=${PORT:-10595}
OUT=${OUT:-$(mktemp -d /tmp/sb-ab.XXXXXX)}
DBROOT=${DBROOT:-$OUT}
SUMMARY=$OUT/summary.tsv
mkdir -p "$OUT" "$DBROOT"
# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_sb EXIT

one_run() { # label binary run-number
    local label=$1 bin=$2 n=$3
    start_sb "$bin" "$(mktemp -d "$DBROOT/db.XXXXXX")" "$OUT/sb-$label.log"
    local PID=$SB_PID
    local before after steal json=$OUT/$label-$n.json
    before=$(awk '/^wchar/ {print $2}' "/proc/$PID/io")
    steal=$(steal_ticks)
    "$BENCH" --json chat rate --connections "${CONNECTIONS:-1000}" --rate "${RATE:-10}" \
        --duration-secs 10 --warmup-secs 2 --proto ws --url "http://127.0.0.1:$PORT" \
        --trace "$OUT/$label-$n.trace" >"$json" 2>"$OUT/$label-$n.err"
    after=$(awk '/^wchar/ {print $2}' "/proc/$PID/io")
    steal=$(( $(steal_ticks) - steal ))
    local ticks
    ticks=$(thread_ticks "$PID" |
        awk '{a[$2] += $3} END {for (k in a) if (a[k] > 50) printf "%s=%d ", k, a[k]}')
    python3 - "$json" "$label" "$(( (after - before) / 1000000 ))" "$steal" "$ticks" <<'PY' | tee -a "$SUMMARY"
import json, sys
d = json.load(open(sys.argv[1]))
print("\t".join(map(str, [sys.argv[2], d["p99_us"], d["p999_us"], d["late_p99_us"],
                          d["delivered_pct"], sys.argv[3], sys.argv[4], sys.argv[5]])))
PY
    stop_sb
}

echo -e "label\tp99_us\tp999_us\tlate_p99_us\tdelivered_pct\twritten_MB\tsteal_ticks\tcpu_ticks" | tee "$SUMMARY"
for round in $(seq "$ROUNDS"); do
    for arm in "$@"; do
        one_run "${arm%%=*}" "${arm#*=}" "$round"
    done
done
python3 - "$SUMMARY" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for label in dict.fromkeys(r["label"] for r in rows):
    mine = [r for r in rows if r["label"] == label]
    med = lambda k: statistics.median(float(r[k]) for r in mine)
    print(f"{label}: {len(mine)} runs, median p99 {med('p99_us'):.0f} µs, "
          f"p99.9 {med('p999_us'):.0f} µs, written {med('written_MB'):.0f} MB, "
          f"steal {med('steal_ticks'):.0f} ticks")
PY
echo "runs in $OUT"
