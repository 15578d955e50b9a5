"""`airflow dags test` of the real DAG: a good run promotes; a bad partition alerts once and
stops; the next good run resolves the incident. Each run's note (the listener plugin) states
its outcome."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from airflow_support import Hook, airflow_env, break_a_partition, run_notes, wait_for

from pipelines.orchestration import safe_run_id
from pipelines.registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(small_world, tmp_path_factory):
    """An isolated Airflow home + data root (good and bad copies of the small world)."""
    root = tmp_path_factory.mktemp("deployment")
    data = root / "data"
    shutil.copytree(small_world, data / "good")
    shutil.copytree(small_world, data / "bad")
    break_a_partition(data / "bad")
    hook = Hook()
    env = airflow_env(
        root / "airflow",
        TTR_DATA_ROOT=str(data),
        TTR_DATA__ARTIFACT_ROOT=str(root / "artifacts"),
        AIRFLOW_CONN_TWO_TOWER_ALERTS=json.dumps({"conn_type": "http", "host": hook.url}),
        TTR_ALERT_QUIET_MINUTES="360",
    )
    migrate = subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    yield root, env, hook
    hook.close()


def dags_test(env, conf: dict):
    return subprocess.run(
        ["airflow", "dags", "test", "two_tower_retrain", "--conf", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


def test_good_run_promotes_then_bad_partition_alerts_once_and_recovery_resolves(deployment):
    """One alert per incident: a failed data check posts one alert (not also a task-failure
    alert), an identical failure inside the quiet period posts none, the next green run posts
    one "resolved"; production is untouched by the bad runs."""
    root, env, hook = deployment
    good = dags_test(env, {"source": "good", "epochs": 1})
    assert good.returncode == 0, (good.stdout + good.stderr)[-4000:]
    assert (
        "DagRun Finished" in good.stdout + good.stderr
        and "state=success" in good.stdout + good.stderr
    )
    assert hook.received == []  # a green run with nothing open alerts nobody
    registry = Registry(root / "artifacts")
    production = registry.production()
    assert production is not None and registry.verify(production)
    pointer = (root / "artifacts" / "registry" / "production.json").read_bytes()
    content = registry.manifest(production)["content_hash"]
    [summary] = list((root / "artifacts" / "runs").glob("*/summary.json"))
    assert json.loads(summary.read_text())["production_bundle"] == production
    usage = {p.stem: json.loads(p.read_text()) for p in summary.parent.glob("usage/*.json")}
    assert {"validate_raw", "features", "train", "build_index", "evaluate", "promote"} <= set(
        usage
    ), sorted(usage)
    assert all(u["seconds"] >= 0 and u["peak_rss_gib"] > 0.1 for u in usage.values()), usage
    assert usage["train"]["seconds"] > usage["promote"]["seconds"], usage
    [(run_id, state, note)] = run_notes(root / "airflow")
    lines = note.splitlines()
    assert re.fullmatch(
        rf"promoted {production[:4]}… R@100 0\.\d{{3}} ± 0\.\d{{3}} vs no champion", lines[0]
    ), note
    assert f"- production: {production[:4]}… (was none)" in lines
    assert f"- source: `{root / 'data' / 'good'}`" in lines
    assert f"/two-tower/runs/{safe_run_id(run_id)}/files/evaluation/gate.md)" in lines[-1]

    bad = dags_test(env, {"source": "bad", "epochs": 1})
    log = bad.stdout + bad.stderr
    assert "validate_raw" in log and "state=failed" in log
    [alert] = hook.received  # the data check's alert; the task-failure alert is not repeated
    assert alert["kind"] == "data_check_failure", hook.received
    assert alert["severity"] == "high" and "raw data checks FAILED" in alert["text"]
    assert any("user_id must not be null" in f for f in alert["failed_expectations"])
    assert alert["report"].endswith(".html")
    run_dir = next(p.name for p in (root / "artifacts" / "runs").iterdir()
                   if p.name != summary.parent.name)  # fmt: skip
    docs = alert["links"]["data docs"]
    assert docs.endswith(f"/two-tower/runs/{run_dir}/files/raw_report/index.html"), docs
    assert f"<{docs}|data docs>" in alert["attachments"][0]["text"]
    assert (root / "artifacts" / "runs" / run_dir / "raw_report" / "index.html").is_file()
    [_, (_, state, note)] = run_notes(root / "airflow")
    lines = note.splitlines()
    partition = sorted((root / "data" / "bad" / "interactions").rglob("*.parquet"))[-1].parent.name
    assert state == "failed" and lines[0] == f"data check failed: 1 rule in {partition}", note
    assert any(
        line.startswith("- ✗ interactions.user_id: user_id must not be null — 3 of ")
        for line in lines
    ), note
    assert "- production unchanged (the run stopped before promotion)" in lines
    assert f"- source: `{root / 'data' / 'bad'}`" in lines

    again = dags_test(env, {"source": "bad", "epochs": 1})
    assert "state=failed" in again.stdout + again.stderr
    assert len(hook.received) == 1, hook.received[1:]  # same rules inside the quiet period
    [incident] = json.loads((root / "artifacts" / "alerts" / "incidents.json").read_text()).values()
    assert incident["kind"] == "data_check_failure" and incident["suppressed"] == 1

    assert (root / "artifacts" / "registry" / "production.json").read_bytes() == pointer
    assert registry.production() == production and registry.verify(production)
    assert registry.manifest(production)["content_hash"] == content

    # dry_run: the recovery run decides nothing, so no gate alert can join the "resolved" one
    recovered = dags_test(env, {"source": "good", "epochs": 1, "dry_run": True})
    assert recovered.returncode == 0, (recovered.stdout + recovered.stderr)[-4000:]
    assert "state=success" in recovered.stdout + recovered.stderr
    [resolved] = hook.received[1:]
    assert resolved["kind"] == "resolved" and "resolved" in resolved["text"], hook.received[1:]
    assert "raw data checks FAILED" in resolved["attachments"][0]["text"]
    assert json.loads((root / "artifacts" / "alerts" / "incidents.json").read_text()) == {}


def test_simulation_replays_days_through_the_dag(tmp_path):
    env = airflow_env(
        tmp_path / "airflow",
        TTR_DATA_ROOT=str(tmp_path / "data"),
        TTR_DATA__ARTIFACT_ROOT=str(tmp_path / "artifacts"),
    )
    migrate = subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.simulate", "--days", "2", "--epochs", "1"],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = json.loads((tmp_path / "data" / "simulation" / "simulation.json").read_text())
    assert [r["day"] for r in rows] == ["2026-01-13", "2026-01-14"]
    assert rows[0]["champion"] is None and rows[0]["decision"] == "promote"
    assert rows[1]["champion"] is not None  # day 2 is judged against day 1's bundle
    assert all(r["decision"].startswith(("promote", "reject")) for r in rows)
    assert "| 2026-01-14 |" in result.stdout
    assert (tmp_path / "data" / "simulation" / "simulation.png").read_bytes()[:4] == b"\x89PNG"


def test_in_a_deployment_the_dag_processor_posts_resolved(airflow_stack):
    """Under a real scheduler the DAG's success callback runs in the DAG processor, not in a
    task: it still reaches the alert connection and the incident book, and closes the incident
    a failed data check opened with one "resolved" alert."""
    stack = airflow_stack
    stack.dag_ready()
    bad = stack.root / "data" / "alerts_bad"
    shutil.copytree(stack.root / "data" / "world", bad)
    break_a_partition(bad)

    # The form offers the new directory once the DAG processor has parsed the file again.
    failed = wait_for(
        "the form to offer alerts_bad",
        lambda: stack.trigger({"source": "alerts_bad", "epochs": 1}),
        timeout=180,
        every=5,
    )
    assert stack.wait_until(failed) == "failed"
    mine = [a for a in stack.hook.received if a.get("run_id") == failed]
    assert [a["kind"] for a in mine] in (["data_check_failure"], []), mine  # [] = a quiet repeat
    book = json.loads((stack.artifacts / "alerts" / "incidents.json").read_text())
    assert any(failed in i["runs"] for i in book.values() if i["kind"] == "data_check_failure")

    green = stack.trigger({"source": "world", "epochs": 1, "dry_run": True})
    assert stack.wait_until(green, timeout=1500) == "success"
    # The scheduler's listener noted the outcome, the source and who started the run.
    lines = stack.run(green)["note"].splitlines()
    assert re.fullmatch(
        r"dry run: would (promote|reject) \(R@100 0\.\d{3} ± 0\.\d{3} vs (champion 0\.\d{3}|"
        r"no champion)\)",
        lines[0],
    ), lines
    assert f"- source: `{stack.root / 'data' / 'world'}`" in lines
    assert "- started by a manual trigger (admin)" in lines
    link = f"[gate]({stack.base}/two-tower/runs/{safe_run_id(green)}/files/evaluation/gate.md)"
    assert link in lines[-1]
    resolved = wait_for(
        "the resolved alert",
        lambda: [a for a in stack.hook.received if a.get("run_id") == green],
        timeout=120,
    )
    assert [a["kind"] for a in resolved] == ["resolved"], resolved
    assert "raw data checks FAILED" in resolved[0]["attachments"][0]["text"]
    book = json.loads((stack.artifacts / "alerts" / "incidents.json").read_text())
    assert not any(i["kind"] in ("data_check_failure", "task_failure") for i in book.values())
