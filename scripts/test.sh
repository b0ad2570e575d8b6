#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs the test peers it needs,
# checks formatting and lints, builds, runs the Rust tests and the npm client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- test peers and tools --------------------------------------------------------------
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # Installing a server package must not start it on its default port (the tests start
  # their own on free loopback ports), nor create PostgreSQL's "main" cluster.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
  fi
  "${sudo[@]}" mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' |
    "${sudo[@]}" tee /etc/postgresql-common/createcluster.d/switchboard-tests.conf >/dev/null
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
# Protocol peers the Rust tests start on 127.0.0.1 (each test harness starts and stops its
# own): IRC (ngircd; inspircd + atheme for IRCv3 and SASL), XMPP (prosody, ejabberd),
# Redis, PostgreSQL; openssl makes their self-signed certificates.
apt_install openssl redis-server redis-tools ngircd inspircd atheme-services prosody ejabberd postgresql-15

log "npm client packages (tests/clients)"
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
# The chat load generator's tests (crates/bench/tests) drive the node chat peers.
log "npm bench peers (bench/peers)"
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)

# --- Rust --------------------------------------------------------------------------------
# One build from scratch gains nothing from incremental state, which would add gigabytes of
# query caches to target/. (Set CARGO_INCREMENTAL=1 to keep it when re-running locally.)
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --locked --workspace

# --- real clients against the real binary ------------------------------------------------
log "npm client tests (socket.io-client, @sockethub/client)"
cargo build --locked -p switchboard
(cd tests/clients && SWITCHBOARD_BIN="$PWD/../../target/debug/switchboard" npm test)

log "disk used by target/: $(du -sh target 2>/dev/null | cut -f1)"
