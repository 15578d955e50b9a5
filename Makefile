# The team's vocabulary. `make run` and `make test` work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.setup-stamp
ARTIFACTS ?= artifacts
PRESET ?= small
SEED ?= 7

export TF_USE_LEGACY_KERAS := 1
export GX_ANALYTICS_ENABLED := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup browser services test test-fast run run-cli simulate airflow airflow-prod airflow-prod-stop lint lock bench bench-real clean

## setup: create .venv from requirements.lock (reused while the lock and pyproject are unchanged)
setup:
	@want="$$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"; \
	if [ -x $(PY) ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "setup: .venv is up to date with requirements.lock"; \
	else \
	  command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -r requirements.lock && \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	  echo "$$want" > $(STAMP) && echo "setup: .venv ready"; \
	fi

## browser: Debian's chromium + chromedriver for the UI test (installed if missing)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "browser: installing Debian's chromium and chromium-driver"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }

## services: Debian's postgresql and redis-server for the production-shaped Airflow test stack
##           (installed if missing; the tests start throwaway servers of their own on 127.0.0.1)
services:
	@scripts/services.sh install

## test: the whole suite, slow tests included (CI runs exactly this)
test: setup browser services
	$(PY) -m pytest -q -rs --durations=20 -n 2

## test-fast: skip tests marked slow
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

## run: the retrain DAG end-to-end once (`airflow dags test`) on the small synthetic preset,
##      in an isolated AIRFLOW_HOME (.airflow/); prints the gate report and the production bundle
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False TTR_DATA__ARTIFACT_ROOT=$(CURDIR)/$(ARTIFACTS) \
	TTR_DATA_ROOT=$(CURDIR)/data PYTHONPATH=$(CURDIR)
CONF ?= {}
# The keys `make airflow` generated for .airflow/, so connections it encrypted stay readable.
LOAD_SECRETS = set -a; [ ! -f $(AIRFLOW_SECRETS) ] || . ./$(AIRFLOW_SECRETS); set +a;
run: setup
	@mkdir -p .airflow data
	@$(LOAD_SECRETS) $(AIRFLOW_ENV) airflow db migrate > .airflow/migrate.log 2>&1 || { cat .airflow/migrate.log; exit 1; }
	$(LOAD_SECRETS) $(AIRFLOW_ENV) airflow dags test two_tower_retrain --conf '$(CONF)' > .airflow/dags-test.log 2>&1 \
	  || { tail -50 .airflow/dags-test.log; exit 1; }
	@run_dir=$$(ls -td $(ARTIFACTS)/runs/*/ | head -1); \
	  cat $$run_dir/evaluation/gate.md; \
	  echo "production bundle: $$($(PY) -m pipelines registry list --artifact-root $(ARTIFACTS) | grep '^\*' | awk '{print $$2}')"; \
	  echo "reports: $$run_dir""evaluation/ (report.md, recall_at_k.png); log: .airflow/dags-test.log"

## simulate: replay DAYS days (default 3) through the DAG: one partition lands per day, the DAG
##           retrains (warm start from the champion), a table + PNG show metrics and decisions
DAYS ?= 3
SIM_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow/simulation AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False TTR_DATA__ARTIFACT_ROOT=$(CURDIR)/$(ARTIFACTS)/simulation \
	TTR_DATA_ROOT=$(CURDIR)/data PYTHONPATH=$(CURDIR)
simulate: setup
	@rm -rf .airflow/simulation $(ARTIFACTS)/simulation && mkdir -p .airflow/simulation data
	@$(SIM_ENV) airflow db migrate > .airflow/simulation/migrate.log 2>&1 || { cat .airflow/simulation/migrate.log; exit 1; }
	$(SIM_ENV) $(PY) -m pipelines.simulate --days $(DAYS)

## run-cli: the same steps without Airflow (`two-tower run`)
run-cli: setup
	$(PY) -m pipelines run --preset $(PRESET) --artifact-root $(ARTIFACTS)

## airflow: the Airflow UI on http://127.0.0.1:8080 with our DAGs (standalone, SQLite), bound to
##          loopback only (AIRFLOW_BIND=0.0.0.0 to expose it); `make airflow AIRFLOW_PORT=8090`
##          moves it, and the tasks' Execution API URL and the UI's base URL follow the port
##          (without them tasks on another port cannot report back and show empty logs).
##          Runs under umask 077, so airflow.db and the admin password file are 0600; the JWT
##          secret, API secret key and Fernet key are generated once into .airflow/secrets.env
##          (0600) and reused
AIRFLOW_BIND ?= 127.0.0.1
AIRFLOW_PORT ?= 8080
# Where tasks and links reach the API server: loopback when it listens on every interface.
AIRFLOW_URL = http://$(if $(filter 0.0.0.0,$(AIRFLOW_BIND)),127.0.0.1,$(AIRFLOW_BIND)):$(AIRFLOW_PORT)
AIRFLOW_SECRETS := .airflow/secrets.env
airflow: setup
	@mkdir -p data && (umask 077; mkdir -p .airflow) && chmod -R go-rwx .airflow
	@[ -e $(AIRFLOW_SECRETS) ] || bash docker/init-secrets.sh --local $(AIRFLOW_SECRETS)
	@echo "Airflow UI: $(AIRFLOW_URL)  (user admin; password in .airflow/simple_auth_manager_passwords.json.generated)"
	umask 077; set -a; . ./$(AIRFLOW_SECRETS); set +a; \
	  $(AIRFLOW_ENV) AIRFLOW__API__HOST=$(AIRFLOW_BIND) AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	  AIRFLOW__API__BASE_URL=$(AIRFLOW_URL) \
	  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$(AIRFLOW_URL)/execution/ airflow standalone

## airflow-prod: the production shape on this machine (PostgreSQL, Redis, CeleryExecutor with two
##               workers, scheduler, dag-processor, triggerer, API server; scripts/airflow_prod.sh);
##               prints the UI URL, the credentials and how to stop it (make airflow-prod-stop)
airflow-prod: setup services
	AIRFLOW_PORT=$(AIRFLOW_PORT) AIRFLOW_BIND=$(AIRFLOW_BIND) scripts/airflow_prod.sh start

airflow-prod-stop:
	scripts/airflow_prod.sh stop

## secrets: generate docker/.env (0600) with this install's secrets for docker/compose.yaml
##          (refuses to overwrite an existing one)
.PHONY: secrets
secrets:
	bash docker/init-secrets.sh docker/.env

## lint: ruff, and the layer contract (`lint-imports`; make test runs it too)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## lock: re-resolve requirements.in into requirements.lock, then the runtime set requirements-prod.in
##       within it into requirements-prod.lock (what the image installs; needs the package index)
lock:
	rm -rf /tmp/ttr-lock-venv && $(PYTHON) -m venv /tmp/ttr-lock-venv
	/tmp/ttr-lock-venv/bin/pip install -q --upgrade pip
	/tmp/ttr-lock-venv/bin/pip install -q -r requirements.in
	/tmp/ttr-lock-venv/bin/pip freeze --all | grep -v '^pip==' | sort -f > requirements.lock
	rm -rf /tmp/ttr-lock-venv && $(PYTHON) -m venv /tmp/ttr-lock-venv
	/tmp/ttr-lock-venv/bin/pip install -q --upgrade pip
	/tmp/ttr-lock-venv/bin/pip install -q -r requirements-prod.in -c requirements.lock
	/tmp/ttr-lock-venv/bin/pip freeze --all | grep -v '^pip==' | sort -f > requirements-prod.lock

## bench: every benchmark (long: medium/large presets); figures go to bench/RESULTS.md by hand
bench: setup
	$(BIN)/pip install -q "faiss-cpu==1.15.1"
	$(PY) bench/bench_generator.py --presets medium large
	$(PY) bench/bench_features.py --preset medium
	$(PY) bench/bench_training.py --preset medium --epochs 3
	$(PY) bench/bench_warm_start.py --preset small --epochs 4
	$(PY) bench/bench_index.py --items 1000000

## bench-real: the real-data bench on MovieLens dumps you fetched yourself (never committed):
##             DATA=/path/to/dir holding e.g. ml-100k/, ml-latest-small-2016/, ml-latest-small-2018/
DATA ?= $(HOME)/movielens
bench-real: setup
	$(PY) bench/bench_real.py --data $(DATA) --baseline-cache .bench-cache --out bench/real.json

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
