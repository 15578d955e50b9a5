"""The DAG file: parses light, has the right shape, Params refuse bad values, alerts post."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from airflow_support import DAGS, Hook
from airflow_support import airflow_env as airflow_env

from pipelines import orchestration as orch
from pipelines.config import DeploymentSettings, load_config
from pipelines.errors import ConfigError

_PARSE = """
import sys, json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])


def timer(dag):
    # When the scheduler's timetable first runs the DAG if it is unpaused now (no runs yet).
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    core = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    restriction = TimeRestriction(earliest=core.start_date, latest=None, catchup=False)
    info = core.timetable.next_dagrun_info(last_automated_data_interval=None,
                                           restriction=restriction)
    return {"summary": core.timetable.summary, "first_run_after": info.run_after.isoformat()}


dag = bag.dags.get("two_tower_retrain")
heavy = sorted(m for m in ("tensorflow", "apache_beam", "scann", "tensorflow_recommenders")
               if m in sys.modules)
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "heavy": heavy,
    "tasks": [t.task_id for t in dag.topological_sort()] if dag else None,
    "max_active_runs": dag.max_active_runs if dag else None,
    "catchup": dag.catchup if dag else None,
    "params": sorted(dag.params.keys()) if dag else None,
    "timeout": {t.task_id: t.execution_timeout and t.execution_timeout.total_seconds()
                for t in dag.tasks} if dag else None,
    "description": dag.description if dag else None,
    "timer": timer(dag) if dag else None,
    "retries": {t.task_id: t.retries for t in dag.tasks} if dag else None,
}))
"""


def parse(tmp_path, **env):
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, str(DAGS)],
        capture_output=True, text=True, timeout=300,
        env=airflow_env(tmp_path / "home", **env),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dag_parses_without_errors_or_heavy_imports(tmp_path):
    info = parse(tmp_path)
    assert info["errors"] == {}
    assert info["heavy"] == []
    assert info["tasks"] == ["validate_raw", "features", "validate_features", "train",
                             "build_index", "evaluate", "gate", "approve_promotion", "promote",
                             "publish"]  # fmt: skip
    assert info["max_active_runs"] == 1 and info["catchup"] is False
    assert set(info["params"]) == set(orch.param_specs(load_config(env={})))
    # Every task is bounded; the approval waits for a person up to promotion.approval_timeout_hours
    # (its response timeout, set when it runs) instead.
    timeouts = dict(info["timeout"])
    assert timeouts.pop("approve_promotion") is None
    assert all(seconds > 0 for seconds in timeouts.values())
    assert info["retries"]["train"] == 2 and info["retries"]["validate_raw"] == 0


def test_the_timer_is_described_and_unpausing_waits_for_the_next_grid_time(tmp_path):
    before = dt.datetime.now(dt.UTC)
    info = parse(tmp_path, TTR_SCHEDULE_HOURS="6", TTR_DATA__SOURCE=str(tmp_path / "events"))
    assert info["timer"]["summary"] == "Asset or 0 */6 * * *"
    assert "every 6 h" in info["description"] and str(tmp_path / "events") in info["description"]
    first = dt.datetime.fromisoformat(info["timer"]["first_run_after"])
    # Not a run for the period already under way: the next 6-hour mark, in the future.
    assert before < first <= before + dt.timedelta(hours=6)
    assert first.minute == 0 and first.hour % 6 == 0


def test_schedule_outside_1_to_24_hours_is_an_import_error(tmp_path):
    info = parse(tmp_path, TTR_SCHEDULE_HOURS="25")
    [error] = info["errors"].values()
    assert "TTR_SCHEDULE_HOURS='25'" in error and "1 <= x <= 24" in error


@pytest.mark.parametrize(
    ("name", "value"),
    [("epochs", 0), ("epochs", 1001), ("learning_rate", 0), ("embedding_dim", "64"),
     ("format", "parquet"), ("min_ann_recall", 1.5), ("force_promote", "yes"),
     ("as_of", "last tuesday"), ("as_of", "2026-13-01")],
)  # fmt: skip
def test_form_refuses_out_of_range_params(name, value):
    from airflow.sdk import Param
    from airflow.sdk.definitions.param import ParamValidationError

    param = Param(**orch.param_specs(load_config(env={}))[name])
    with pytest.raises(ParamValidationError):
        param.resolve(value)


def test_form_defaults_are_the_deployments_config(tmp_path, monkeypatch):
    from airflow.sdk import Param

    code = load_config(env={})
    specs = orch.param_specs(code)
    for name, (section, field) in orch.PARAM_FIELDS.items():
        assert specs[name]["default"] == getattr(getattr(code, section), field), name
        Param(**specs[name]).resolve()  # every default passes its own form rules
    yaml = tmp_path / "deploy.yaml"
    yaml.write_text("train:\n  epochs: 7\ngate:\n  max_regression: 0.05\n")
    monkeypatch.setenv("TTR_CONFIG", str(yaml))
    settings = DeploymentSettings.from_env()
    specs = orch.param_specs(settings.load_config())
    assert specs["epochs"]["default"] == 7 and specs["max_regression"]["default"] == 0.05
    # An untouched form runs the deployment's config, not a second set of defaults.
    untouched = orch.config_from_params(
        {name: spec["default"] for name, spec in specs.items()}, settings
    )
    assert untouched.train.epochs == 7 and untouched.gate.max_regression == 0.05
    assert untouched.train.embedding_dim == code.train.embedding_dim


def test_backfill_runs_see_the_data_as_of_their_logical_date(tmp_path):
    when = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    settings = DeploymentSettings(data_root=tmp_path)
    assert orch.config_from_params({}, settings).features.as_of is None
    assert orch.config_from_params({"as_of": None}, settings, as_of=when).features.as_of == when
    chosen = orch.config_from_params({"as_of": "2026-01-05T06:00:00Z"}, settings, as_of=when)
    assert chosen.features.as_of == dt.datetime(2026, 1, 5, 6, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="features.as_of"):
        orch.config_from_params({"as_of": "last tuesday"}, settings)


def test_task_refuses_bad_params_too(tmp_path):
    settings = DeploymentSettings(data_root=tmp_path / "data")
    (tmp_path / "data" / "ml").mkdir(parents=True)
    cfg = orch.config_from_params({"source": "ml", "epochs": 3, "dry_run": True}, settings)
    assert cfg.data.source == str(tmp_path / "data" / "ml")
    assert cfg.train.epochs == 3 and cfg.gate.dry_run is True
    with pytest.raises(ConfigError, match="train.epochs"):
        orch.config_from_params({"epochs": 0}, settings)
    for bad in ("../etc", "ml/../../x", "/etc/passwd", "s3://bucket/x"):
        with pytest.raises(ConfigError, match="data root|relative to the data root"):
            orch.config_from_params({"source": bad}, settings)
    with pytest.raises(ConfigError, match="unknown params: artifact_root"):
        orch.config_from_params({"artifact_root": "/tmp"}, settings)


def test_deployment_settings_come_from_the_environment_once(tmp_path):
    settings = DeploymentSettings.from_env(
        {"TTR_DATA_ROOT": str(tmp_path), "TTR_SCHEDULE_HOURS": "6", "TTR_CONFIG": ""}
    )
    assert settings == DeploymentSettings(data_root=tmp_path, schedule_hours=6)
    assert DeploymentSettings.from_env({}).data_root.is_absolute()
    with pytest.raises(ConfigError, match="TTR_SCHEDULE_HOURS='x': .*allowed: 1 <= x <= 24"):
        DeploymentSettings.from_env({"TTR_SCHEDULE_HOURS": "x"})


def test_safe_run_id():
    assert (
        orch.safe_run_id("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    )
    assert orch.safe_run_id("../../x") == "_.._x"


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def test_gate_alert_posts_the_metric_diff(hook):
    decision = {
        "decision": "reject (failed: no_regression)", "primary_metric": "recall@100", "promote": False,
        "rules": [{"name": "no_regression", "threshold": ">= 0.47", "measured": "0.40", "passed": False},
                  {"name": "ann_recall", "threshold": ">= 0.9", "measured": "1.0", "passed": True}],
    }  # fmt: skip
    metrics = {"challenger": {"recall@100": 0.40, "queries": 10},
               "champion": {"recall@100": 0.48}, "popularity": {"recall@100": 0.3}}  # fmt: skip
    assert orch.send_alert(orch.gate_alert("d", "r1", decision, metrics), hook.url)
    [payload] = hook.received
    assert payload["kind"] == "gate_rejection" and "rejected on recall@100" in payload["text"]
    assert payload["metrics"]["recall@100"] == {
        "challenger": 0.4,
        "champion": 0.48,
        "popularity": 0.3,
    }
    assert [r["name"] for r in payload["failed_rules"]] == ["no_regression"]
    assert "no_regression: 0.40 (needs >= 0.47)" in payload["attachments"][0]["text"]


def test_unreachable_webhook_does_not_raise():
    assert orch.send_alert({"text": "x"}, "http://127.0.0.1:9/nothing", timeout=2) is False


def test_webhook_url_from_connection():
    from airflow.sdk import Connection

    full = Connection(conn_id="a", conn_type="http", host="https://hooks.example/T/B")
    assert orch.webhook_url_from_connection(full) == "https://hooks.example/T/B"
    parts = Connection(conn_id="a", conn_type="http", host="127.0.0.1", port=8, schema="hook")
    assert orch.webhook_url_from_connection(parts) == "http://127.0.0.1:8/hook"
    assert orch.webhook_url_from_connection(None) is None
