#!/usr/bin/env bash
# The image's HEALTHCHECK: the check that fits the Airflow component this container runs.
#
#   /healthcheck [COMPONENT]
#
# COMPONENT is scheduler, triggerer, dag-processor, api-server, celery-worker, flower or cli;
# without it, it is read from the container's main command (/proc/1/cmdline, e.g.
# `dumb-init -- /entrypoint airflow scheduler`). Every check runs Airflow itself, so a broken
# install (a missing driver, a bad config) fails it:
#   scheduler / triggerer / dag-processor   `airflow jobs check --job-type ... --local`: this
#                                           host's job is alive in the metadata DB
#   api-server                              GET /api/v2/monitor/health (no curl in the image)
#   celery-worker                           `celery inspect ping` of this host's worker
#   flower                                  GET / on :5555
#   cli (anything else)                     Airflow, its providers' hooks and the pipeline import
# HEALTHCHECK_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

component="${1:-}"
if [ -z "$component" ]; then
  cmdline=" $(tr '\0' ' ' < "${HEALTHCHECK_PROC_CMDLINE:-/proc/1/cmdline}" 2>/dev/null || true)"
  case "$cmdline" in
    *" celery worker"*|*"celery_executor.app worker"*) component=celery-worker ;;
    *" celery flower"*) component=flower ;;
    *" scheduler"*) component=scheduler ;;
    *" triggerer"*) component=triggerer ;;
    *" dag-processor"*) component=dag-processor ;;
    *" api-server"*) component=api-server ;;
    *) component=cli ;;
  esac
fi

host="${HOSTNAME:-$(hostname)}"
case "$component" in
  scheduler) check=(airflow jobs check --job-type SchedulerJob --local) ;;
  triggerer) check=(airflow jobs check --job-type TriggererJob --local) ;;
  dag-processor) check=(airflow jobs check --job-type DagProcessorJob --local) ;;
  api-server)
    check=(python -c "import urllib.request; urllib.request.urlopen('http://localhost:${AIRFLOW_API_PORT:-8080}/api/v2/monitor/health', timeout=10)") ;;
  flower)
    check=(python -c "import urllib.request; urllib.request.urlopen('http://localhost:5555/', timeout=10)") ;;
  celery-worker)
    check=(celery --app airflow.providers.celery.executors.celery_executor.app inspect ping
           -d "celery@${host}" --timeout 10) ;;
  cli)
    check=(python -c "import airflow.configuration, airflow.providers.celery, pipelines.orchestration") ;;
  *) echo "healthcheck: unknown component $component" >&2; exit 2 ;;
esac

if [ "${HEALTHCHECK_DRY_RUN:-0}" = 1 ]; then
  echo "${check[*]}"
  exit 0
fi
# As the chart's probes do: fail fast instead of waiting for the DB, and keep the log quiet.
export CONNECTION_CHECK_MAX_COUNT=0 AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR
exec "${check[@]}"
