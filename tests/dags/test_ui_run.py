"""The REST API v2 of the session's deployment (PostgreSQL, Redis, CeleryExecutor with two
workers, scheduler, DAG processor, triggerer, API server): refused without a token; a backfill
of a past range runs once per interval, point in time; and the production shape itself: a run
triggered with Params ran on both Celery workers, succeeded and emitted the production asset
event, and a failing run alerted the webhook.

This file runs last of tests/dags, so the acceptance test reuses the runs the other tests made
(full DAG runs cost minutes each) and makes its own only when run without them."""

from __future__ import annotations

import json
import shutil
import urllib.error

import pytest
from airflow_support import break_a_partition, call, wait_for

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


# -- the production shape: Celery workers, the asset event, the failure alert --------------

GREEN_CONF = {"source": "world", "epochs": 1, "embedding_dim": 32, "min_lift_over_popularity": 0.1}


def runs(stack) -> list[dict]:
    return stack.api("GET", f"/dags/{DAG_ID}/dagRuns?limit=100&order_by=-run_after")["dag_runs"]


def promoted_rest_run(stack) -> str:
    """A successful run triggered through the REST API with Params whose `promote` ran: the
    approved run of test_ui_approval.py in a full session, else one of our own."""
    for run in runs(stack):
        if (run["state"], run["triggered_by"]) == ("success", "rest_api") and run["conf"]:
            if stack.task_states(run["dag_run_id"]).get("promote") == "success":
                return run["dag_run_id"]
    run_id = stack.trigger(GREEN_CONF)
    assert stack.wait_until(run_id, timeout=1500) == "success", stack.task_states(run_id)
    return run_id


def alerted_failed_run(stack) -> tuple[str, list[dict]]:
    """A failed run and the alerts the webhook received for it: the failed data check of
    test_dag_run.py in a full session, else one of our own (a copy of the world with nulls)."""
    for run in runs(stack):
        posted = [a for a in stack.hook.received if a.get("run_id") == run["dag_run_id"]]
        if run["state"] == "failed" and posted:
            return run["dag_run_id"], posted
    bad = stack.root / "data" / "celery_bad"
    shutil.copytree(stack.root / "data" / "world", bad)
    break_a_partition(bad)
    run_id = wait_for(  # the form offers the directory once the DAG file is parsed again
        "the form to offer celery_bad",
        lambda: stack.trigger({"source": "celery_bad", "epochs": 1}),
        timeout=180,
        every=5,
    )
    assert stack.wait_until(run_id) == "failed", stack.task_states(run_id)
    posted = wait_for(
        f"the alert of {run_id}",
        lambda: [a for a in stack.hook.received if a.get("run_id") == run_id],
        timeout=120,
    )
    return run_id, posted


def test_a_rest_run_with_params_spreads_over_both_celery_workers_and_emits_the_event(
    airflow_stack,
):
    """Each task instance names the worker that ran it (`hostname`, from each worker's
    `hostname_callable`), and that worker's own log, not the other's, shows it executing the
    task: so both workers really ran tasks of the one run."""
    stack = airflow_stack
    stack.dag_ready()
    run_id = promoted_rest_run(stack)
    run = stack.run(run_id)
    assert run["state"] == "success" and run["triggered_by"] == "rest_api" and run["conf"]
    tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    ran = {ti["task_id"]: ti["hostname"] for ti in tis if ti["hostname"]}  # executed ones
    assert set(ran.values()) == set(stack.WORKERS), ran  # both workers, nobody else
    logged = {worker: stack.worker_tasks(worker) for worker in stack.WORKERS}
    assert all((run_id, task) in logged[host] for task, host in ran.items()), (ran, logged)

    [asset] = stack.api("GET", "/assets?name_pattern=production_bundle")["assets"]
    events = stack.api("GET", f"/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    [event] = [e for e in events if e["source_run_id"] == run_id]
    assert (event["source_dag_id"], event["source_task_id"]) == (DAG_ID, "promote")
    assert event["extra"]["action"] == "promote" and event["extra"]["airflow_run_id"] == run_id
    promoted = stack.api(
        "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/promote/xcomEntries/return_value"
    )["value"]
    assert event["extra"]["bundle_id"] == promoted["bundle_id"]


def test_a_failing_run_on_the_celery_stack_alerts_the_webhook(airflow_stack):
    stack = airflow_stack
    stack.dag_ready()
    run_id, posted = alerted_failed_run(stack)
    assert stack.run(run_id)["state"] == "failed"
    assert {a["kind"] for a in posted} <= {"data_check_failure", "task_failure"}, posted
    assert all(a["text"] for a in posted)
    # The failed task ran on a Celery worker too.
    tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
    failed = [ti for ti in tis if ti["state"] == "failed"]
    assert failed and all(ti["hostname"] in stack.WORKERS for ti in failed), failed
