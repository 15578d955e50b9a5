"""Helpers of the DAG tests: an isolated Airflow environment, a local webhook and the
session's production-shaped Airflow deployment (PostgreSQL, Redis, Celery: `AirflowStack`)."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from ports import free_port

REPO = Path(__file__).parents[2]
DAGS = REPO / "dags"


def airflow_env(home: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=str(REPO),
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        **extra,
    )
    return env


def break_a_partition(source: Path) -> Path:
    """Null the user_id of three rows in the source's last partition (a raw data check fails on
    it); returns that partition's file."""
    import pandas as pd

    part = sorted((source / "interactions").rglob("*.parquet"))[-1]
    frame = pd.read_parquet(part)
    frame.loc[frame.index[:3], "user_id"] = None
    frame.to_parquet(part)
    return part


class Hook:
    """A webhook on 127.0.0.1 that records the JSON bodies it receives."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


# ---- a real Airflow deployment for the UI and REST tests (one per session) ----

USERS = {"admin": "admin", "op": "op", "viewer": "viewer"}  # user -> SimpleAuthManager role


def call(method: str, url: str, token: str | None = None, body: dict | None = None) -> dict:
    """A JSON REST call; HTTP errors raise `urllib.error.HTTPError`."""
    import urllib.request

    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def wait_for(what: str, check, timeout: float, every: float = 2.0):
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


class AirflowStack:
    """Airflow as it is deployed, on this one machine: PostgreSQL as the metadata DB, Redis as
    the Celery broker (results in PostgreSQL), CeleryExecutor with two workers (`w1`, `w2`,
    concurrency 1 each, each its own log), scheduler, DAG processor, triggerer and API server
    on a free loopback port; users admin/op/viewer (SimpleAuthManager roles of the same names)
    and a webhook as the alerts connection.

    The workers share the artifact root and the data root with everything else through local
    paths: workers on other hosts need those on a shared filesystem or the artifact root on an
    object store. Each worker reports its own name as the task instances' `hostname`
    (`services_support.worker_hostname`): on one machine both would report the same host. The
    API server reads task logs from the shared log folder (fetching a running task's log from
    a worker named `w1` fails: noted in the log's source details and the API server's log)."""

    DAG_ID = "two_tower_retrain"
    WORKERS = ("w1", "w2")

    def __init__(self, root: Path, world: Path, **env):
        from services_support import Postgres, Redis

        self.root = root
        self.procs: dict[str, object] = {}
        self.hook = Hook()
        self.postgres = self.redis = None
        try:
            self.postgres, self.redis = Postgres(), Redis()
            self._start(world, env)
        except BaseException:
            self.close()
            raise

    def _start(self, world: Path, env: dict) -> None:
        import secrets
        import shutil
        import subprocess

        root = self.root
        shutil.copytree(world, root / "data" / "world")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        (root / "passwords.json").write_text(json.dumps(self.passwords))
        self.artifacts = root / "artifacts"  # shared by every worker (see the class docstring)
        self.db_url = self.postgres.url
        self.env = airflow_env(
            root / "airflow",
            TTR_DATA_ROOT=str(root / "data"),
            TTR_DATA__ARTIFACT_ROOT=str(self.artifacts),
            # A run the scheduler starts on its own trains with the deployment config: short.
            TTR_TRAIN__EPOCHS="2",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.postgres.url,
            # Airflow 3 also opens an async engine (asyncpg); derived from the URL above when
            # unset, spelled out here as a deployment would.
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=self.postgres.async_url,
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=self.redis.url,
            AIRFLOW__CELERY__RESULT_BACKEND=f"db+{self.postgres.url}",
            AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
            # Longer than any task (acks_late: an unacknowledged task is redelivered after it).
            AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT="86400",
            # An idle worker's BRPOP waits 30 s instead of 1 s before it is sent again, so Redis
            # mostly hands the next task to the worker idle the longest rather than to whichever
            # re-polled last: the DAG's tasks (one at a time) mostly alternate between the
            # workers. The cost: the first task after the workers start can wait up to 30 s.
            AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__POLLING_INTERVAL="30",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in USERS.items()),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base}/execution/",
            AIRFLOW__API__BASE_URL=self.base,
            AIRFLOW__API__PORT=str(self.port),
            # One secret for every component, as on separate hosts (tokens, served logs).
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
            # Free ports instead of 8793/8794: other deployments may share this machine.
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW_CONN_TWO_TOWER_ALERTS=json.dumps({"conn_type": "http", "host": self.hook.url}),
            **env,
        )
        migrate = subprocess.run(
            ["airflow", "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, (migrate.stdout + migrate.stderr)[-3000:]
        self.logs = root / "logs"
        self.logs.mkdir()
        services = {
            "api-server": ["airflow", "api-server", "--port", str(self.port), "--host",
                           "127.0.0.1"],
            "scheduler": ["airflow", "scheduler"],
            "dag-processor": ["airflow", "dag-processor"],
            "triggerer": ["airflow", "triggerer"],
        }  # fmt: skip
        for name, cmd in services.items():
            self._spawn(name, cmd, self.env)
        for worker in self.WORKERS:
            self._spawn(f"worker-{worker}", self.worker_command(worker), self.worker_env(worker))
        wait_for("the API server", lambda: call("GET", f"{self.base}/api/v2/monitor/health"), 240)
        for worker in self.WORKERS:  # a worker not yet consuming would leave all tasks to one
            wait_for(f"Celery worker {worker}", lambda w=worker: self.worker_ready(w), 240)

    def worker_command(self, worker: str) -> list[str]:
        return ["airflow", "celery", "worker", "--celery-hostname", f"{worker}@%h",
                "--concurrency", "1", "--pid", str(self.logs / f"worker-{worker}.pid")]  # fmt: skip

    def worker_env(self, worker: str) -> dict:
        return {
            **self.env,
            # Airflow imports services_support (the hostname callable), which imports ports.
            "PYTHONPATH": f"{self.env['PYTHONPATH']}:{Path(__file__).parent}:"
            f"{Path(__file__).parents[1]}",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "services_support.worker_hostname",
            "TTR_WORKER_NAME": worker,
            # Each worker serves its task logs on a port of its own (both are on this host).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        import subprocess

        with (self.logs / f"{name}.log").open("w") as out:
            self.procs[name] = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self, name: str) -> str:
        """The output so far of one service (`scheduler`, `worker-w1`, ...)."""
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def worker_ready(self, worker: str) -> bool:
        proc = self.procs[f"worker-{worker}"]
        if proc.poll() is not None:
            raise AssertionError(f"worker {worker} exited: {self.log(f'worker-{worker}')[-3000:]}")
        return " ready." in self.log(f"worker-{worker}")

    def worker_tasks(self, worker: str) -> set[tuple[str, str]]:
        """(run id, task id) of every task a worker executed, read from that worker's own log."""
        import re

        found = re.findall(
            r"Executing workload in Celery: .*?log_path='dag_id=[^/]+/run_id=([^/]+)/task_id=([^/]+)/",
            self.log(f"worker-{worker}"),
        )
        return set(found)

    def run_notes(self) -> list[tuple[str, str, str | None]]:
        """`run_notes` of this stack's PostgreSQL metadata DB."""
        return run_notes(self.db_url)

    def token(self, user: str = "admin") -> str:
        body = {"username": user, "password": self.passwords[user]}
        return call("POST", f"{self.base}/auth/token", body=body)["access_token"]

    def api(self, method: str, path: str, body: dict | None = None, user: str = "admin") -> dict:
        """`method /api/v2<path>` as `user`."""
        return call(method, f"{self.base}/api/v2{path}", self.token(user), body)

    def dag_ready(self, timeout: float = 240) -> None:
        """Wait until the DAG is parsed, then unpause it."""
        wait_for("the DAG to be parsed", lambda: self.api("GET", f"/dags/{self.DAG_ID}"), timeout)
        self.api("PATCH", f"/dags/{self.DAG_ID}", {"is_paused": False})

    def trigger(self, conf: dict) -> str:
        run = self.api("POST", f"/dags/{self.DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def run(self, run_id: str) -> dict:
        return self.api("GET", f"/dags/{self.DAG_ID}/dagRuns/{run_id}")

    def task_states(self, run_id: str) -> dict[str, str]:
        tis = self.api("GET", f"/dags/{self.DAG_ID}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] for t in tis["task_instances"]}

    def wait_until(self, run_id: str, states: tuple[str, ...] = ("success", "failed"),
                   timeout: float = 900) -> str:  # fmt: skip
        """Wait for the run to reach one of `states`; returns it."""

        def reached():
            state = self.run(run_id)["state"]
            return state if state in states else None

        return wait_for(f"run {run_id} to reach {states}", reached, timeout, every=5)

    def task_log_files(self, run_id: str) -> list[Path]:
        """The task log files (JSON lines) of one run, every task and attempt."""
        return sorted(
            (self.root / "airflow" / "logs").glob(f"dag_id={self.DAG_ID}/run_id={run_id}/**/*.log")
        )

    def close(self) -> None:
        """Stop every Airflow process (each with the processes it spawned), then Redis and
        PostgreSQL."""
        import os
        import signal
        import subprocess

        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            # An idle Celery worker's warm shutdown waits for its broker poll to return (up to
            # the 30 s polling interval); at the end of a session it has nothing left to finish.
            try:
                proc.wait(timeout=5 if name.startswith("worker-") else 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for service in (self.redis, self.postgres):
            if service is not None:
                service.stop()
        self.hook.close()


def chromium(token: str, base: str):
    """A headless Chromium (selenium) logged in to the Airflow UI at `base` with `token`."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1500,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.get(f"{base}/")
    driver.add_cookie({"name": "_token", "value": token, "path": "/"})
    return driver


def run_notes(db: Path | str) -> list[tuple[str, str, str | None]]:
    """(run id, state, note) of every two_tower_retrain run, oldest first (what the UI shows as
    each run's note). `db` is a SQLAlchemy URL (the stack's PostgreSQL: `AirflowStack.run_notes`)
    or an Airflow home holding a SQLite `airflow.db` (`airflow dags test` deployments)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = db if isinstance(db, str) else f"sqlite:///{Path(db) / 'airflow.db'}"
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT r.run_id, r.state, n.content FROM dag_run r "
                "LEFT JOIN dag_run_note n ON n.dag_run_id = r.id "
                "WHERE r.dag_id = 'two_tower_retrain' ORDER BY r.id"
            )).all()  # fmt: skip
    finally:
        engine.dispose()
    return [tuple(row) for row in rows]


def error_lines(files: list[Path]) -> list[str]:
    """`task attempt: line` of every ERROR/CRITICAL record in the task log files (JSON lines,
    each with a "level"), which must include those of the tasks running GX, Beam and TF."""
    tasks = {f.parent.name.removeprefix("task_id=") for f in files}
    assert tasks >= {"validate_raw", "features", "train", "build_index", "evaluate"}, files
    bad = []
    for f in files:
        for line in f.read_text().splitlines():
            if json.loads(line)["level"] in ("error", "critical"):
                bad.append(f"{f.parent.name.removeprefix('task_id=')} {f.stem}: {line[:400]}")
    return bad
