#!/usr/bin/env bash
# ZooKeeper for the tests (sourced; see lib.sh): a standalone server and a 3-node ensemble on one machine,
# each on free loopback ports with its own data dir under $SERVICES_DIR/zookeeper/.
#
# Exports:
#   ZOOKEEPER_CONNECT           127.0.0.1:port of the standalone server (contract suite, most tests)
#   ZOOKEEPER_ENSEMBLE          host:port,host:port,host:port of the ensemble (failover tests)
#   ZOOKEEPER_ENSEMBLE_DIR      its state dir: member N has zkN/pid and zkN/start.sh (to restart a killed one)
#   ZOOKEEPER_CURATOR_CLASSPATH Apache Curator 5 (Debian libcurator-recipes-java) and what it needs, for the
#                               interoperability test, which compiles test/zookeeper/interop/*.java against it
#
# tickTime=500 and minSessionTimeout=1000 allow 1 s sessions, so expiry tests take seconds, not minutes.

ZOOKEEPER_JAR=/usr/share/java/zookeeper.jar

# The Debian package ships no command on PATH, so ensure_command cannot tell; the jar is what we run.
ensure_zookeeper_jar() {
  [[ -f $ZOOKEEPER_JAR ]] && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing zookeeper (for $ZOOKEEPER_JAR)"
    if ((APT_UPDATED == 0)); then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zookeeper >/dev/null
    [[ -f $ZOOKEEPER_JAR ]] && return 0
  fi
  echo "$ZOOKEEPER_JAR is missing: install the Debian package 'zookeeper' (ZooKeeper 3.8) and run again" >&2
  return 1
}

# Apache Curator for the interoperability test (Debian libcurator-recipes-java, installed when missing).
ensure_curator() {
  [[ -f /usr/share/java/curator-recipes.jar ]] && command -v javac >/dev/null 2>&1 && return 0
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libcurator-recipes-java and a JDK (for the Curator interoperability test)"
    if ((APT_UPDATED == 0)); then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcurator-recipes-java \
      default-jdk-headless >/dev/null
    [[ -f /usr/share/java/curator-recipes.jar ]] && command -v javac >/dev/null 2>&1 && return 0
  fi
  echo "Apache Curator is missing: install the Debian packages 'libcurator-recipes-java' and 'default-jdk-headless'" >&2
  return 1
}

# The classpath of Curator's recipes: its own jars (from dpkg -L) and the jars they load.
curator_classpath() {
  local jars=() package jar
  for package in libcurator-recipes-java libcurator-framework-java libcurator-client-java; do
    while read -r jar; do
      [[ $jar == /usr/share/java/*.jar && ! $jar =~ -[0-9][0-9.]*\.jar$ ]] && jars+=("$jar")
    done < <(dpkg -L "$package")
  done
  for jar in guava slf4j-api zookeeper zookeeper-jute netty-common netty-buffer netty-handler netty-transport; do
    [[ -f /usr/share/java/$jar.jar ]] && jars+=("/usr/share/java/$jar.jar")
  done
  (IFS=:; echo "${jars[*]}")
}

# zookeeper_config DIR CLIENT_PORT [server lines...]: writes DIR/zoo.cfg.
zookeeper_config() {
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir/data"
  {
    echo "tickTime=500"
    echo "minSessionTimeout=1000"
    echo "maxSessionTimeout=60000"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$dir/data"
    echo "clientPort=$port"
    echo "clientPortAddress=127.0.0.1"
    echo "admin.enableServer=false"
    echo "4lw.commands.whitelist=ruok,srvr,stat,mntr,wchc,cons"
    # Containers (Curator's lock parents) are reaped soon after they empty, as in production but faster.
    echo "znode.container.checkIntervalMs=1000"
    local line
    for line in "$@"; do echo "$line"; done
  } >"$dir/zoo.cfg"
}

# zookeeper_launch DIR: writes DIR/start.sh (runs the server in the background, pid in DIR/pid) and runs it.
zookeeper_launch() {
  local dir=$1
  cat >"$dir/start.sh" <<EOF
#!/usr/bin/env bash
cd "$dir" || exit 1
# setsid: its own session, so a test that restarts a member does not tie it to the test process.
setsid java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dzookeeper.log.dir="$dir" \\
  -cp "/etc/zookeeper/conf:$ZOOKEEPER_JAR" \\
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" </dev/null >"$dir/server.log" 2>&1 &
echo \$! >"$dir/pid"
EOF
  chmod +x "$dir/start.sh"
  bash "$dir/start.sh"
}

# zookeeper_ready PORT SECONDS: until the server at PORT answers `srvr` as serving (standalone, leader, follower).
zookeeper_ready() {
  local port=$1 deadline=$((SECONDS + $2)) reply
  wait_for_tcp "$port" "$2" || return 1
  while ((SECONDS < deadline)); do
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && echo srvr >&3 && cat <&3) 2>/dev/null || true)
    [[ $reply == *"Mode: "* ]] && return 0
    sleep 0.2
  done
  echo "ZooKeeper on 127.0.0.1:$port is not serving after $2 s (see its server.log)" >&2
  return 1
}

start_zookeeper() {
  ensure_command java default-jre-headless || return 1
  ensure_zookeeper_jar || return 1
  ensure_curator || return 1
  local base="$SERVICES_DIR/zookeeper"
  stop_zookeeper
  rm -rf "$base"
  mkdir -p "$base"

  local port
  port=$(free_port)
  zookeeper_config "$base/standalone" "$port"
  zookeeper_launch "$base/standalone"

  local n ports=() servers=() connect=()
  for n in 1 2 3; do
    ports+=("$(free_port)")
    servers+=("server.$n=127.0.0.1:$(free_port):$(free_port)")
  done
  for n in 1 2 3; do
    zookeeper_config "$base/ensemble/zk$n" "${ports[n - 1]}" "${servers[@]}"
    echo "$n" >"$base/ensemble/zk$n/data/myid"
    zookeeper_launch "$base/ensemble/zk$n"
    connect+=("127.0.0.1:${ports[n - 1]}")
  done

  zookeeper_ready "$port" 60 || return 1
  for n in 1 2 3; do zookeeper_ready "${ports[n - 1]}" 90 || return 1; done
  export ZOOKEEPER_CONNECT="127.0.0.1:$port"
  export ZOOKEEPER_ENSEMBLE
  ZOOKEEPER_ENSEMBLE=$(IFS=,; echo "${connect[*]}")
  export ZOOKEEPER_ENSEMBLE_DIR="$base/ensemble"
  export ZOOKEEPER_CURATOR_CLASSPATH
  ZOOKEEPER_CURATOR_CLASSPATH=$(curator_classpath)
}

stop_zookeeper() {
  local base="$SERVICES_DIR/zookeeper" n
  stop_pidfile "$base/standalone/pid"
  for n in 1 2 3; do stop_pidfile "$base/ensemble/zk$n/pid"; done
  unset ZOOKEEPER_CONNECT ZOOKEEPER_ENSEMBLE ZOOKEEPER_ENSEMBLE_DIR ZOOKEEPER_CURATOR_CLASSPATH
}

register_service zookeeper
