#!/usr/bin/env bash
# PostgreSQL and MariaDB for the TypeORM lock backend's tests. Sourced by test/run-all.sh (see lib.sh).
#
# Uses the servers at POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test) and MYSQL_URL (default
# mysql://root@127.0.0.1:3306/test) when they answer; otherwise starts a private instance on a free port
# under $SERVICES_DIR/sql/ (installing the Debian server package when it is missing) and exports its URL.
# stop_sql stops only what start_sql started.

SQL_DIR="$SERVICES_DIR/sql"

# sql_reachable pg|mysql URL: true when a real client can connect and run SELECT 1 (node drivers from node_modules).
sql_reachable() {
  node -e '
    const [kind, url] = process.argv.slice(1);
    const fail = () => process.exit(1);
    setTimeout(fail, 5000).unref();
    if (kind === "pg") {
      const { Client } = require("pg");
      const c = new Client({ connectionString: url, connectionTimeoutMillis: 3000 });
      c.connect().then(() => c.query("SELECT 1")).then(() => c.end()).then(() => process.exit(0), fail);
    } else {
      require("mysql2/promise").createConnection({ uri: url, connectTimeout: 3000 })
        .then((c) => c.query("SELECT 1").then(() => c.end())).then(() => process.exit(0), fail);
    }' "$1" "$2" 2>/dev/null
}

start_private_postgres() {
  local dir="$SQL_DIR/postgres" port bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z $bin ]]; then
    ensure_command pg_ctlcluster postgresql || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  port=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir" && chown postgres "$dir"
  su postgres -c "$bin/initdb -D '$dir/data' -U postgres --auth=trust" >"$dir/initdb.log" 2>&1 || {
    echo "initdb failed, see $dir/initdb.log" >&2; return 1; }
  su postgres -c "$bin/pg_ctl -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off\" start" >/dev/null || {
    echo "PostgreSQL did not start, see $dir/server.log" >&2; return 1; }
  echo "$bin" >"$dir/bin"
  su postgres -c "$bin/createdb -h 127.0.0.1 -p $port -U postgres test" || return 1
  export POSTGRES_URL="postgres://postgres@127.0.0.1:$port/test"
  echo "started a private PostgreSQL on 127.0.0.1:$port"
}

start_private_mariadb() {
  local dir="$SQL_DIR/mariadb" port
  ensure_command mariadbd mariadb-server || return 1
  port=$(free_port)
  rm -rf "$dir" && mkdir -p "$dir/data" && chown -R mysql "$dir"
  mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" >"$dir/install.log" 2>&1 || {
    echo "mariadb-install-db failed, see $dir/install.log" >&2; return 1; }
  mariadbd --no-defaults --user=mysql --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --log-error="$dir/server.log" &
  wait_for_tcp "$port" 30 || return 1
  # root authenticates by unix socket here; the tests connect over TCP, so give them a password-less TCP root.
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1'; CREATE DATABASE IF NOT EXISTS test;" || return 1
  export MYSQL_URL="mysql://root@127.0.0.1:$port/test"
  echo "started a private MariaDB on 127.0.0.1:$port"
}

start_sql() {
  export POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
  export MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
  if sql_reachable pg "$POSTGRES_URL"; then echo "PostgreSQL answers at $POSTGRES_URL"; else
    echo "no PostgreSQL at $POSTGRES_URL"; start_private_postgres || return 1; fi
  if sql_reachable mysql "$MYSQL_URL"; then echo "MariaDB/MySQL answers at $MYSQL_URL"; else
    echo "no MariaDB/MySQL at $MYSQL_URL"; start_private_mariadb || return 1; fi
}

stop_sql() {
  local pgdir="$SQL_DIR/postgres"
  if [[ -f $pgdir/data/postmaster.pid && -f $pgdir/bin ]]; then
    su postgres -c "$(cat "$pgdir/bin")/pg_ctl -D '$pgdir/data' -m immediate -w stop" >/dev/null 2>&1 || true
  fi
  stop_pidfile "$SQL_DIR/mariadb/mysqld.pid"
  rm -rf "$SQL_DIR"
}

register_service sql
