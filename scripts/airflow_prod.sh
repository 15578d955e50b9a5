#!/usr/bin/env bash
# The production shape of the Airflow deployment, on this machine, with one command:
# PostgreSQL (metadata DB and Celery result backend), Redis (Celery broker), `airflow db
# migrate`, then api-server, scheduler, dag-processor, triggerer and two Celery workers
# (w1, w2; concurrency 1 each), every one a separate process. The same shape as the test
# stack (tests/dags/airflow_support.py) and docker/compose.yaml's Celery profile.
#
#   scripts/airflow_prod.sh [start]   start everything (again: says what already runs)
#   scripts/airflow_prod.sh status    which processes run
#   scripts/airflow_prod.sh stop      stop everything this script started (the DB is kept)
#
# State: .airflow/prod/ (AIRFLOW_HOME in home/, service logs in logs/, pid files in pids/,
# secrets.env and passwords.json at mode 0600). PostgreSQL's cluster persists across stops in
# .airflow/prod/postgres, or as root (PostgreSQL refuses root: it runs as the `postgres` user)
# in ~postgres/ttr-airflow-prod-<hash of this checkout>. Redis keeps nothing.
#
# Settings (environment): AIRFLOW_PORT (8080), AIRFLOW_BIND (127.0.0.1), PG_PORT (5433),
# REDIS_PORT (6380), TTR_DATA_ROOT (./data), TTR_DATA__ARTIFACT_ROOT (./artifacts).
# Shared state: every worker reads the data root and writes the artifact root. Here they share
# this disk; workers on other hosts need both on a shared filesystem, or the artifact root as
# an object-store URL (s3://, gs://).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROD="$REPO/.airflow/prod"
LOGS="$PROD/logs"
PIDS="$PROD/pids"
AIRFLOW_PORT="${AIRFLOW_PORT:-8080}"
AIRFLOW_BIND="${AIRFLOW_BIND:-127.0.0.1}"
PG_PORT="${PG_PORT:-5433}"
REDIS_PORT="${REDIS_PORT:-6380}"
URL="http://$([ "$AIRFLOW_BIND" = 0.0.0.0 ] && echo 127.0.0.1 || echo "$AIRFLOW_BIND"):$AIRFLOW_PORT"
WORKERS=(w1 w2)
SERVICES=(api-server scheduler dag-processor triggerer worker-w1 worker-w2)

