#!/usr/bin/env bash
# The services of the production-shaped Airflow stack, from Debian packages:
#   scripts/services.sh install   installs postgresql and redis-server if missing (apt-get; sudo
#                                 when not root), saying what it does
#   scripts/services.sh pg-bin    prints the directory of PostgreSQL's server programs (initdb,
#                                 pg_ctl, postgres: Debian keeps them off PATH)
# Nothing is started here: the test fixture (tests/dags/services_support.py) and
# scripts/airflow_prod.sh start throwaway clusters of their own on 127.0.0.1.
set -euo pipefail

pg_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) \
             "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

install() {
  local missing=()
  pg_bin >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ ${#missing[@]} -eq 0 ]; then
    echo "services: postgresql ($(pg_bin)) and redis-server ($(command -v redis-server)) present"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "services: installing Debian's ${missing[*]}"
  $sudo apt-get update -q >/dev/null
  # policy-rc.d-free containers would start the packaged services: we only want the programs.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
  echo "services: postgresql ($(pg_bin)) and redis-server ($(command -v redis-server)) ready"
}

case "${1:-}" in
  install) install ;;
  pg-bin) pg_bin || { echo "services: PostgreSQL not found; run scripts/services.sh install" >&2; exit 1; } ;;
  *) echo "usage: $0 install | pg-bin" >&2; exit 2 ;;
esac
