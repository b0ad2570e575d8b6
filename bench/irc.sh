#!/usr/bin/env bash
# IRC platform benchmark: RSS per IRC login (one worker process per login) and incoming
# message latency, IRC server -> Socket.IO push, with the IRC server's own relay time to a
# raw client measured in the same run as the baseline.
#
#   bench/irc.sh [runs] [logins] [messages]     (defaults: 3 runs, 20 logins, 2000 messages)
#
# Starts InspIRCd (temp config, 127.0.0.1, free port) and a release Switchboard; stops only the
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

# shellcheck source=bench/lib.sh
. bench/lib.sh
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

IRC_PORT=$(free_port)
# InspIRCd with its flood penalty ("fakelag") off, so the source client's lines are relayed
# as fast as they come (ngircd delays a client's lines by a penalty per command, which
# would measure its throttle rather than the path under test).
cat >"$OUT/inspircd.conf" <<EOF
<config format="xml">
<server name="irc.bench.local" description="bench ircd" network="BenchNet">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="$IRC_PORT" type="clients">
<connect allow="*" timeout="60" pingfreq="120" localmax="1000" globalmax="1000" maxconnwarn="off" useident="no" limit="5000" hardsendq="1048576" softsendq="65536" recvq="65536" threshold="10000000" commandrate="1000000000" fakelag="off" resolvehostnames="no">
<pid file="$OUT/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="$OUT/inspircd.log">
<dns timeout="1">
<module name="cap">
<module name="ircv3">
<module name="ircv3_servertime">
<module name="ircv3_echomessage">
<module name="ircv3_batch">
<module name="ircv3_labeledresponse">
EOF
if [ "$(id -u)" = 0 ]; then
  chown -R nobody:nogroup "$OUT"
  setpriv --reuid=nobody --regid=nogroup --clear-groups -- inspircd --nofork --config="$OUT/inspircd.conf" >/dev/null 2>&1 &
else
  inspircd --nofork --config="$OUT/inspircd.conf" >/dev/null 2>&1 &
fi
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
| PSS per IRC login (KiB, shared pages divided among workers) | $(m pss_per_login_kb) | |
| largest worker RSS (KiB) | $(m worker_rss_max_kb) | |
| server RSS with $LOGINS logins (KiB) | $(m server_rss_kb) | |
| incoming message latency p50 (µs) | $(m p50_us) | $(m baseline_p50_us) |
| incoming message latency p99 (µs) | $(m p99_us) | $(m baseline_p99_us) |
EOF2
echo "raw results: $OUT" >&2
