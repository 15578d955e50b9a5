"""Each gate rule decides on its own; force and dry run; model comparisons against the noise."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import EvalConfig, GateConfig
from pipelines.evaluation import compare_models
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


# --- Comparisons decided on bootstrap intervals, from per-query values -----------------------


def evaluated(recalls: dict[str, np.ndarray], bootstrap_samples: int = 1000) -> dict:
    """`metrics.json` content as the evaluation writes it, from per-query recall@100 values."""
    per_query = {model: {"recall@100": values} for model, values in recalls.items()}
    out = compare_models(per_query, EvalConfig(ks=[100], bootstrap_samples=bootstrap_samples))
    out["ann"] = metrics()["ann"]  # a healthy index: only the comparisons can fail
    return out


def balanced_noise(rng, n: int, size: float) -> np.ndarray:
    """Per-query differences of +size and -size, half each: mean exactly 0, spread `size`."""
    return rng.permutation(np.repeat([size, -size], n // 2))


def test_champion_difference_inside_the_noise_of_few_queries_cannot_be_decided(tmp_path):
    rng = np.random.default_rng(0)
    champion = rng.uniform(0.3, 0.7, size=40)
    challenger = champion + balanced_noise(rng, 40, 0.2)  # same mean, noisy per query
    m = evaluated({"challenger": challenger, "champion": champion, "popularity": champion / 3})
    d = decide(m, GateConfig(), "recall@100")
    assert not d.promote and [r.name for r in d.failed] == ["no_regression"]
    measured = rule(d, "no_regression").measured
    assert measured.startswith("cannot decide") and "inside the noise" in measured
    # The interval is the evaluation's paired one, and it straddles both 0 and the floor.
    low, high = m["differences"]["challenger-champion"]["recall@100"]["ci"]
    assert f"[{low:+.4f}, {high:+.4f}]" in measured
    assert low < -GateConfig().max_regression * champion.mean() < 0 < high
    d.write(tmp_path)
    gate_md = (tmp_path / "gate.md").read_text()
    assert f"- **no_regression**: {measured}" in gate_md  # which rule decided, and why
    assert "bootstrap" in gate_md


def test_champion_difference_inside_the_noise_of_many_queries_is_within_tolerance():
    rng = np.random.default_rng(1)
    champion = rng.uniform(0.3, 0.7, size=20_000)
    challenger = champion + balanced_noise(rng, 20_000, 0.2)
    d = decide(
        evaluated({"challenger": challenger, "champion": champion, "popularity": champion / 3}),
        GateConfig(),
        "recall@100",
    )
    assert d.promote
    assert rule(d, "no_regression").measured.endswith("inside the noise, within tolerance")


def test_clear_regression_is_called_a_regression():
    rng = np.random.default_rng(2)
    champion = rng.uniform(0.3, 0.7, size=2000)
    challenger = champion * 0.8 + balanced_noise(rng, 2000, 0.05)
    d = decide(
        evaluated({"challenger": challenger, "champion": champion, "popularity": champion / 3}),
        GateConfig(),
        "recall@100",
    )
    assert [r.name for r in d.failed] == ["no_regression"]
    assert rule(d, "no_regression").measured.startswith("regression:")


def test_clearly_better_challenger_over_many_queries_beats_popularity():
    rng = np.random.default_rng(3)
    popularity = rng.binomial(10, 0.2, size=2000) / 10
    challenger = rng.binomial(10, 0.5, size=2000) / 10
    d = decide(evaluated({"challenger": challenger, "popularity": popularity}), GateConfig(),
               "recall@100")  # fmt: skip
    assert d.promote and d.decision == "promote"
    assert "above the margin" in rule(d, "beats_popularity").measured
    assert "Decided by: every rule passed." in d.markdown()


def test_lift_over_popularity_inside_the_noise_cannot_be_decided():
    rng = np.random.default_rng(4)
    popularity = rng.uniform(0.2, 0.4, size=30)
    # 10% above popularity on average (more than the 5% asked), but noisy query by query.
    challenger = popularity * 1.10 + balanced_noise(rng, 30, 0.3)
    lift = GateConfig().min_lift_over_popularity
    assert challenger.mean() > popularity.mean() * (1 + lift)
    point_only = decide(evaluated({"challenger": challenger, "popularity": popularity}, 0),
                        GateConfig(), "recall@100")  # fmt: skip
    assert point_only.promote  # what the gate said before it knew the noise
    d = decide(evaluated({"challenger": challenger, "popularity": popularity}), GateConfig(),
               "recall@100")  # fmt: skip
    assert not d.promote and [r.name for r in d.failed] == ["beats_popularity"]
    measured = rule(d, "beats_popularity").measured
    assert measured.startswith("cannot decide: +") and "includes 0" in measured
    assert "inside the noise" in measured and measured in d.markdown()
