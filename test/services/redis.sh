#!/usr/bin/env bash
# Redis for the Redlock backend's tests and benchmarks: REDIS_NODES (default 5) independent `redis-server`
# masters on free loopback ports, keeping nothing on disk (--save '' --appendonly no), so a restarted node
# comes back empty — as the fencing tests want. Exports REDIS_PORTS (comma list) and REDIS_STATE_DIR, where
# tests that start and stop nodes of their own leave a pidfile each, so stop_redis also ends those after a
# failed or interrupted run.
#
# Beside them, one Redis Cluster of REDIS_CLUSTER_MASTERS (default 3) masters without replicas, for the Cluster
# tests: exports REDIS_CLUSTER_PORTS (its client ports). Each node's cluster bus gets a free port of its own
# (--cluster-port): the default, port + 10000, can lie past 65535 for the kernel's high free ports.

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
  start_redis_cluster "$dir/cluster"
}

# start_redis_cluster DIR: the masters under DIR/<port>/ (nodes.conf included), slots split by redis-cli.
start_redis_cluster() {
  # redis-cli comes with redis-server on Debian (redis-tools, a dependency), but check rather than assume.
  ensure_command redis-cli redis-tools || return 1
  local dir=$1 count="${REDIS_CLUSTER_MASTERS:-3}" ports=() addresses=() port bus i deadline
  mkdir -p "$dir"
  for ((i = 0; i < count; i++)); do
    port=$(free_port) || return 1
    bus=$(free_port) || return 1
    mkdir -p "$dir/$port"
    redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" --cluster-node-timeout 2000 \
      --daemonize yes --pidfile "$dir/$port.pid" --logfile "$dir/$port/redis.log" --dir "$dir/$port" || return 1
    ports+=("$port")
    addresses+=("127.0.0.1:$port")
  done
  for port in "${ports[@]}"; do wait_for_tcp "$port" 10 || return 1; done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 ||
    { cat "$dir/create.log" >&2; return 1; }
  # `create` returns once the nodes agree on the configuration; each node says ok once it sees every slot served.
  deadline=$((SECONDS + 20))
  for port in "${ports[@]}"; do
    until redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; do
      ((SECONDS < deadline)) || { echo "redis cluster node $port is not ok after 20 s" >&2; return 1; }
      sleep 0.1
    done
  done
  REDIS_CLUSTER_PORTS=$(IFS=,; echo "${ports[*]}")
  export REDIS_CLUSTER_PORTS
  echo "redis: a cluster of ${#ports[@]} master(s) on 127.0.0.1:{$REDIS_CLUSTER_PORTS}"
}

stop_redis() {
  local dir="$SERVICES_DIR/redis" file
  [[ -d $dir ]] || return 0
  # Our own nodes and any a test started under REDIS_STATE_DIR (a killed test run leaves them behind); all at
  # once, as a redis-server can take a second or two to act on SIGTERM on a busy machine.
  for file in "$dir"/*.pid "$dir"/cluster/*.pid "$dir"/spawned/*.pid; do
    [[ -e $file ]] && stop_pidfile "$file" &
  done
  wait
  rm -rf "$dir"
  unset REDIS_PORTS REDIS_STATE_DIR REDIS_CLUSTER_PORTS
}

register_service redis
