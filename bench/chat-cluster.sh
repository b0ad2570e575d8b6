#!/usr/bin/env bash
# Cross-node room fan-out (issue 6): one publisher on node 1, a room of 500 subscribers,
# Redis between the two nodes.
#
#   bench/chat-cluster.sh [runs]     (default 3 runs; medians reported)
#
# Clusters (each started fresh for every run, everything on 127.0.0.1, free ports):
#   sio  two bench/peers/chat-sio.mjs processes with @socket.io/redis-adapter (REDIS_URL)
#   sb   two `target/release/switchboard serve --redis-url …` nodes sharing one PostgreSQL
#        (started here; a fresh database per run); extra flags for both in $SB_CLUSTER_ARGS;
#        $SB_BIN benchmarks a prebuilt switchboard binary instead of this tree's.
#   base the same with the prebuilt binary $SB_BASE_BIN (another branch or commit), for an
#        A/B comparison in one run: with $SB_BASE_BIN set, $CLUSTERS defaults to "sio sb base";
#        $SB_BASE_ARGS are extra flags for base only (e.g. SB_BASE_BIN=target/release/switchboard
#        SB_BASE_ARGS="--threads 2" compares one runtime thread with two, interleaved).
# $CLUSTERS (default "sio sb") picks the clusters; run i of every cluster runs before run
# i+1 of any, so a slow spell of a shared machine hits all of them alike. Layouts ($SPLITS, default "0 250"): how many of the 500 subscribers use node 1 (the
# publisher's); the others use node 2. The load is `switchboard-bench chat fanout --url <node 1>
# --sub-url <node 2> --subscribers-on-publisher-node N`: users register on their own node, the
# room is created on node 1 and joined on each subscriber's node, the publisher sends 10 msg/s
# open loop (5k deliveries/s). Reported: p50/p99 delivery latency, delivered %, and the CPU
# time redis-server spent per delivered message (/proc/<pid>/stat over the whole run).
# Only PIDs started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${1:-3}
SPLITS=${SPLITS:-0 250}
if [ -n "${SB_BASE_BIN:-}" ]; then
  SB_BASE=$(realpath "$SB_BASE_BIN")
  CLUSTERS=${CLUSTERS:-sio sb base}
else
  CLUSTERS=${CLUSTERS:-sio sb}
fi
NODE_SECRET=$(openssl rand -hex 32) # the nodes of one cluster share it
OUT=$(mktemp -d /tmp/sb-cluster-bench.XXXXXX)
PIDS=()
PG_BIN=""
PG_DATA=""

# PostgreSQL refuses to run as root: it runs as the package's service user then.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=postgres --regid="$(id -g postgres)" --clear-groups -- "$@"
  else
    "$@"
  fi
}
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_DATA" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$(dirname "$PG_DATA")"
  fi
}
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
# SB and B: prebuilt binaries from $SB_BIN / $SB_BENCH_BIN, or this tree's (built).
# shellcheck source=bench/binaries.sh
. bench/binaries.sh
if [[ " $CLUSTERS " == *" sio "* ]]; then (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error) >&2; fi

# shellcheck source=bench/lib.sh
. bench/lib.sh
TICK=$(getconf CLK_TCK)

start_postgres() { # one server for every sb run (throwaway: no fsync); sets PG_PORT
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries missing (apt-get install postgresql)" >&2; exit 1; }
  local d; d=$(mktemp -d "$OUT/pg.XXXXXX")
  chmod 755 "$OUT"
  if [ "$(id -u)" = 0 ]; then chown postgres "$d"; fi
  PG_PORT=$(free_port)
  as_postgres "$PG_BIN/initdb" -D "$d/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$d/initdb.log" 2>&1 || { echo "initdb failed: $(tail -3 "$d/initdb.log")" >&2; exit 1; }
  PG_DATA="$d/data"
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$d/postgres.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $d -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
}
PG_RUN=0
fresh_database() { # a new database per run, so no run sees another's users; sets DB_URL
  PG_RUN=$((PG_RUN + 1))
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "bench$PG_RUN"
  DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench$PG_RUN"
}

start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$OUT" \
    >>"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT" || { echo "redis-server did not start, see $OUT/redis.log" >&2; return 1; }
}

