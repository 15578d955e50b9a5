"""Asset events for production changes and landed partitions: their `extra`, the no-Airflow
path, and events written into a real (migrated, DAG-parsed) Airflow metadata DB, from the
library and from `two-tower promote | rollback | land`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ContractSource

from pipelines.orchestration import events
from pipelines.registry import Registry

REPO = Path(__file__).parents[3]

METRICS = {  # the shape of a run's evaluation/metrics.json (trimmed)
    "challenger": {
        "queries": np.int64(90),
        "recall@100": np.float64(0.41234567),
        "ndcg@10": 0.2,
        "ci": {"recall@100": [np.float64(0.40212), 0.42251], "ndcg@10": [0.1, 0.3]},
        "slices": {"warm_users": {"recall@100": 0.5}},
        "bootstrap": {"metric": "recall@100", "means": list(np.linspace(0.4, 0.42, 1000))},
    },
    "champion": {"recall@100": 0.405, "ci": {"recall@100": [0.39, 0.42]}},
    "popularity": {"recall@100": 0.2},
    "ann": {"k": 60, "recall@60": 0.99},
    "eval": {"primary_metric": "recall@100", "queries": 90},
}


def test_production_extra_carries_the_change_and_only_headline_metrics():
    extra = events.production_event_extra(
        action="promote", bundle_id="1e67aa0c4f2b9d31", previous="0a1b2c3d4e5f6071",
        airflow_run_id="manual__2026-11-25T10:00:00+00:00", user="op",
        decision="promote", metrics=METRICS,
    )  # fmt: skip
    assert extra == {
        "action": "promote",
        "bundle_id": "1e67aa0c4f2b9d31",
        "previous": "0a1b2c3d4e5f6071",
        "airflow_run_id": "manual__2026-11-25T10:00:00+00:00",
        "user": "op",
        "decision": "promote",
        "metrics": {
            "metric": "recall@100",
            "value": 0.41235,
            "ci": [0.40212, 0.42251],
            "champion": 0.405,
            "popularity": 0.2,
            "queries": 90,
        },  # fmt: skip
    }
    text = json.dumps(extra, allow_nan=False)  # plain JSON: no numpy, no NaN
    assert len(text) < 600  # no bootstrap replicates, slices or per-K tables


def test_extra_without_metrics_and_with_nonfinite_values():
    extra = events.production_event_extra(action="rollback", bundle_id="b", previous=None)
    assert extra["metrics"] is None and extra["user"] is None and extra["previous"] is None
    given = events.production_event_extra(
        action="promote", bundle_id="b", previous="a",
        metrics={"metric": "recall@100", "value": float("nan"), "table": {"x": 1}},
    )  # fmt: skip
    assert given["metrics"] == {"metric": "recall@100", "value": None}  # scalars kept, NaN dropped
    with pytest.raises(ValueError, match="action must be one of"):
        events.production_event_extra(action="deploy", bundle_id="b", previous=None)


def _bundle(registry: Registry, tmp_path: Path, payload: str, value: float) -> str:
    staging = tmp_path / f"staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / "item_ids.txt").write_text(payload)
    metrics = {"challenger": {"recall@100": value, "queries": 10},
               "eval": {"primary_metric": "recall@100"}}  # fmt: skip
    return registry.publish(staging, {"created_at": payload, "run_id": payload, "metrics": metrics})


def test_pointer_extra_of_a_promotion_and_a_rollback(tmp_path):
    registry = Registry(tmp_path / "artifacts")
    a, b = _bundle(registry, tmp_path, "a", 0.3), _bundle(registry, tmp_path, "b", 0.4)
    registry.promote(a, reason="first")
    pointer = registry.promote(b, reason="run r2: promote", airflow_run_id="scheduled__x")
    extra = events.pointer_event_extra(registry, pointer)
    assert extra["action"] == "promote" and (extra["bundle_id"], extra["previous"]) == (b, a)
    assert extra["airflow_run_id"] == "scheduled__x" and extra["decision"] == "run r2: promote"
    assert extra["metrics"] == {"metric": "recall@100", "value": 0.4, "queries": 10}

    pointer = registry.rollback(reason="tail items worse", actor="op")
    extra = events.pointer_event_extra(registry, pointer)
    # `previous` is what production served until now (the pointer's `from`).
    assert (extra["action"], extra["bundle_id"], extra["previous"]) == ("rollback", a, b)
    assert extra["user"] == "op" and extra["decision"] == "tail items worse"
    assert extra["metrics"]["value"] == 0.3  # the restored bundle's own evaluation


def _clean_env(**extra) -> dict:
    """This environment without any Airflow setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{env['PATH']}", **extra)
    return env


