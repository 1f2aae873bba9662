#!/usr/bin/env bash
# Shared helpers for the scripts in test/services/. Sourced by test/run-all.sh, never run on its own.
#
# Convention: each test/services/<name>.sh defines start_<name> and stop_<name> and calls
# `register_service <name>`. start_<name> starts what the tests need on free loopback ports, under
# $SERVICES_DIR/<name>/, and exports where it listens (e.g. REDIS_PORTS); stop_<name> stops it and must
# succeed when start_<name> never ran or failed half-way. run-all.sh starts every registered service before
# the tests and stops them all however the run ends.

SERVICES_DIR="${SERVICES_DIR:-$PWD/.services}"
REGISTERED_SERVICES=()

register_service() { REGISTERED_SERVICES+=("$1"); }

# A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it).
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_for_tcp PORT SECONDS: until something accepts connections on 127.0.0.1:PORT (no nc here: bash /dev/tcp).
wait_for_tcp() {
  local port=$1 deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "nothing listens on 127.0.0.1:$port after $2 s" >&2; return 1; }
    sleep 0.1
  done
}

# ensure_command COMMAND DEBIAN_PACKAGE: installs the package when the command is missing (Debian/Ubuntu as
# root); otherwise fails saying what to install.
APT_UPDATED=0
ensure_command() {
  local cmd=$1 package=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $package (for $cmd)"
    if ((APT_UPDATED == 0)); then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    command -v "$cmd" >/dev/null 2>&1 && return 0
  fi
  echo "$cmd is missing: install the Debian package '$package' (or its equivalent) and run again" >&2
  return 1
}

# stop_pidfile FILE: stops the process whose pid is in FILE, if it still runs, and waits for it to go.
stop_pidfile() {
  local file=$1 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file" 2>/dev/null) || return 0
  [[ -n $pid ]] || return 0
  kill -CONT "$pid" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}
