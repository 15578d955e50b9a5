"""The REST API v2 of a real deployment (API server + scheduler + DAG processor): refused
without a token; a backfill of a past range runs once per interval, point in time."""

from __future__ import annotations

import json
import urllib.error

import pytest
from airflow_support import call, wait_for

from pipelines import orchestration as orch

pytestmark = pytest.mark.slow

DAG_ID = "two_tower_retrain"


def test_the_rest_api_refuses_a_caller_without_a_token(airflow_stack):
    """The green run triggered through the REST API with custom Params, its clean logs and its
    page in Chromium are checked on the approved run of `test_ui_approval.py`."""
    with pytest.raises(urllib.error.HTTPError) as denied:
        call("GET", f"{airflow_stack.base}/api/v2/dags/{DAG_ID}")
    assert denied.value.code in (401, 403)


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