start_nodes() { # start_nodes sio|sb|base: sets P1 P2 NODE_PIDS; fails if a node does not come up
  P1=$(free_port); P2=$(free_port); NODE_PIDS=()
  for port in "$P1" "$P2"; do
    if [ "$1" = sio ]; then
      REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node bench/peers/chat-sio.mjs "$port" >>"$OUT/sio-$port.log" 2>&1 &
    else
      local dir bin=$SB extra=${SB_CLUSTER_ARGS:-}; dir=$(mktemp -d "$OUT/sb-data.XXXXXX")
      if [ "$1" = base ]; then bin=$SB_BASE; extra+=" ${SB_BASE_ARGS:-}"; fi
      # shellcheck disable=SC2086
      (cd "$dir" && SWITCHBOARD_CHAT_RATE_LIMIT_MAX=0 SWITCHBOARD_CHAT_MAX_CONNECTIONS_PER_IP=0 \
        exec "$bin" serve --port "$port" \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" --database-url "$DB_URL" \
        --secret "$NODE_SECRET" --jwt-secret "$NODE_SECRET" \
        --rate-limit-max 100000000 --max-connections-per-ip 0 $extra) \
        >>"$OUT/$1-$port.log" 2>&1 &
    fi
    NODE_PIDS+=($!); PIDS+=($!)
  done
  wait_port "$P1" && wait_port "$P2"
}
stop_all() {
  for p in "${NODE_PIDS[@]}" "$REDIS_PID"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

field() { python3 -c "import json,sys; v=json.load(sys.stdin)['$1']; print(round(v, 2) if isinstance(v,float) else v)"; }
add_redis_cpu() { # add_redis_cpu report.json ticks_before ticks_after
  python3 - "$@" "$TICK" <<'PY'
import json, sys
path, before, after, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
report = json.load(open(path))
cpu_us = (after - before) * 1e6 / tick
report["redis_cpu_us_per_delivery"] = cpu_us / report["delivered"] if report["delivered"] else None
json.dump(report, open(path, "w"))
print(f"   p50 {report['p50_us']} p99 {report['p99_us']} delivered {report['delivered_pct']} %"
      f" redis {report['redis_cpu_us_per_delivery'] or 0:.2f} us/msg", file=sys.stderr)
PY
}

start_postgres
declare -A MISSING
for split in $SPLITS; do
  for i in $(seq "$RUNS"); do
    for cluster in $CLUSTERS; do
      key="$cluster-$split"
      if [ -n "${MISSING[$key]:-}" ]; then continue; fi
      if [ "$cluster" != sio ]; then fresh_database; fi
      start_redis
      if ! start_nodes "$cluster"; then
        MISSING[$key]="a node did not start: $(cat "$OUT/$cluster"-*.log 2>/dev/null | grep -i -m1 error || echo "see $OUT")"
        stop_all; continue
      fi
      echo "== $cluster, $split subscribers on node 1, run $i (load $(cut -d' ' -f1 /proc/loadavg))" >&2
      before=$(cpu_ticks "$REDIS_PID")
      out="$OUT/$key-$i.json"
      if "$B" --json chat fanout --proto "$([ "$cluster" = sio ] && echo sio || echo ws)" \
          --url "http://127.0.0.1:$P1" --sub-url "http://127.0.0.1:$P2" \
          --subscribers 500 --subscribers-on-publisher-node "$split" \
          --rate 10 --duration-secs 10 --warmup-secs 2 >"$out" 2>"$out.err"; then
        add_redis_cpu "$out" "$before" "$(cpu_ticks "$REDIS_PID")"
      else
        MISSING[$key]=$(grep -m1 -E 'Error|error' "$out.err" || tail -n 1 "$out.err")
        rm -f "$out"
      fi
      stop_all
    done
  done
done

med() { for f in "$OUT/$1-"*.json; do [ -s "$f" ] && field "$2" <"$f"; done | median; }
cell() { if [ -n "${MISSING[$1]:-}" ]; then echo "n/a"; else med "$1" "$2"; fi; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
title() { case $1 in
  sb) echo "Switchboard (2 nodes, Redis, PostgreSQL)" ;;
  base) echo "Switchboard \$SB_BASE_BIN" ;;
  sio) echo "node socket.io + redis-adapter (2 nodes)" ;;
esac; }
row() { # row label field: one table row over $CLUSTERS
  local line="| $1 |" c
  for c in $CLUSTERS; do line+=" $(cell "$c-$split" "$2") |"; done
  echo "$line"
}
for split in $SPLITS; do
  header="| fan-out 1→500 at 10 msg/s, $split of 500 subscribers on the publisher's node (median of $RUNS) |"
  rule="|---|"
  for c in $CLUSTERS; do header+=" $(title "$c") |"; rule+="---|"; done
  echo; echo "$header"; echo "$rule"
  row "p50 µs" p50_us
  row "p99 µs" p99_us
  row "p99.9 µs" p999_us
  row "delivered %" delivered_pct
  row "redis-server CPU µs per delivered message" redis_cpu_us_per_delivery
done
for k in "${!MISSING[@]}"; do echo; echo "$k: ${MISSING[$k]}"; done
echo "raw results: $OUT" >&2
