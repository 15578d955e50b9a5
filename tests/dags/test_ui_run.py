"""A real UI run: API server + scheduler + DAG processor, a run triggered through the
authenticated REST API v2 with custom Params, then the DAG's page in headless Chromium."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from airflow_support import REPO, airflow_env

from pipelines import orchestration as orch

pytestmark = pytest.mark.slow

DAG_ID = "two_tower_retrain"
SCREENSHOT = REPO / ".airflow" / "ui-test-dag-run.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method: str, url: str, token: str | None = None, body: dict | None = None) -> dict:
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


@pytest.fixture(scope="module")
def airflow_services(small_world, tmp_path_factory):
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("Debian's chromium and chromium-driver are required (make test installs them)")
    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(small_world, root / "data" / "world")
    port = free_port()
    password = secrets.token_urlsafe(12)
    (root / "passwords.json").write_text(json.dumps({"admin": password}))
    env = airflow_env(
        root / "airflow",
        TTR_DATA_ROOT=str(root / "data"),
        TTR_DATA__ARTIFACT_ROOT=str(root / "artifacts"),
        # The run that unpausing schedules trains with the deployment config: keep it short.
        TTR_TRAIN__EPOCHS="2",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
    )
    subprocess.run(
        ["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    logs = root / "logs"
    logs.mkdir()
    procs = []
    for name, cmd in (
        ("api-server", ["airflow", "api-server", "--port", str(port), "--host", "127.0.0.1"]),
        ("scheduler", ["airflow", "scheduler"]),
        ("dag-processor", ["airflow", "dag-processor"]),
    ):
        out = (logs / f"{name}.log").open("w")
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the API server", lambda: call("GET", f"{base}/api/v2/monitor/health"), 180)
        yield base, password, root
    finally:
        for proc in procs:  # each service and the workers it spawned
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_trigger_through_rest_api_then_see_the_run_in_the_ui(airflow_services):
    base, password, root = airflow_services
    token = call("POST", f"{base}/auth/token", body={"username": "admin", "password": password})[
        "access_token"
    ]
    with pytest.raises(urllib.error.HTTPError) as denied:
        call("GET", f"{base}/api/v2/dags/{DAG_ID}")  # no token: refused
    assert denied.value.code in (401, 403)
    wait_for(
        "the DAG to be parsed", lambda: call("GET", f"{base}/api/v2/dags/{DAG_ID}", token), 240
    )
    call("PATCH", f"{base}/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    conf = {"source": "world", "epochs": 1, "embedding_dim": 32, "min_lift_over_popularity": 0.1}
    run = call("POST", f"{base}/api/v2/dags/{DAG_ID}/dagRuns", token,
               {"logical_date": None, "conf": conf})  # fmt: skip
    run_id = run["dag_run_id"]
    assert run["conf"] == conf

    def finished():
        state = call("GET", f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", token)["state"]
        return state if state in ("success", "failed") else None

    state = wait_for("the DAG run", finished, 900, every=5)
    tasks = call("GET", f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", token)
    states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
    assert state == "success", (states, sorted((root / "logs").glob("*.log")))
    assert states["promote"] == "success" and states["publish"] == "success"
    bundle = json.loads((root / "artifacts" / "registry" / "production.json").read_text())
    manifest = json.loads(
        (
            root / "artifacts" / "registry" / "bundles" / bundle["bundle_id"] / "manifest.json"
        ).read_text()
    )
    assert manifest["config"]["train"]["embedding_dim"] == 32  # the Params reached the run

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1500,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"{base}/")
        driver.add_cookie({"name": "_token", "value": token, "path": "/"})
        driver.get(f"{base}/dags/{DAG_ID}/runs/{run_id}")
        WebDriverWait(driver, 60).until(
            lambda d: run_id in d.find_element(By.TAG_NAME, "body").text
        )
        WebDriverWait(driver, 60).until(
            lambda d: "success" in d.find_element(By.TAG_NAME, "body").text.lower()
        )
        time.sleep(2)  # let the graph finish drawing
        SCREENSHOT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        body = driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
    assert DAG_ID in body and run_id in body
    assert Path(SCREENSHOT).stat().st_size > 10_000


def test_backfill_of_a_past_range_runs_once_per_interval(airflow_services):
    base, password, root = airflow_services
    token = call("POST", f"{base}/auth/token", body={"username": "admin", "password": password})[
        "access_token"
    ]
    wait_for(
        "the DAG to be parsed", lambda: call("GET", f"{base}/api/v2/dags/{DAG_ID}", token), 240
    )
    call("PATCH", f"{base}/api/v2/dags/{DAG_ID}", token, {"is_paused": False})
    backfill = call("POST", f"{base}/api/v2/backfills", token, {
        "dag_id": DAG_ID,
        "from_date": "2026-01-10T00:00:00Z",
        "to_date": "2026-01-11T23:00:00Z",
        "max_active_runs": 1,
        "reprocess_behavior": "none",
        "dag_run_conf": {"source": "world", "epochs": 1, "dry_run": True},
    })  # fmt: skip

    def runs_done():
        runs = call("GET", f"{base}/api/v2/dags/{DAG_ID}/dagRuns", token)["dag_runs"]
        ours = [r for r in runs if r["run_type"] == "backfill"]
        return ours if ours and all(r["state"] in ("success", "failed") for r in ours) else None

    assert backfill["dag_id"] == DAG_ID
    runs = wait_for("the backfill runs", runs_done, 1200, every=5)
    assert len(runs) == 2, [(r["dag_run_id"], r["logical_date"]) for r in runs]
    assert {r["state"] for r in runs} == {"success"}
    assert sorted(r["logical_date"][:10] for r in runs) == ["2026-01-10", "2026-01-11"]
    # Point in time: each run saw only the data before its logical date (the world runs on to
    # 2026-01-15), so the two runs trained on different windows.
    for r in runs:
        run_dir = root / "artifacts" / "runs" / orch.safe_run_id(r["dag_run_id"])
        manifest = json.loads((run_dir / "features" / "manifest.json").read_text())
        assert manifest["window"]["window_end"][:10] == r["logical_date"][:10]
    # Dry runs: every step but promotion, so production is untouched by the backfill.
    for r in runs:
        ti = call(
            "GET",
            f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{r['dag_run_id']}/taskInstances/promote",
            token,
        )
        assert ti["state"] == "skipped"
