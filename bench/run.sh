#!/usr/bin/env bash
# Gateway benchmarks, Switchboard and a plain Socket.IO server measured in the same run.
#
#   bench/run.sh [runs]        (default 3 runs of each measurement; medians reported)
#
# Measures, each against Switchboard (release build, embedded engine, dummy platform in its
# own worker process) and against bench/peers/sio-echo.mjs (node socket.io 4 acking the same
# reply with no gateway work at all):
#   - echo round trips, 1 request in flight, and 32 in flight on one connection
#   - server RSS idle, and worker RSS
#   - RSS per idle WebSocket connection (1000 connections)
# Loopback only; every loop is bounded in count and time; only PIDs started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
PORT_SB=${PORT_SB:-10581}
PORT_PEER=${PORT_PEER:-10582}
B=target/release/switchboard-bench
OUT=$(mktemp -d /tmp/sb-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --locked -p switchboard -p switchboard-bench >&2
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error) >&2

# shellcheck source=bench/lib.sh
. bench/lib.sh

start_sb() {
  # The bench is one client sending as fast as it can: lift the per-connection rate limit.
  target/release/switchboard serve --port "$PORT_SB" --rate-limit-max 100000000 --max-connections-per-ip 0 >"$OUT/sb.log" 2>&1 &
  SB_PID=$!; PIDS+=("$SB_PID"); wait_port "$PORT_SB"
}
start_peer() {
  node bench/peers/sio-echo.mjs "$PORT_PEER" >"$OUT/peer.log" 2>&1 &
  PEER_PID=$!; PIDS+=("$PEER_PID"); wait_port "$PORT_PEER"
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

field() { python3 -c "import json,sys; v=json.load(sys.stdin)['$1']; print(round(v) if isinstance(v,float) else v)"; }

echo_run() { # echo_run PORT CONCURRENCY -> json
  "$B" --json echo --url "http://127.0.0.1:$1" --concurrency "$2" --requests "$3" --duration-secs 15 --warmup 1000
}

declare -A R
for name in sb peer; do
  for c in 1 32; do
    n=$([ "$c" = 1 ] && echo 20000 || echo 150000)
    for i in $(seq "$RUNS"); do
      if [ $name = sb ]; then start_sb; port=$PORT_SB; pid=$SB_PID; else start_peer; port=$PORT_PEER; pid=$PEER_PID; fi
      echo_run "$port" "$c" "$n" >"$OUT/$name-c$c-$i.json"
      stop "$pid"
    done
    R[$name,c$c,rps]=$(for i in $(seq "$RUNS"); do field rps <"$OUT/$name-c$c-$i.json"; done | median)
    R[$name,c$c,p50]=$(for i in $(seq "$RUNS"); do field p50_us <"$OUT/$name-c$c-$i.json"; done | median)
    R[$name,c$c,p99]=$(for i in $(seq "$RUNS"); do field p99_us <"$OUT/$name-c$c-$i.json"; done | median)
  done
  # Memory: idle RSS, worker RSS after one request, per-connection cost of 1000 idle ones.
  if [ $name = sb ]; then start_sb; port=$PORT_SB; pid=$SB_PID; else start_peer; port=$PORT_PEER; pid=$PEER_PID; fi
  sleep 1
  R[$name,rss_idle]=$("$B" --json rss --pid "$pid" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['processes'][0]['rss_kb'])")
  "$B" echo --url "http://127.0.0.1:$port" --concurrency 1 --requests 10 --warmup 0 >/dev/null
  R[$name,rss_worker]=$("$B" --json rss --pid "$pid" | python3 -c "import json,sys; d=json.load(sys.stdin); p=d['processes'][1:]; print(p[0]['rss_kb'] if p else '-')")
  "$B" --json idle --url "http://127.0.0.1:$port" --connections 1000 --hold-secs 3 --pid "$pid" >"$OUT/$name-idle.json"
  R[$name,per_conn]=$(field bytes_per_conn <"$OUT/$name-idle.json")
  stop "$pid"
done

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
cat <<EOF2
| measurement (median of $RUNS) | Switchboard | node socket.io peer | ratio |
|---|---|---|---|
| echo, 1 in flight: round trips/s | ${R[sb,c1,rps]} | ${R[peer,c1,rps]} | $(ratio "${R[sb,c1,rps]}" "${R[peer,c1,rps]}") |
| echo, 1 in flight: p50 / p99 µs | ${R[sb,c1,p50]} / ${R[sb,c1,p99]} | ${R[peer,c1,p50]} / ${R[peer,c1,p99]} | |
| echo, 32 in flight: round trips/s | ${R[sb,c32,rps]} | ${R[peer,c32,rps]} | $(ratio "${R[sb,c32,rps]}" "${R[peer,c32,rps]}") |
| echo, 32 in flight: p50 / p99 µs | ${R[sb,c32,p50]} / ${R[sb,c32,p99]} | ${R[peer,c32,p50]} / ${R[peer,c32,p99]} | |
| server RSS, idle (KiB) | ${R[sb,rss_idle]} | ${R[peer,rss_idle]} | |
| platform worker RSS (KiB) | ${R[sb,rss_worker]} | (none: in-process) | |
| RSS per idle connection (bytes, 1000 conns) | ${R[sb,per_conn]} | ${R[peer,per_conn]} | |
EOF2
echo "raw results: $OUT" >&2
