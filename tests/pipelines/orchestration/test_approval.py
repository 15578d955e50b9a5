"""When a person must approve a promotion, what they read, and how their answer is kept."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from pipelines.config import EvalConfig, GateConfig, load_config
from pipelines.evaluation import compare_models
from pipelines.gate import decide
from pipelines.layout import RunLayout
from pipelines.orchestration.approval import ApprovalAnswer, approval_body, approval_request


def config(mode: str, **gate):
    return load_config(env={}, overrides={"promotion": {"mode": mode}, "gate": gate})


def evaluated(challenger_shift: float, noise: float, n: int, seed: int = 0) -> dict:
    """metrics.json content for a challenger `challenger_shift` above a champion, per-query
    noise `noise`, with popularity far below (only the champion comparison can be in doubt)."""
    rng = np.random.default_rng(seed)
    champion = rng.uniform(0.3, 0.7, size=n)
    challenger = champion + challenger_shift + rng.permutation(np.repeat([noise, -noise], n // 2))
    out = compare_models(
        {"challenger": {"recall@100": challenger}, "champion": {"recall@100": champion},
         "popularity": {"recall@100": champion / 3}},
        EvalConfig(ks=[100], bootstrap_samples=500),
    )  # fmt: skip
    out["ann"] = {"k": 100, "recall@100": 0.99, "latency_p99_ms": 1.0, "size_mb": 1.0}
    return out


CLEAR = decide(evaluated(0.05, 0.01, 2000), GateConfig(), "recall@100").to_dict()
UNDECIDED = decide(evaluated(0.0, 0.3, 40), GateConfig(), "recall@100").to_dict()
REGRESSION = decide(evaluated(-0.2, 0.01, 2000), GateConfig(), "recall@100").to_dict()


def test_the_gate_marks_a_rule_whose_threshold_is_inside_its_interval_as_marginal():
    assert CLEAR["promote"] and not any(r["marginal"] for r in CLEAR["rules"])
    [failed] = [r for r in UNDECIDED["rules"] if not r["passed"]]
    assert failed["name"] == "no_regression" and failed["marginal"]
    assert failed["measured"].startswith("cannot decide")
    [failed] = [r for r in REGRESSION["rules"] if not r["passed"]]
    assert failed["name"] == "no_regression" and not failed["marginal"]


@pytest.mark.parametrize(
    ("mode", "gate", "decision", "asked"),
    [
        ("auto", {}, CLEAR, None),
        ("auto", {}, UNDECIDED, None),
        ("approve", {}, CLEAR, "promotion.mode is approve"),
        ("approve_if_marginal", {}, CLEAR, None),
        ("approve_if_marginal", {}, UNDECIDED, "the gate cannot decide: no_regression inside"),
        ("approve", {}, UNDECIDED, "the gate cannot decide: no_regression inside"),
        ("approve", {}, REGRESSION, None),  # a clear rejection is not put to a person
        ("approve_if_marginal", {"dry_run": True}, CLEAR, None),
    ],
)
def test_who_decides(mode, gate, decision, asked):
    got = approval_request(config(mode, **gate), decision)
    assert (got is None) if asked is None else got.startswith(asked)


def test_a_forced_promotion_is_put_to_a_person_in_both_approve_modes():
    cfg = config("approve_if_marginal", force_promote=True)
    forced = decide(evaluated(-0.2, 0.01, 2000), cfg.gate, "recall@100").to_dict()
    assert forced["promote"]
    assert approval_request(cfg, forced) == "force_promote was requested (failed: no_regression)"
    assert approval_request(config("auto", force_promote=True), forced) is None


def test_the_request_shows_why_the_gate_table_intervals_slices_and_links(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.evaluation.mkdir(parents=True)
    metrics = evaluated(0.05, 0.01, 2000)
    metrics["challenger"]["slices"] = {"cold_users": {"recall@100": 0.25}}
    metrics["champion"]["slices"] = {"cold_users": {"recall@100": 0.2}}
    layout.metrics.write_text(json.dumps(metrics))
    decide(metrics, GateConfig(), "recall@100").write(layout.evaluation)
    body = approval_body(layout, "promotion.mode is approve", {"gate report": "http://x/gate"})
    assert body.startswith("**Asked because** promotion.mode is approve.")
    assert "| no_regression |" in body  # the gate table
    low, high = metrics["challenger"]["ci"]["recall@100"]
    assert (
        f"| challenger | {metrics['challenger']['recall@100']:.4f} [{low:.4f}, {high:.4f}]" in body
    )
    assert "| cold_users | 0.2500 | 0.2000 | - |" in body
    assert "[gate report](http://x/gate)" in body


def test_an_answer_is_kept_with_who_and_why_and_no_answer_is_a_timeout(tmp_path):
    layout = RunLayout(tmp_path / "run")
    at = dt.datetime(2026, 11, 26, 1, 2, tzinfo=dt.UTC)
    answer = ApprovalAnswer.from_response(
        {"chosen_options": ["Reject"], "params_input": {"reason": " drift in cold users "},
         "responded_by_user": {"id": "7", "name": "alice"}, "responded_at": at},
        "promotion.mode is approve",
    )  # fmt: skip
    answer.write(layout)
    kept = ApprovalAnswer.read(layout)
    assert kept == answer and not kept.approved
    assert kept.line() == "rejected by alice: drift in cold users"
    assert kept.at == at.isoformat()
    timeout = ApprovalAnswer.from_response(
        {"chosen_options": ["Reject"], "params_input": {"reason": ""}, "responded_by_user": None,
         "responded_at": at}, "promotion.mode is approve",
    )  # fmt: skip
    assert timeout.chosen == "timeout" and not timeout.approved and timeout.user is None
    assert timeout.line().startswith("no answer before the approval timeout")
    approved = ApprovalAnswer.from_response(
        {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"name": "bob"},
         "responded_at": at}, "x",
    )  # fmt: skip
    assert approved.approved and approved.line() == "approved by bob"
