#!/usr/bin/env bash
# /entrypoint of the two-tower image: the calling conventions of the official Airflow image, so
# docker/compose.yaml and the official Helm chart (which runs its probes and jobs through it)
# work unchanged. Installed as /entrypoint; `dumb-init --` in front of it is the image ENTRYPOINT.
#
#   /entrypoint bash -c "exec airflow scheduler"   # chart args: bash / python run as given
#   /entrypoint airflow jobs check --local ...     # an executable on PATH runs as given
#   /entrypoint scheduler                          # anything else is an airflow subcommand
#   /entrypoint                                    # no arguments: two-tower --help
#
# Environment (the official image's names and meanings):
#   CONNECTION_CHECK_MAX_COUNT   >0: wait for the metadata DB (`airflow db check`) up to that many
#                                tries before an airflow command (default 0 here: compose gates on
#                                the postgres healthcheck, the chart on its wait-for-migrations
#                                init container; the chart's probes set 0 explicitly)
#   CONNECTION_CHECK_SLEEP_TIME  seconds between tries (default 3)
#   _AIRFLOW_DB_MIGRATE=true     run `airflow db migrate` before the command
set -euo pipefail

wait_for_metadata_db() {
  local max="${CONNECTION_CHECK_MAX_COUNT:-0}" sleep_s="${CONNECTION_CHECK_SLEEP_TIME:-3}" try=1
  [ "$max" -gt 0 ] 2>/dev/null || return 0
  until airflow db check >/dev/null 2>&1; do
    if [ "$try" -ge "$max" ]; then
      echo "entrypoint: the metadata DB is not reachable after $max tries (airflow db check):" >&2
      airflow db check >&2 || true
      exit 1
    fi
    echo "entrypoint: waiting for the metadata DB ($try/$max)" >&2
    try=$((try + 1))
    sleep "$sleep_s"
  done
}

if [ $# -eq 0 ]; then
  set -- two-tower --help
fi

case "$1" in
  bash) shift; set -- /bin/bash "$@" ;;
  python) shift; set -- python "$@" ;;
  -*) set -- airflow "$@" ;;  # `/entrypoint --help` = airflow --help, as in the official image
  *) command -v -- "$1" >/dev/null 2>&1 || set -- airflow "$@" ;;
esac

# Only Airflow commands need the DB; probes pass CONNECTION_CHECK_MAX_COUNT=0 to stay fast.
if [ "$1" = airflow ] || [[ "$*" == *"exec airflow "* ]]; then
  wait_for_metadata_db
  if [ "${_AIRFLOW_DB_MIGRATE:-false}" = true ]; then
    airflow db migrate
  fi
fi

exec "$@"
