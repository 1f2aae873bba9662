#!/usr/bin/env bash
# Redis for the Redlock backend's tests and benchmarks: REDIS_NODES (default 5) independent `redis-server`
# masters on free loopback ports, keeping nothing on disk (--save '' --appendonly no), so a restarted node
# comes back empty — as the fencing tests want. Exports REDIS_PORTS (comma list) and REDIS_STATE_DIR, where
# tests that start and stop nodes of their own leave a pidfile each, so stop_redis also ends those after a
# failed or interrupted run.

start_redis() {
  ensure_command redis-server redis-server || return 1
  local dir="$SERVICES_DIR/redis" count="${REDIS_NODES:-5}" ports=() port i
  mkdir -p "$dir"
  for ((i = 0; i < count; i++)); do
    port=$(free_port) || return 1
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --pidfile "$dir/$port.pid" --logfile "$dir/$port/redis.log" --dir "$dir/$port" || return 1
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_for_tcp "$port" 10 || return 1; done
  REDIS_PORTS=$(IFS=,; echo "${ports[*]}")
  export REDIS_PORTS
  export REDIS_STATE_DIR="$dir"
  echo "redis: ${#ports[@]} node(s) on 127.0.0.1:{$REDIS_PORTS}"
}

stop_redis() {
  local dir="$SERVICES_DIR/redis" file
  [[ -d $dir ]] || return 0
  # Our own nodes and any a test started under REDIS_STATE_DIR (a killed test run leaves them behind).
  for file in "$dir"/*.pid "$dir"/spawned/*.pid; do
    [[ -e $file ]] && stop_pidfile "$file"
  done
  rm -rf "$dir"
  unset REDIS_PORTS REDIS_STATE_DIR
}

register_service redis
