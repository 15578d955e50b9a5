"""Each gate rule decides on its own; force and dry run."""

from __future__ import annotations

import pytest

from pipelines.config import GateConfig
from pipelines.gate import decide


def metrics(challenger=0.50, champion=0.48, popularity=0.30, ann=0.97, p99=2.0, size=10.0):
    out = {
        "challenger": {"recall@100": challenger},
        "popularity": {"recall@100": popularity},
        "ann": {"k": 100, "recall@100": ann, "latency_p99_ms": p99, "size_mb": size},
    }
    if champion is not None:
        out["champion"] = {"recall@100": champion}
    return out


def rule(decision, name):
    [r] = [r for r in decision.rules if r.name == name]
    return r


def test_good_challenger_is_promoted_and_every_rule_is_reported():
    d = decide(metrics(), GateConfig(), "recall@100")
    assert d.promote and d.decision == "promote"
    names = [r.name for r in d.rules]
    assert names == ["beats_popularity", "no_regression", "ann_recall", "latency_p99",
                     "index_size", "smoke_test"]  # fmt: skip
    assert "0.3150" in rule(d, "beats_popularity").threshold  # 0.30 x 1.05
    assert "gate: promote" in d.markdown().lower()


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"challenger": 0.31, "champion": 0.30}, "beats_popularity"),  # < 0.30 x 1.05
        ({"challenger": 0.46}, "no_regression"),  # < 0.48 x 0.98
        ({"ann": 0.85}, "ann_recall"),
        ({"p99": 80.0}, "latency_p99"),
        ({"p99": None}, "latency_p99"),  # not measured is not a pass
        ({"size": 4096.0}, "index_size"),
    ],
)
def test_each_rule_rejects_on_its_own(change, failing):
    d = decide(metrics(**change), GateConfig(), "recall@100")
    assert not d.promote
    assert [r.name for r in d.failed] == [failing]
    assert d.decision == f"reject (failed: {failing})"


def test_regression_within_tolerance_passes():
    d = decide(metrics(challenger=0.475, champion=0.48), GateConfig(), "recall@100")
    assert d.promote and rule(d, "no_regression").passed


def test_first_run_without_champion_promotes_on_absolute_rules():
    d = decide(metrics(champion=None), GateConfig(), "recall@100")
    assert d.promote and rule(d, "no_regression").threshold == "no champion (first run)"
    d = decide(metrics(champion=None, challenger=0.2), GateConfig(), "recall@100")
    assert not d.promote


def test_champion_trained_on_the_eval_period_blocks_promotion_unless_forced():
    reason = "trained on interactions up to 2026-11-20, after this eval period starts (2026-01-09)"
    backfill = {**metrics(champion=None), "eval": {"champion_excluded": reason}}
    d = decide(backfill, GateConfig(), "recall@100")
    assert not d.promote and [r.name for r in d.failed] == ["no_regression"]
    assert rule(d, "no_regression").measured == reason and reason in d.markdown()
    assert decide(backfill, GateConfig(force_promote=True), "recall@100").promote


def test_smoke_test_failure_rejects():
    d = decide(metrics(), GateConfig(), "recall@100", smoke_test="KeyError: 'user_id'")
    assert not d.promote and rule(d, "smoke_test").measured == "KeyError: 'user_id'"


def test_force_promote_and_dry_run():
    bad = metrics(challenger=0.1)
    forced = decide(bad, GateConfig(force_promote=True), "recall@100")
    assert forced.promote and forced.decision.startswith(
        "promote (forced; failed: beats_popularity"
    )
    dry = decide(metrics(), GateConfig(dry_run=True), "recall@100")
    assert not dry.promote and dry.decision == "dry run: would promote"
