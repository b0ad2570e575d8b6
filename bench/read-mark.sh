#!/usr/bin/env bash
# What one read mark costs as a conversation's history grows, for one or more Switchboard
# builds: `switchboard-bench chat read` (one pair; HISTORY messages sent and marked read,
# then timed marks of one new message each) against a fresh server and database per run,
# builds interleaved at each history size.
#
# Usage: bench/read-mark.sh LABEL=SERVER_BINARY [LABEL=SERVER_BINARY ...]
#   e.g. bench/read-mark.sh base=/tmp/base/switchboard new=target/release/switchboard
#   A SERVER_BINARY of node:SCRIPT runs a node peer instead, e.g. ws=node:bench/peers/chat-ws.mjs
#   (it keeps unread ids in memory and stores nothing: the floor of a mark's round trip).
#
# Environment:
#   BENCH      switchboard-bench binary (default target/release/switchboard-bench)
#   HISTORIES  history sizes, in messages (default "1000 10000 50000 100000")
#   ROUNDS     timed marks per run (default 200)
#   PORT       the server's loopback port (default 10596)
#
# Prints per run: label, history, the first mark (all of it) and the one-message marks'
# p50, p99 and max, in µs; a run that fails prints its error instead.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench/read-mark.sh LABEL=SERVER_BINARY ..." >&2; exit 2; }
BENCH=${BENCH:-target/release/switchboard-bench}
PORT=${PORT:-10596}
# shellcheck source=bench/lib.sh
. bench/lib.sh
PEER_PID=
stop() {
    stop_sb
    if [ -n "$PEER_PID" ]; then kill "$PEER_PID" 2>/dev/null || true; wait "$PEER_PID" 2>/dev/null || true; fi
    PEER_PID=
}
trap stop EXIT

echo -e "label\thistory\tfirst_mark_us\tp50_us\tp99_us\tmax_us"
for history in ${HISTORIES:-1000 10000 50000 100000}; do
    for arm in "$@"; do
        label=${arm%%=*} bin=${arm#*=}
        log=$(mktemp /tmp/sb-read.XXXXXX.log)
        case $bin in
        node:*) node "${bin#node:}" "$PORT" >"$log" 2>&1 & PEER_PID=$!; wait_port "$PORT" "$PEER_PID" ;;
        *) start_sb "$bin" "$(mktemp -d /tmp/sb-read.XXXXXX)" "$log" ;;
        esac
        if json=$("$BENCH" --json chat read --url "http://127.0.0.1:$PORT" \
            --history "$history" --rounds "${ROUNDS:-200}" 2>"$log.err"); then
            python3 -c '
import json, sys
d = json.loads(sys.argv[3])
print("\t".join(map(str, [sys.argv[1], sys.argv[2], d["first_mark_us"], d["p50_us"], d["p99_us"], d["max_us"]])))
' "$label" "$history" "$json"
        else
            echo -e "$label\t$history\tfailed: $(grep -m1 -iE 'error|caused' "$log.err" | head -c 120)"
        fi
        stop
        rm -f "$log" "$log.err"
    done
done
