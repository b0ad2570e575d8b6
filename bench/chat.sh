#!/usr/bin/env bash
# Native chat benchmarks (issue 5): Switchboard's /ws chat and two node peers, same generator, same run.
#
#   bench/chat.sh [runs]        (default 3 runs of each measurement; medians reported)
#
# Servers (each started fresh for every single measurement, on 127.0.0.1):
#   sb   target/release/switchboard serve, or $SB_BIN if set (JSON frames at /ws?token=, users via POST /api/auth/register,
#        rooms via POST /api/rooms + /api/rooms/{id}/join); extra serve flags in $SB_ARGS,
#        other room paths in $ROOM_CREATE / $ROOM_JOIN
#   ws   bench/peers/chat-ws.mjs  (node + ws 8, the same JSON protocol)
#   sio  bench/peers/chat-sio.mjs (node + socket.io 4, the same events as Socket.IO events)
# Scenarios (switchboard-bench chat …):
#   throughput  50 pairs, 16 messages in flight per sender (closed loop): deliveries/s
#   rate        1000 connections x 10 msg/s open loop (10k msg/s): latency p50/p99/p99.9 from each
#               message's scheduled instant, delivered %; also the latency from the actual write and
#               the generator's own lateness (write - schedule), so a lagging generator shows
#   fanout      1 publisher -> room of 500 at 10 msg/s open loop (5k deliveries/s): p99, delivered %
#               (open-loop senders wake on a timerfd in the bench's event loop, tens of µs late;
#               BENCH_TIMER=tokio uses tokio's millisecond timer instead, up to ~2 ms late; the
#               generator's lateness has its own row either way)
#   idle        RSS growth of the server for 1000 idle authenticated connections (over the second
#               500; after each half the server's RSS is sampled every 250 ms until the last second's
#               samples agree within 0.2 %, at most 5 s: the steady idle cost, not handshake leftovers)
# Subsets for quick A/B runs: $SERVERS (default "sb ws sio"), $SCENARIOS (default all four);
# $SB_BENCH_BIN runs a prebuilt switchboard-bench (another commit's generator; needs $SB_BIN too,
# nothing is built).
# If Switchboard has no chat endpoint yet (POST /api/auth/register answers 404), its column says so
# and the peers are still measured. Loopback only; every load is bounded in count and time; only
# PIDs started here are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${1:-3}
PORT=${PORT:-10591}
OUT=$(mktemp -d /tmp/sb-chat-bench.XXXXXX)
DEFAULT_JOIN='/api/rooms/{id}/join'
ROOM_ARGS=(--room-create "${ROOM_CREATE:-/api/rooms}" --room-join "${ROOM_JOIN:-$DEFAULT_JOIN}")
SERVER_PID=
SB_DIR=
# On any exit (an interrupted run too): the server stops and its database goes (see stop).
trap stop EXIT

# SB and B: prebuilt binaries from $SB_BIN / $SB_BENCH_BIN, or this tree's (built).
# shellcheck source=bench/binaries.sh
. bench/binaries.sh
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error) >&2

# shellcheck source=bench/lib.sh
. bench/lib.sh

start() { # start sb|ws|sio: sets SERVER_PID
  case $1 in
    sb)
      # Own directory per start, so an embedded database begins empty; limits lifted because the
      # bench is one client address opening 1000 connections.
      # shellcheck disable=SC2086
      serve_sb "$SB" "$(mktemp -d "$OUT/sb-data.XXXXXX")" "$OUT/sb.log" ${SB_ARGS:-}
      ;;
    ws) node bench/peers/chat-ws.mjs "$PORT" >>"$OUT/ws.log" 2>&1 & ;;
    sio) node bench/peers/chat-sio.mjs "$PORT" >>"$OUT/sio.log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT" || { echo "server $1 did not start, see $OUT/$1.log" >&2; return 1; }
}
# The database of a stopped server is not a result: a full run would leave over 1 GB of it.
stop() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
  if [ -n "$SB_DIR" ]; then rm -rf "$SB_DIR"; SB_DIR=; fi
}

proto() { [ "$1" = sio ] && echo sio || echo ws; }

# Is the Switchboard chat API there? Prints nothing if so, the reason otherwise.
sb_missing() {
  python3 - "$PORT" <<'EOF'
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/auth/register",
    data=json.dumps({"username": "probe-chat-api", "password": "probe-password-1"}).encode(),
    headers={"content-type": "application/json"}, method="POST")
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    if e.code in (404, 405):
        print(f"no native chat endpoint (POST /api/auth/register -> {e.code})")
except Exception as e:
    print(f"chat API probe failed: {e}")
EOF
}

