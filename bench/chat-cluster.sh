#!/usr/bin/env bash
# Cross-node room fan-out (issue 6): publisher on node 1, 500 subscribers on node 2, Redis between.
#
#   bench/chat-cluster.sh [runs]     (default 3 runs; medians reported)
#
# Clusters (each started fresh for every run, everything on 127.0.0.1, free ports):
#   sio  two bench/peers/chat-sio.mjs processes with @socket.io/redis-adapter (REDIS_URL)
#   sb   two `target/release/switchboard serve --redis-url …` nodes; extra flags for both in
#        $SB_CLUSTER_ARGS (e.g. a shared --database-url). Reported as n/a, with the reason, while
#        Switchboard has no --redis-url or no chat endpoint.
# The load is `switchboard-bench chat fanout --url <node 1> --sub-url <node 2>`: users register on
# their own node, the room is created on node 1 and joined on node 2, the publisher sends 10 msg/s
# open loop (5k deliveries/s). Reported: p50/p99 delivery latency, delivered %, and the CPU time
# redis-server spent per delivered message (from /proc/<pid>/stat over the whole run).
# Only PIDs started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${1:-3}
B=target/release/switchboard-bench
OUT=$(mktemp -d /tmp/sb-cluster-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --locked -p switchboard -p switchboard-bench >&2
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error) >&2

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$OUT" \
    >>"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT" || { echo "redis-server did not start, see $OUT/redis.log" >&2; return 1; }
}

start_nodes() { # start_nodes sio|sb: sets P1 P2 NODE_PIDS; fails if a node does not come up
  P1=$(free_port); P2=$(free_port); NODE_PIDS=()
  for port in "$P1" "$P2"; do
    if [ "$1" = sio ]; then
      REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node bench/peers/chat-sio.mjs "$port" >>"$OUT/sio-$port.log" 2>&1 &
    else
      local dir; dir=$(mktemp -d "$OUT/sb-data.XXXXXX")
      # shellcheck disable=SC2086
      (cd "$dir" && exec "$ROOT/target/release/switchboard" serve --port "$port" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" --rate-limit-max 100000000 \
        --max-connections-per-ip 0 ${SB_CLUSTER_ARGS:-}) >>"$OUT/sb-$port.log" 2>&1 &
    fi
    NODE_PIDS+=($!); PIDS+=($!)
  done
  wait_port "$P1" && wait_port "$P2"
}
stop_all() {
  for p in "${NODE_PIDS[@]}" "$REDIS_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; v=json.load(sys.stdin)['$1']; print(round(v, 2) if isinstance(v,float) else v)"; }

declare -A MISSING
for cluster in sio sb; do
  for i in $(seq "$RUNS"); do
    start_redis
    if ! start_nodes "$cluster"; then
      MISSING[$cluster]="a node did not start: $(cat "$OUT/$cluster"-*.log 2>/dev/null | grep -i -m1 error || echo "see $OUT")"
      stop_all; break
    fi
    echo "== $cluster cluster run $i (redis :$REDIS_PORT, nodes :$P1 :$P2)" >&2
    before=$(cpu_ticks "$REDIS_PID")
    out="$OUT/$cluster-$i.json"
    if "$B" --json chat fanout --proto "$([ "$cluster" = sio ] && echo sio || echo ws)" \
        --url "http://127.0.0.1:$P1" --sub-url "http://127.0.0.1:$P2" \
        --subscribers 500 --rate 10 --duration-secs 10 --warmup-secs 2 >"$out" 2>"$out.err"; then
      after=$(cpu_ticks "$REDIS_PID")
      python3 - "$out" "$before" "$after" "$TICK" <<'EOF'
import json, sys
path, before, after, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
report = json.load(open(path))
cpu_us = (after - before) * 1e6 / tick
report["redis_cpu_us_per_delivery"] = cpu_us / report["delivered"] if report["delivered"] else None
json.dump(report, open(path, "w"))
EOF
    else
      MISSING[$cluster]=$(grep -m1 -E 'Error|error' "$out.err" || tail -n 1 "$out.err")
      rm -f "$out"
      stop_all; break
    fi
    stop_all
  done
done

med() { for f in "$OUT/$1-"*.json; do [ -s "$f" ] && field "$2" <"$f"; done | median; }
cell() { if [ -n "${MISSING[$1]:-}" ]; then echo "n/a"; else echo "$(med "$1" "$2")"; fi; }
cat <<EOF2
| cross-node fan-out 1→500 at 10 msg/s (median of $RUNS) | Switchboard (2 nodes + Redis) | node socket.io + redis-adapter (2 nodes) |
|---|---|---|
| p50 µs | $(cell sb p50_us) | $(cell sio p50_us) |
| p99 µs | $(cell sb p99_us) | $(cell sio p99_us) |
| p99.9 µs | $(cell sb p999_us) | $(cell sio p999_us) |
| delivered % | $(cell sb delivered_pct) | $(cell sio delivered_pct) |
| redis-server CPU µs per delivered message | $(cell sb redis_cpu_us_per_delivery) | $(cell sio redis_cpu_us_per_delivery) |
EOF2
for c in sb sio; do [ -n "${MISSING[$c]:-}" ] && echo && echo "$c: ${MISSING[$c]}"; done
echo "raw results: $OUT" >&2