EMIT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="LOG %(message)s")
from pipelines.orchestration import events
kind, extra = sys.argv[1], json.loads(sys.argv[2])
if kind == "production":
    ok = events.emit_production_event(extra)
else:
    ok = events.emit_landing_event(extra.pop("partition"), extra.pop("source"), extra)
print(json.dumps({"ok": ok, "airflow_imported": "airflow" in sys.modules}))
"""


def emit(kind: str, extra: dict, env: dict) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", EMIT, kind, json.dumps(extra)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Once Airflow is loaded it owns logging and writes it to stdout.
    return json.loads(done.stdout.splitlines()[-1]), done.stdout + done.stderr


def test_without_airflow_nothing_is_imported_or_created(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result, log = emit("production", {"action": "promote"}, _clean_env(HOME=str(home)))
    assert result == {"ok": False, "airflow_imported": False}
    assert "no Airflow configured (set AIRFLOW_HOME" in log
    assert list(home.iterdir()) == []  # no ~/airflow, no airflow.db


def test_an_airflow_home_without_a_metadata_db_is_not_created(tmp_path):
    home = tmp_path / "airflow"
    result, log = emit(
        "landing", {"partition": "2026-01-10", "source": "world"},
        _clean_env(HOME=str(tmp_path), AIRFLOW_HOME=str(home)),
    )  # fmt: skip
    assert result["ok"] is False
    assert f"no Airflow metadata DB at {home}/airflow.db" in log
    assert not (home / "airflow.db").exists()


def test_a_database_that_refuses_is_logged_not_raised(tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    (home / "airflow.db").touch()  # a DB file, but never migrated
    env = _clean_env(HOME=str(tmp_path), AIRFLOW_HOME=str(home))
    result, log = emit("production", {"action": "promote"}, env)
    assert result["ok"] is False
    assert "could not record the production_bundle asset event: OperationalError" in log
    assert "Traceback" not in log  # a warning, not a crash


# ---- a real Airflow metadata DB: migrated, the DAG parsed (its assets registered) ----


@pytest.fixture(scope="module")
def airflow_db(tmp_path_factory):
    """(AIRFLOW_HOME, env) of a migrated metadata DB that knows the DAG and its assets."""
    root = tmp_path_factory.mktemp("airflow-events")
    (root / "data").mkdir()
    env = _clean_env(
        HOME=str(root), AIRFLOW_HOME=str(root / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
        TTR_DATA_ROOT=str(root / "data"), TTR_DATA__ARTIFACT_ROOT=str(root / "artifacts"),
    )  # fmt: skip
    for command in (["airflow", "db", "migrate"], ["airflow", "dags", "reserialize"]):
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    return root / "airflow", env


def recorded(home: Path, asset: str) -> list[dict]:
    """The `extra` of every event of `asset` in the metadata DB, oldest first."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.name = ? ORDER BY e.id",
            (asset,),
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


@pytest.mark.slow
def test_production_event_is_recorded_with_its_extra(airflow_db):
    home, env = airflow_db
    extra = events.production_event_extra(
        action="promote", bundle_id="1e67aa0c4f2b9d31", previous=None, user="op",
        airflow_run_id="manual__2026-11-25T10:00:00+00:00", decision="promote", metrics=METRICS,
    )  # fmt: skip
    before = recorded(home, events.PRODUCTION_ASSET)
    result, log = emit("production", extra, env)
    assert result["ok"] is True, log
    assert recorded(home, events.PRODUCTION_ASSET) == [*before, extra]


