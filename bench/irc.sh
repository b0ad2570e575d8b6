#!/usr/bin/env bash
# IRC platform benchmark: RSS per IRC login (one worker process per login) and incoming
# message latency, IRC server -> Socket.IO push, with the IRC server's own relay time to a
# raw client measured in the same run as the baseline.
#
#   bench/irc.sh [runs] [logins] [messages]     (defaults: 3 runs, 20 logins, 2000 messages)
#
# Starts ngircd (temp config, 127.0.0.1, free port) and a release Switchboard; stops only the
# PIDs it started. Prints the median of the runs as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
LOGINS=${2:-20}
MESSAGES=${3:-2000}
B=target/release/switchboard-bench
OUT=$(mktemp -d /tmp/sb-irc-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cargo build --release --locked -p switchboard -p switchboard-bench >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

IRC_PORT=$(free_port)
cat >"$OUT/ngircd.conf" <<EOF
[Global]
	Name = irc.bench.local
	Info = bench ircd
	AdminInfo1 = bench
	AdminInfo2 = bench
	AdminEMail = bench@localhost
	Listen = 127.0.0.1
	Ports = $IRC_PORT
	MotdPhrase = bench
[Limits]
	MaxConnectionsIP = 0
	MaxJoins = 0
	PingTimeout = 120
[Options]
	PAM = no
	Ident = no
	DNS = no
EOF
ngircd -n -f "$OUT/ngircd.conf" >"$OUT/ngircd.log" 2>&1 &
PIDS+=("$!"); wait_port "$IRC_PORT"

for i in $(seq "$RUNS"); do
  SB_PORT=$(free_port)
  target/release/switchboard serve --port "$SB_PORT" --rate-limit-max 100000000 --max-connections-per-ip 0 >"$OUT/sb-$i.log" 2>&1 &
  SB_PID=$!; PIDS+=("$SB_PID"); wait_port "$SB_PORT"
  "$B" --json irc --url "http://127.0.0.1:$SB_PORT" --irc-port "$IRC_PORT" --pid "$SB_PID" \
    --logins "$LOGINS" --messages "$MESSAGES" >"$OUT/irc-$i.json"
  kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true
done

m() { for i in $(seq "$RUNS"); do field "$1" <"$OUT/irc-$i.json"; done | median; }
cat <<EOF2
| measurement (median of $RUNS; $LOGINS logins, $MESSAGES messages) | Switchboard irc | raw IRC client (baseline) |
|---|---|---|
| RSS per IRC login (KiB, worker processes / logins) | $(m rss_per_login_kb) | |
| largest worker RSS (KiB) | $(m worker_rss_max_kb) | |
| server RSS with $LOGINS logins (KiB) | $(m server_rss_kb) | |
| incoming message latency p50 (µs) | $(m p50_us) | $(m baseline_p50_us) |
| incoming message latency p99 (µs) | $(m p99_us) | $(m baseline_p99_us) |
EOF2
echo "raw results: $OUT" >&2
