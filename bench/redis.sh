#!/usr/bin/env bash
# The Redis engine against the embedded one, measured in the same run.
#
#   bench/redis.sh [runs]        (default 3 runs of each measurement; medians reported)
#
# Both servers are the same release `switchboard serve` (dummy platform in its own worker
# process); one runs on the embedded engine, the other with --redis-url on a redis-server
# started here (127.0.0.1, no persistence). Every echo then crosses Redis four times: the
# job pushed on a stream, reserved through the consumer group, acked, and the reply
# published on the session's pub/sub channel. A third server runs with --redis-cluster on a
# Redis Cluster of three masters started here too (every node a seed): the same four steps,
# each on the node owning its key's or channel's slot (sharded pub/sub: the reply goes
# straight from that master to the server's subscriber connection). Also reports redis-server CPU per round trip
# (utime+stime from /proc; on the cluster, all three nodes'). Loopback only; loops bounded
# in count and time; only PIDs started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
# shellcheck source=bench/lib.sh
. bench/lib.sh
# Free ports, not fixed ones: other benchmarks may run on this machine at the same time.
PORT_SB=${PORT_SB:-$(free_port)}
PORT_REDIS=${PORT_REDIS:-$(free_port)}
B=target/release/switchboard-bench
OUT=$(mktemp -d /tmp/sb-bench-redis.XXXXXX)
SECRET=$(openssl rand -hex 32)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --locked -p switchboard -p switchboard-bench >&2

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
field() { python3 -c "import json,sys; v=json.load(sys.stdin)['$1']; print(round(v) if isinstance(v,float) else v)"; }
redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!; PIDS+=("$REDIS_PID"); wait_port "$PORT_REDIS" "$REDIS_PID"

# The Redis Cluster: three masters, no replicas, explicit bus ports (port+10000 may be taken).
CLUSTER_PIDS=(); CLUSTER_NODES=(); SEEDS=()
for n in 1 2 3; do
  port=$(free_port); mkdir -p "$OUT/cluster-$n"
  redis-server --port "$port" --cluster-port "$(free_port)" --bind 127.0.0.1 --save '' --appendonly no \
    --cluster-enabled yes --cluster-config-file "$OUT/cluster-$n/nodes.conf" --dir "$OUT/cluster-$n" \
    >"$OUT/cluster-$n.log" 2>&1 &
  CLUSTER_PIDS+=($!); PIDS+=($!); wait_port "$port" "$!"
  CLUSTER_NODES+=("127.0.0.1:$port"); SEEDS+=("redis://127.0.0.1:$port/")
done
redis-cli --cluster create "${CLUSTER_NODES[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/cluster-create.log" 2>&1
for node in "${CLUSTER_NODES[@]}"; do
  for _ in $(seq 200); do
    redis-cli -h 127.0.0.1 -p "${node#*:}" cluster info | grep -q cluster_state:ok && break
    sleep 0.05
  done
done
SEED_LIST=$(IFS=,; echo "${SEEDS[*]}")

start_sb() { # start_sb embedded|redis|cluster
  local extra=()
  [ "$1" = redis ] && extra=(--redis-url "redis://127.0.0.1:$PORT_REDIS/")
  [ "$1" = cluster ] && extra=(--redis-cluster --redis-url "$SEED_LIST")
  target/release/switchboard serve --port "$PORT_SB" --rate-limit-max 100000000 --max-connections-per-ip 0 \
    --secret "$SECRET" "${extra[@]}" >"$OUT/sb-$1.log" 2>&1 &
  SB_PID=$!; PIDS+=("$SB_PID"); wait_port "$PORT_SB" "$SB_PID"
}

# The CPU ticks of the Redis servers engine $1 runs on.
redis_ticks() {
  if [ "$1" = cluster ]; then
    local t=0; for p in "${CLUSTER_PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"
  else
    cpu_ticks "$REDIS_PID"
  fi
}

declare -A R
for engine in embedded redis cluster; do
  for c in 1 32; do
    n=$([ "$c" = 1 ] && echo 20000 || echo 100000)
    for i in $(seq "$RUNS"); do
      start_sb "$engine"
      before=$(redis_ticks "$engine")
      "$B" --json echo --url "http://127.0.0.1:$PORT_SB" --concurrency "$c" --requests "$n" \
        --duration-secs 15 --warmup 1000 >"$OUT/$engine-c$c-$i.json"
      after=$(redis_ticks "$engine")
      # Clock ticks (1/100 s) → µs of Redis CPU per round trip (warm-up included).
      python3 -c "import json; d=json.load(open('$OUT/$engine-c$c-$i.json')); print(round(($after-$before)*10000/(d['ok']+d['errors']+1000), 1))" >"$OUT/$engine-c$c-$i.cpu"
      stop "$SB_PID"
    done
    R[$engine,c$c,rps]=$(for i in $(seq "$RUNS"); do field rps <"$OUT/$engine-c$c-$i.json"; done | median)
    R[$engine,c$c,p50]=$(for i in $(seq "$RUNS"); do field p50_us <"$OUT/$engine-c$c-$i.json"; done | median)
    R[$engine,c$c,p99]=$(for i in $(seq "$RUNS"); do field p99_us <"$OUT/$engine-c$c-$i.json"; done | median)
    R[$engine,c$c,err]=$(for i in $(seq "$RUNS"); do field errors <"$OUT/$engine-c$c-$i.json"; done | sort -n | tail -1)
    R[$engine,c$c,cpu]=$(for i in $(seq "$RUNS"); do cat "$OUT/$engine-c$c-$i.cpu"; done | median)
  done
done

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
cat <<EOF2
| measurement (median of $RUNS) | embedded engine | Redis engine | ratio | Redis Cluster (3 masters) | ratio to Redis |
|---|---|---|---|---|---|
| echo, 1 in flight: round trips/s | ${R[embedded,c1,rps]} | ${R[redis,c1,rps]} | $(ratio "${R[redis,c1,rps]}" "${R[embedded,c1,rps]}") | ${R[cluster,c1,rps]} | $(ratio "${R[cluster,c1,rps]}" "${R[redis,c1,rps]}") |
| echo, 1 in flight: p50 / p99 µs | ${R[embedded,c1,p50]} / ${R[embedded,c1,p99]} | ${R[redis,c1,p50]} / ${R[redis,c1,p99]} | | ${R[cluster,c1,p50]} / ${R[cluster,c1,p99]} | |
| echo, 32 in flight: round trips/s | ${R[embedded,c32,rps]} | ${R[redis,c32,rps]} | $(ratio "${R[redis,c32,rps]}" "${R[embedded,c32,rps]}") | ${R[cluster,c32,rps]} | $(ratio "${R[cluster,c32,rps]}" "${R[redis,c32,rps]}") |
| echo, 32 in flight: p50 / p99 µs | ${R[embedded,c32,p50]} / ${R[embedded,c32,p99]} | ${R[redis,c32,p50]} / ${R[redis,c32,p99]} | | ${R[cluster,c32,p50]} / ${R[cluster,c32,p99]} | |
| failed requests, worst run (1 / 32 in flight) | ${R[embedded,c1,err]} / ${R[embedded,c32,err]} | ${R[redis,c1,err]} / ${R[redis,c32,err]} | | ${R[cluster,c1,err]} / ${R[cluster,c32,err]} | |
| redis-server CPU per round trip, 1 / 32 in flight (µs) | – | ${R[redis,c1,cpu]} / ${R[redis,c32,cpu]} | | ${R[cluster,c1,cpu]} / ${R[cluster,c32,cpu]} | |
EOF2
echo "raw results: $OUT" >&2
