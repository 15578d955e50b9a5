"""Helpers of the DAG tests: an isolated Airflow environment and a local webhook."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """API server + scheduler + DAG processor (LocalExecutor, SQLite) on a free loopback port,
    with users admin/op/viewer (SimpleAuthManager roles of the same names) and a webhook."""

    DAG_ID = "two_tower_retrain"

    def __init__(self, root: Path, world: Path, **env):
        import secrets
        import shutil
        import subprocess

        self.root = root
        self.hook = Hook()
        shutil.copytree(world, root / "data" / "world")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        (root / "passwords.json").write_text(json.dumps(self.passwords))
        self.artifacts = root / "artifacts"
        self.env = airflow_env(
            root / "airflow",
            TTR_DATA_ROOT=str(root / "data"),
            TTR_DATA__ARTIFACT_ROOT=str(self.artifacts),
            # A run the scheduler starts on its own trains with the deployment config: short.
            TTR_TRAIN__EPOCHS="2",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in USERS.items()),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base}/execution/",
            AIRFLOW__API__BASE_URL=self.base,
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            AIRFLOW_CONN_TWO_TOWER_ALERTS=json.dumps({"conn_type": "http", "host": self.hook.url}),
            **env,
        )
        subprocess.run(
            ["airflow", "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=300
        )
        self.logs = root / "logs"
        self.logs.mkdir()
        self.procs = []
        for name, cmd in (
            ("api-server", ["airflow", "api-server", "--port", str(self.port), "--host",
                            "127.0.0.1"]),
            ("scheduler", ["airflow", "scheduler"]),
            ("dag-processor", ["airflow", "dag-processor"]),
        ):  # fmt: skip
            out = (self.logs / f"{name}.log").open("w")
            self.procs.append(
                subprocess.Popen(
                    cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        wait_for("the API server", lambda: call("GET", f"{self.base}/api/v2/monitor/health"), 180)

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
        import os
        import signal
        import subprocess

        for proc in self.procs:  # each service and the workers it spawned
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
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


def run_notes(home: Path) -> list[tuple[str, str, str | None]]:
    """(run id, state, note) of every two_tower_retrain run in the SQLite metadata DB under
    `home`, oldest first (what the UI shows as each run's note)."""
    import sqlite3

    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute(
            "SELECT r.run_id, r.state, n.content FROM dag_run r "
            "LEFT JOIN dag_run_note n ON n.dag_run_id = r.id "
            "WHERE r.dag_id = 'two_tower_retrain' ORDER BY r.id"
        ).fetchall()


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