scenario_args() {
  case $1 in
    throughput) echo "throughput --pairs 50 --window 16 --duration-secs 10 --warmup-secs 2" ;;
    rate) echo "rate --connections 1000 --rate 10 --duration-secs 10 --warmup-secs 2" ;;
    fanout) echo "fanout --subscribers 500 --rate 10 --duration-secs 10 --warmup-secs 2" ;;
  esac
}

field() { python3 -c "import json,sys; v=json.load(sys.stdin)['$1']; print(round(v, 2) if isinstance(v,float) else v)"; }
med() { # med server scenario field
  for f in "$OUT/$1-$2-"*.json; do [ -s "$f" ] && field "$3" <"$f"; done | median
}

declare -A MISSING
for server in ${SERVERS:-sb ws sio}; do
  if [ $server = sb ]; then
    start sb
    MISSING[sb]=$(sb_missing)
    stop
    if [ -n "${MISSING[sb]}" ]; then echo "Switchboard: ${MISSING[sb]}; measuring the peers only" >&2; continue; fi
  fi
  for scenario in ${SCENARIOS:-throughput rate fanout idle}; do
    for i in $(seq "$RUNS"); do
      start "$server"
      out="$OUT/$server-$scenario-$i.json"
      case $scenario in
        idle) args=(idle --connections 1000 --hold-secs 3 --pid "$SERVER_PID") ;;
        fanout) read -r -a args <<<"$(scenario_args $scenario)"; args+=("${ROOM_ARGS[@]}") ;;
        *) read -r -a args <<<"$(scenario_args $scenario)" ;;
      esac
      echo "== $server $scenario run $i" >&2
      if ! "$B" --json chat "${args[@]}" --proto "$(proto $server)" --url "http://127.0.0.1:$PORT" \
          >"$out" 2>"$out.err"; then
        echo "   failed: $(tail -n 3 "$out.err" | tr '\n' ' ')" >&2
        rm -f "$out"
      elif [ "$(field generator_lagged <"$out" 2>/dev/null)" = True ]; then
        echo "   warning: over 1 % of messages were written > 1 ms late (the generator lagged)" >&2
      fi
      stop
    done
  done
done

cell() { # cell server scenario field...: "a / b" of the medians, or the reason it is missing
  if [ -n "${MISSING[$1]:-}" ]; then echo "n/a"; return; fi
  local out=() f
  for f in "${@:3}"; do out+=("$(med "$1" "$2" "$f")"); done
  local IFS=/; echo "${out[*]}" | sed 's|/| / |g'
}
ratio() { # ratio a b: a/b, or n/a
  python3 -c "import sys
try: print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}x')
except Exception: print('n/a')" "$1" "$2"
}
row() { # row label scenario ratio-field field...: the ratios compare ratio-field
  local sb ws sio
  sb=$(cell sb "$2" "${@:4}"); ws=$(cell ws "$2" "${@:4}"); sio=$(cell sio "$2" "${@:4}")
  local r1 r2; r1=$(ratio "$(med sb "$2" "$3")" "$(med sio "$2" "$3")"); r2=$(ratio "$(med sb "$2" "$3")" "$(med ws "$2" "$3")")
  [ -n "${MISSING[sb]:-}" ] && r1=n/a && r2=n/a
  echo "| $1 | $sb | $ws | $sio | $r1 | $r2 |"
}

cat <<EOF2
| measurement (median of $RUNS) | Switchboard | node ws | node socket.io | Switchboard / socket.io | Switchboard / ws |
|---|---|---|---|---|---|
$(row "throughput, 50 pairs: deliveries/s" throughput delivered_per_s delivered_per_s)
$(row "throughput: delivered %" throughput delivered_pct delivered_pct)
$(row "10k msg/s (1000 conns x 10/s): p50 / p99 / p99.9 µs (ratio of p99)" rate p99_us p50_us p99_us p999_us)
$(row "10k msg/s: delivered %" rate delivered_pct delivered_pct)
$(row "10k msg/s: from the actual write p50 / p99 µs" rate from_write_p99_us from_write_p50_us from_write_p99_us)
$(row "10k msg/s: generator lateness (write − schedule) p50 / p99 µs" rate late_p99_us late_p50_us late_p99_us)
$(row "fan-out 1→500 at 10 msg/s: p50 / p99 µs (ratio of p99)" fanout p99_us p50_us p99_us)
$(row "fan-out: delivered %" fanout delivered_pct delivered_pct)
$(row "RSS per idle authenticated connection (bytes, 1000 conns, growth over the second 500)" idle bytes_per_conn bytes_per_conn)
EOF2
[ -n "${MISSING[sb]:-}" ] && echo && echo "Switchboard: ${MISSING[sb]}."
echo "raw results: $OUT" >&2