say() { echo "airflow-prod: $*"; }
die() { echo "airflow-prod: $*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
  PGDATA_DIR="$(getent passwd postgres | cut -d: -f6)/ttr-airflow-prod-$(echo -n "$REPO" | sha256sum | cut -c1-8)"
  as_pg() { runuser -u postgres -- "$@"; }
else
  PGDATA_DIR="$PROD/postgres"
  as_pg() { "$@"; }
fi

alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
pg_running() { [ -n "${PG_BIN:-}" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" status >/dev/null 2>&1; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The environment of every Airflow process (after secrets.env is loaded).
airflow_env() {
  local db="airflow:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/airflow"
  export AIRFLOW_HOME="$PROD/home" \
    AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags" \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PYTHONPATH="$REPO" \
    PATH="$REPO/.venv/bin:$PATH" \
    TF_USE_LEGACY_KERAS=1 GX_ANALYTICS_ENABLED=false \
    TTR_DATA_ROOT="${TTR_DATA_ROOT:-$REPO/data}" \
    TTR_DATA__ARTIFACT_ROOT="${TTR_DATA__ARTIFACT_ROOT:-$REPO/artifacts}" \
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$db" \
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC="postgresql+asyncpg://$db" \
    AIRFLOW__CORE__EXECUTOR=CeleryExecutor \
    AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0" \
    AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$db" \
    AIRFLOW__CELERY__WORKER_CONCURRENCY=1 \
    AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400 \
    AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__POLLING_INTERVAL=30 \
    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$PROD/passwords.json" \
    AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$URL/execution/" \
    AIRFLOW__API__BASE_URL="$URL" \
    AIRFLOW__API__HOST="$AIRFLOW_BIND" \
    AIRFLOW__API__PORT="$AIRFLOW_PORT"
}

# Start one service in its own session (so stop can end it with everything it spawned).
spawn() {
  local name="$1"; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

start_postgres() {
  PG_BIN="$(bash "$REPO/scripts/services.sh" pg-bin)"
  if pg_running; then say "PostgreSQL already runs ($PGDATA_DIR)"; return; fi
  port_taken "$PG_PORT" && die "port $PG_PORT is taken; set PG_PORT to a free one"
  if [ ! -d "$PGDATA_DIR/data" ]; then
    say "creating the PostgreSQL cluster in $PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDATA_DIR" && chmod 700 "$PGDATA_DIR"
    as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 >"$LOGS/initdb.log" 2>&1 \
      || { cat "$LOGS/initdb.log"; die "initdb failed"; }
  fi
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  # The server's output goes to a log this shell opens (the postgres user may not write here).
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PGDATA_DIR" \
    start >>"$LOGS/postgres.log" 2>&1 || { tail -20 "$LOGS/postgres.log"; die "PostgreSQL did not start"; }
  local psql=(as_pg psql -h "$PGDATA_DIR" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq)
  if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'airflow'")" ]; then
    "${psql[@]}" -c "CREATE ROLE airflow LOGIN PASSWORD '$POSTGRES_PASSWORD'"
    "${psql[@]}" -c "CREATE DATABASE airflow OWNER airflow"
  fi
}

start_redis() {
  if alive redis; then say "Redis already runs"; return; fi
  port_taken "$REDIS_PORT" && die "port $REDIS_PORT is taken; set REDIS_PORT to a free one"
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$PROD/redis"
  spawn redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$PROD/redis"
}

start() {
  [ -x "$REPO/.venv/bin/airflow" ] || die ".venv is missing: run make setup"
  bash "$REPO/scripts/services.sh" install
  (umask 077; mkdir -p "$PROD/home" "$LOGS" "$PIDS")
  [ -f "$PROD/secrets.env" ] || bash "$REPO/docker/init-secrets.sh" "$PROD/secrets.env"
  set -a; . "$PROD/secrets.env"; set +a
  if [ ! -f "$PROD/passwords.json" ]; then
    (umask 077; printf '{"admin": "%s"}\n' "$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')" \
      >"$PROD/passwords.json")
  fi
  airflow_env
  mkdir -p "$TTR_DATA_ROOT"
  start_postgres
  start_redis
  say "migrating the metadata DB (log: $LOGS/migrate.log)"
  airflow db migrate >"$LOGS/migrate.log" 2>&1 || { tail -30 "$LOGS/migrate.log"; die "migrate failed"; }
  if ! alive api-server; then
    port_taken "$AIRFLOW_PORT" && die "port $AIRFLOW_PORT is taken; set AIRFLOW_PORT to a free one"
    spawn api-server airflow api-server --host "$AIRFLOW_BIND" --port "$AIRFLOW_PORT"
  fi
  for name in scheduler dag-processor triggerer; do
    alive "$name" || spawn "$name" airflow "$name"
  done
  local port=8793
  for w in "${WORKERS[@]}"; do
    # Both workers serve their task logs, each on its own port (8793, 8795: 8794 is the
    # triggerer's); the task logs are also on this shared disk.
    alive "worker-$w" || spawn "worker-$w" env AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$port \
      airflow celery worker --celery-hostname "$w@%h" --concurrency 1 --pid "$PIDS/celery-$w.pid"
    port=$((port + 2))
  done
  say "waiting for the API server"
  for _ in $(seq 1 120); do
    curl -fsS "$URL/api/v2/monitor/health" >/dev/null 2>&1 && break
    alive api-server || { tail -30 "$LOGS/api-server.log"; die "the API server exited"; }
    sleep 2
  done
  curl -fsS "$URL/api/v2/monitor/health" >/dev/null || die "the API server did not answer; see $LOGS"
  cat <<EOF

Airflow (PostgreSQL + Redis + CeleryExecutor, workers ${WORKERS[*]}) is up:
  UI         $URL
  user       admin
  password   $(sed 's/.*"admin": *"\([^"]*\)".*/\1/' "$PROD/passwords.json")   (in $PROD/passwords.json)
  metadata   postgresql://airflow@127.0.0.1:$PG_PORT/airflow (password: POSTGRES_PASSWORD in $PROD/secrets.env)
  broker     redis://127.0.0.1:$REDIS_PORT/0
  artifacts  $TTR_DATA__ARTIFACT_ROOT   data: $TTR_DATA_ROOT
  logs       $LOGS/   (task logs: $PROD/home/logs/)
  stop       scripts/airflow_prod.sh stop     (make airflow-prod-stop)
Alerts: export AIRFLOW_CONN_TWO_TOWER_ALERTS='{"conn_type": "http", "host": "https://hooks.example/..."}'
before starting to have failures posted (see docs/operating.md, "Alerts").
EOF
}

stop() {
  # TERM to every service's process group at once; Celery workers shut down warm (a running
  # task finishes first; an idle one returns within the 30 s broker polling interval).
  local name pid pids=() deadline
  for name in "${SERVICES[@]}" redis; do
    if alive "$name"; then
      pid="$(cat "$PIDS/$name.pid")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
    rm -f "$PIDS/$name.pid"
  done
  deadline=$((SECONDS + 90))
  for entry in "${pids[@]}"; do
    name="${entry%%:*}" pid="${entry#*:}"
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name did not stop in 90 s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name"
  done
  rm -f "$PIDS"/celery-*.pid
  PG_BIN="$(bash "$REPO/scripts/services.sh" pg-bin 2>/dev/null || true)"
  if pg_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -m fast -w stop >/dev/null && say "stopped PostgreSQL"
  fi
  say "stopped (the metadata DB stays in $PGDATA_DIR; delete it and $PROD to start afresh)"
}

status() {
  for name in redis "${SERVICES[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$PIDS/$name.pid"))"; else echo "$name: stopped"; fi
  done
  PG_BIN="$(bash "$REPO/scripts/services.sh" pg-bin 2>/dev/null || true)"
  if pg_running; then echo "postgresql: running ($PGDATA_DIR)"; else echo "postgresql: stopped"; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
