"""A real UI run: API server + scheduler + DAG processor, a run triggered through the
authenticated REST API v2 with custom Params, then the DAG's page in headless Chromium."""

from __future__ import annotations

import json
import time
import urllib.error
from pathlib import Path

import pytest
from airflow_support import REPO, call, chromium, wait_for

from pipelines import orchestration as orch

pytestmark = pytest.mark.slow

DAG_ID = "two_tower_retrain"
SCREENSHOT = REPO / ".airflow" / "ui-test-dag-run.png"


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


def test_trigger_through_rest_api_then_see_the_run_in_the_ui(airflow_stack):
    base, root, token = airflow_stack.base, airflow_stack.root, airflow_stack.token()
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
    assert error_lines(airflow_stack.task_log_files(run_id)) == []  # a green run cries no wolf

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium(token, base)
    try:
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


def test_backfill_of_a_past_range_runs_once_per_interval(airflow_stack):
    base, root, token = airflow_stack.base, airflow_stack.root, airflow_stack.token()
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
