# Helpers the bench scripts share; source it from the repository root (`. bench/lib.sh`).

# wait_port PORT [PID]: something accepts connections on 127.0.0.1:PORT within 10 s (and
# PID, when given, is still alive: a server that exited fails at once).
wait_port() {
  for _ in $(seq 200); do
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
      echo "process $2 exited before listening on $1" >&2
      return 1
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# free_port: a loopback port nobody listens on right now.
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

# cpu_ticks PID or PID/task/TID: user + system CPU ticks (getconf CLK_TCK a second) so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# thread_ticks PID: one line "PID/TID NAME TICKS" per thread of PID (spaces in a name become
# `_`). A thread that ends between the listing and its reads (tokio's blocking threads do)
# is left out.
thread_ticks() {
  local t name ticks
  for t in /proc/"$1"/task/*; do
    name=$(tr ' ' _ 2>/dev/null <"$t/comm") || continue
    ticks=$(cpu_ticks "$1/task/${t##*/}" 2>/dev/null) || continue
    echo "$1/${t##*/} $name $ticks"
  done
}

# steal_ticks: CPU time (ticks) the virtual machine's host has taken from this machine so
# far, all CPUs (the 8th figure of /proc/stat's `cpu` line; 0 on bare metal).
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }

# median: of the numbers on stdin, one per line ("-" if there are none).
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# serve_sb BINARY DIR LOG [ARG...]: `switchboard serve` on $PORT in the background, with its
# database in DIR (so each start begins empty) and the limits a single-address load
# generator trips lifted (the chat ones as variables, which older binaries ignore); sets
# SB_DIR and SB_PID (and `$!`). start_sb also waits until it listens; stop_sb stops it
# and removes DIR.
serve_sb() {
  SB_DIR=$2
  (cd "$SB_DIR" && exec env SWITCHBOARD_CHAT_RATE_LIMIT_MAX=0 SWITCHBOARD_CHAT_MAX_CONNECTIONS_PER_IP=0 \
    "$1" serve --port "$PORT" --rate-limit-max 100000000 --max-connections-per-ip 0 "${@:4}") >>"$3" 2>&1 &
  SB_PID=$!
}
start_sb() {
  serve_sb "$@"
  wait_port "$PORT" "$SB_PID"
}
stop_sb() {
  if [ -n "${SB_PID:-}" ]; then kill "$SB_PID" 2>/dev/null || true; wait "$SB_PID" 2>/dev/null || true; fi
  if [ -n "${SB_DIR:-}" ]; then rm -rf "$SB_DIR"; fi
  SB_PID= SB_DIR=
}