@pytest.mark.slow
def test_landing_event_queues_the_unpaused_dag(airflow_db):
    home, env = airflow_db
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("UPDATE dag SET is_paused = 0 WHERE dag_id = 'two_tower_retrain'")
        db.execute("DELETE FROM asset_dag_run_queue")
    result, log = emit("landing", {"partition": "2026-01-10", "source": "world", "rows": 60}, env)
    assert result["ok"] is True, log
    assert recorded(home, events.LANDING_ASSET)[-1] == {
        "partition": "2026-01-10", "source": "world", "rows": 60,
    }  # fmt: skip
    with sqlite3.connect(home / "airflow.db") as db:
        queued = db.execute(
            "SELECT q.target_dag_id FROM asset_dag_run_queue q JOIN asset a ON a.id = q.asset_id "
            "WHERE a.name = ?",
            (events.LANDING_ASSET,),
        ).fetchall()
        db.execute("UPDATE dag SET is_paused = 1 WHERE dag_id = 'two_tower_retrain'")
    assert queued == [("two_tower_retrain",)]  # the scheduler starts a run from this row


@pytest.mark.slow
def test_an_unknown_asset_is_logged_not_raised(airflow_db, tmp_path):
    home, env = airflow_db
    copy = tmp_path / "airflow"
    shutil.copytree(home, copy)
    with sqlite3.connect(copy / "airflow.db") as db:
        db.execute("DELETE FROM asset WHERE name = ?", (events.PRODUCTION_ASSET,))
    conn = f"sqlite:///{copy}/airflow.db"  # (the copied airflow.cfg names the original DB)
    result, log = emit("production", {"action": "promote"},
                       {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conn})  # fmt: skip
    assert result["ok"] is False
    assert "Airflow does not know the asset (is the two_tower_retrain DAG deployed" in log


def cli(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_promote_and_rollback_emit_production_events(airflow_db, tmp_path):
    home, env = airflow_db
    artifacts = tmp_path / "artifacts"
    registry = Registry(artifacts)
    a, b = _bundle(registry, tmp_path, "a", 0.3), _bundle(registry, tmp_path, "b", 0.4)
    env = {**env, "LOGNAME": "alice"}
    before = len(recorded(home, events.PRODUCTION_ASSET))
    for args in (["promote", "--bundle", a], ["promote", "--bundle", b, "--reason", "hotfix"],
                 ["rollback", "--reason", "b is worse"]):  # fmt: skip
        done = cli(*args, "--artifact-root", artifacts, env=env)
        assert done.returncode == 0, done.stderr
        assert "recorded in Airflow: production_bundle asset event" in done.stdout
    again = cli("promote", "--bundle", a, "--artifact-root", artifacts, env=env)
    assert "nothing changed" in again.stdout  # no change, no event
    quiet = cli("promote", "--bundle", b, "--no-airflow-event", "--artifact-root", artifacts,
                env=env)  # fmt: skip
    assert quiet.returncode == 0 and "recorded in Airflow" not in quiet.stdout
    got = recorded(home, events.PRODUCTION_ASSET)[before:]
    assert [
        (e["action"], e["bundle_id"], e["previous"], e["user"], e["decision"]) for e in got
    ] == [
        ("promote", a, None, "os:alice", "manual promote"),
        ("promote", b, a, "os:alice", "hotfix"),
        ("rollback", a, b, "os:alice", "b is worse"),
    ]
    assert got[1]["metrics"] == {"metric": "recall@100", "value": 0.4, "queries": 10}
    who = [(e["event"], e["user"]) for e in registry.history()]
    assert who == [("promote", "os:alice")] * 2 + [
        ("rollback", "os:alice"),
        ("promote", "os:alice"),
    ]


@pytest.mark.slow
def test_cli_land_emits_the_landing_event_with_the_partition(airflow_db, tmp_path):
    home, env = airflow_db
    env = {**env, "LOGNAME": "alice"}
    data_root = Path(env["TTR_DATA_ROOT"])
    world = ContractSource(data_root / "world", days=3).write()
    incoming = ContractSource(tmp_path / "incoming", days=4)
    incoming.write()
    day = incoming.last_day
    done = cli("land", incoming.partition_file(day), "--source", "world", env=env)
    assert done.returncode == 0, done.stderr
    assert f"landed: dt={day}, 60 rows, 1 file(s) -> {world}/interactions/dt={day}" in done.stdout
    assert "recorded in Airflow: two_tower_landing asset event" in done.stdout
    assert recorded(home, events.LANDING_ASSET)[-1] == {
        "partition": day, "source": "world", "rows": 60,
        "path": f"{world}/interactions/dt={day}", "user": "os:alice",
    }  # fmt: skip
