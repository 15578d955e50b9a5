"""Run notes written by the listener plugin, read back from Airflow: in `airflow dags test` (the
metadata DB) a promoting run and a data-check failure each state their outcome; under the real
scheduler (REST API) a data-check failure does."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from airflow_support import airflow_env

from pipelines.orchestration import safe_run_id
from pipelines.registry import Registry

pytestmark = pytest.mark.slow


def _bad_copy(world: Path, out: Path) -> str:
    """Copy `world` to `out` with 3 null user ids in its last partition; returns the partition
    (`dt=…`)."""
    shutil.copytree(world, out)
    part = sorted((out / "interactions").rglob("*.parquet"))[-1]
    frame = pd.read_parquet(part)
    frame.loc[frame.index[:3], "user_id"] = None
    frame.to_parquet(part)
    return part.parent.name


@pytest.fixture(scope="module")
def deployment(small_world, tmp_path_factory):
    """An isolated Airflow home and data root with the small world and a bad copy of it;
    returns (root, env, bad partition name)."""
    root = tmp_path_factory.mktemp("notes")
    data = root / "data"
    shutil.copytree(small_world, data / "good")
    bad_partition = _bad_copy(small_world, data / "bad")
    env = airflow_env(
        root / "airflow",
        TTR_DATA_ROOT=str(data),
        TTR_DATA__ARTIFACT_ROOT=str(root / "artifacts"),
    )
    migrate = subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    return root, env, bad_partition


def _dags_test(env, conf: dict) -> str:
    result = subprocess.run(
        ["airflow", "dags", "test", "two_tower_retrain", "--conf", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    return result.stdout + result.stderr


def _notes(home: Path) -> list[tuple[str, str, str | None]]:
    """(run id, state, note) of every two_tower_retrain run, oldest first."""
    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute(
            "SELECT r.run_id, r.state, n.content FROM dag_run r "
            "LEFT JOIN dag_run_note n ON n.dag_run_id = r.id "
            "WHERE r.dag_id = 'two_tower_retrain' ORDER BY r.id"
        ).fetchall()


def test_promoting_run_and_data_check_failure_get_notes_stating_their_outcome(deployment):
    root, env, bad_partition = deployment
    log = _dags_test(env, {"source": "good", "epochs": 1})
    [(run_id, state, note)] = _notes(root / "airflow")
    assert state == "success", log[-4000:]
    production = Registry(root / "artifacts").production()
    lines = note.splitlines()
    assert re.fullmatch(
        rf"promoted {production[:4]}… R@100 0\.\d{{3}} ± 0\.\d{{3}} vs no champion", lines[0]
    ), note
    assert f"- production: {production[:4]}… (was none)" in lines
    assert f"- source: `{root / 'data' / 'good'}`" in lines
    assert f"/two-tower/runs/{safe_run_id(run_id)}/files/evaluation/gate.md)" in lines[-1]

    log = _dags_test(env, {"source": "bad", "epochs": 1})
    [_, (_, state, note)] = _notes(root / "airflow")
    assert state == "failed", log[-4000:]
    lines = note.splitlines()
    assert lines[0] == f"data check failed: 1 rule in {bad_partition}", note
    assert any(
        line.startswith("- ✗ interactions.user_id: user_id must not be null — 3 of ")
        and line.endswith(f"rows in {bad_partition}/part-00000.parquet")
        for line in lines
    ), note
    assert "- production unchanged (the run stopped before promotion)" in lines
    assert f"- source: `{root / 'data' / 'bad'}`" in lines


def test_scheduler_notes_a_dry_run_with_its_source_and_who_started_it(airflow_stack):
    stack = airflow_stack
    stack.dag_ready()
    run_id = stack.trigger({"source": "world", "epochs": 1, "dry_run": True})
    assert stack.wait_until(run_id) == "success"
    note = stack.run(run_id)["note"]
    lines = note.splitlines()
    assert re.fullmatch(
        r"dry run: would (promote|reject) \(R@100 0\.\d{3} ± 0\.\d{3} vs (champion 0\.\d{3}|"
        r"no champion)\)",
        lines[0],
    ), note
    assert f"- source: `{stack.root / 'data' / 'world'}`" in lines
    assert "- started by a manual trigger (admin)" in lines
    link = f"[gate]({stack.base}/two-tower/runs/{safe_run_id(run_id)}/files/evaluation/gate.md)"
    assert link in lines[-1]
