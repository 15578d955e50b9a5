"""`two-tower promote` / `rollback`: the registry history names the OS user, and each change (and
only a change) hands its `production_bundle` event to `emit_production_event` after the swap.
Writing the event into a real Airflow DB: tests/pipelines/orchestration/test_events.py."""

from __future__ import annotations

import json
import uuid

import pytest

from pipelines.cli import main
from pipelines.layout import RunLayout
from pipelines.orchestration import events
from pipelines.registry import Registry


@pytest.fixture
def emitted(monkeypatch, tmp_path) -> list[dict]:
    """The extras the CLI emits (artifact root `tmp_path`); each is checked to come after the
    swap it reports."""
    sent = []
    monkeypatch.setenv("LOGNAME", "alice")

    def record(extra):
        assert Registry(tmp_path).production() == extra["bundle_id"]
        sent.append(extra)
        return True

    monkeypatch.setattr(events, "emit_production_event", record)
    return sent


def bundle(registry: Registry, tmp_path, payload: str, value: float) -> str:
    staging = tmp_path / f"staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    (staging / "item_ids.txt").write_text(payload)
    metrics = {"challenger": {"recall@100": value}, "eval": {"primary_metric": "recall@100"}}
    return registry.publish(staging, {"created_at": payload, "metrics": metrics})


def test_promote_and_rollback_record_the_os_user_and_emit_after_the_swap(emitted, tmp_path, capsys):
    registry = Registry(tmp_path)
    a, b = bundle(registry, tmp_path, "a", 0.3), bundle(registry, tmp_path, "b", 0.4)
    root = ["--artifact-root", str(tmp_path)]
    assert main(["promote", "--bundle", a, *root]) == 0
    assert main(["promote", "--bundle", b, "--reason", "hotfix", *root]) == 0
    assert main(["rollback", "--reason", "b is worse", *root]) == 0
    out = capsys.readouterr().out
    assert f"production -> {a} (rolled back from {b})" in out
    assert out.count("recorded in Airflow: production_bundle asset event") == 3
    assert [(e["action"], e["bundle_id"], e["previous"], e["user"], e["decision"])
            for e in emitted] == [
        ("promote", a, None, "os:alice", "manual promote"),
        ("promote", b, a, "os:alice", "hotfix"),
        ("rollback", a, b, "os:alice", "b is worse"),
    ]  # fmt: skip
    assert emitted[1]["metrics"] == {"metric": "recall@100", "value": 0.4}
    assert [(e["event"], e["user"], e["reason"]) for e in registry.history()] == [
        ("promote", "os:alice", "manual promote"),
        ("promote", "os:alice", "hotfix"),
        ("rollback", "os:alice", "b is worse"),
    ]

    assert main(["promote", "--bundle", a, *root]) == 0  # already production
    assert "nothing changed" in capsys.readouterr().out
    assert main(["promote", "--bundle", b, "--no-airflow-event", *root]) == 0
    assert len(emitted) == 3 and registry.production() == b


def test_a_failed_event_does_not_fail_the_promotion(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(events, "emit_production_event", lambda extra: False)
    registry = Registry(tmp_path)
    a = bundle(registry, tmp_path, "a", 0.3)
    assert main(["promote", "--bundle", a, "--artifact-root", str(tmp_path)]) == 0
    assert registry.production() == a and "recorded in Airflow" not in capsys.readouterr().out


def test_promote_run_dir_emits_the_gate_decision_and_the_runs_metrics(
    emitted, monkeypatch, tmp_path
):
    """The run-dir path (gate + publish + swap are the steps' own, tested with them)."""
    registry = Registry(tmp_path)
    champion = bundle(registry, tmp_path, "a", 0.3)
    registry.promote(champion)
    challenger = bundle(registry, tmp_path, "b", 0.4)
    layout = RunLayout(tmp_path / "runs" / "r2")
    layout.metrics.parent.mkdir(parents=True)
    layout.metrics.write_text(json.dumps({
        "challenger": {"recall@100": 0.4, "ci": {"recall@100": [0.38, 0.42]}},
        "champion": {"recall@100": 0.3}, "eval": {"primary_metric": "recall@100"},
    }))  # fmt: skip
    layout.gate_md.write_text("# Gate: promote\n")

    def promote(cfg, layout, decision, run_id, champion_id, *, actor=None, airflow_run_id=None):
        registry.promote(challenger, reason=f"run {run_id}: promote", expected=champion_id,
                         actor=actor, airflow_run_id=airflow_run_id)  # fmt: skip
        return {"promoted": True, "decision": "promote", "bundle_id": challenger}

    monkeypatch.setattr("pipelines.steps.gate.gate", lambda cfg, layout: {"promote": True})
    monkeypatch.setattr("pipelines.steps.promote.promote", promote)
    args = ["promote", "--run-dir", str(layout.run_dir), "--artifact-root", str(tmp_path)]
    assert main(args) == 0
    assert emitted == [events.production_event_extra(
        action="promote", bundle_id=challenger, previous=champion, user="os:alice",
        decision="promote", metrics=json.loads(layout.metrics.read_text()),
    )]  # fmt: skip
    assert emitted[0]["metrics"] == {
        "metric": "recall@100",
        "value": 0.4,
        "ci": [0.38, 0.42],
        "champion": 0.3,
    }
    assert registry.pointer()["user"] == "os:alice"  # the history names who ran the CLI
    assert main([*args, "--reason", "x"]) == 2  # a run's promotion records its gate decision
