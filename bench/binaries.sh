# Sourced by bench/chat.sh and bench/chat-cluster.sh (not run on its own), from the repository
# root with $ROOT set: chooses the binaries a benchmark runs.
#   SB  the switchboard server: $SB_BIN if set (another branch or commit), else this tree's
#   B   switchboard-bench: $SB_BENCH_BIN if set (then $SB_BIN is needed too and nothing is
#       built, e.g. while a build runs), else this tree's
# Whatever comes from this tree is built first (release).
if [ -n "${SB_BENCH_BIN:-}" ]; then
  B=$(realpath "$SB_BENCH_BIN")
  SB=$(realpath "${SB_BIN:?SB_BENCH_BIN needs SB_BIN}")
elif [ -n "${SB_BIN:-}" ]; then
  B=$ROOT/target/release/switchboard-bench
  SB=$(realpath "$SB_BIN")
  cargo build --release --locked -p switchboard-bench >&2
else
  B=$ROOT/target/release/switchboard-bench
  SB=$ROOT/target/release/switchboard
  cargo build --release --locked -p switchboard -p switchboard-bench >&2
fi
