"""`compare_models`: means, bootstrap intervals and paired differences over the same queries."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import EvalConfig
from pipelines.evaluation import BOOTSTRAP_SEED, compare_models

CFG = EvalConfig(ks=[10], primary_metric="recall@10", bootstrap_samples=500, confidence=0.9)


def scores(**models: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {name: {"recall@10": values, "mrr@10": values / 2} for name, values in models.items()}


def test_a_constant_per_query_gain_has_a_zero_width_paired_interval():
    """Pairing: each resample moves both models together, so a gain of exactly 0.1 on every
    query is 0.1 in every replicate, although either model's own interval is wide."""
    rng = np.random.default_rng(3)
    popularity = rng.uniform(0.0, 0.8, size=200)
    out = compare_models(scores(challenger=popularity + 0.1, popularity=popularity), CFG)
    gain = out["differences"]["challenger-popularity"]["recall@10"]
    assert gain["diff"] == pytest.approx(0.1)
    assert gain["ci"] == pytest.approx([0.1, 0.1])
    low, high = out["challenger"]["ci"]["recall@10"]
    assert high - low > 0.03  # the model's own interval is not narrow
    assert low < out["challenger"]["recall@10"] < high
    assert out["differences"]["challenger-popularity"]["mrr@10"]["diff"] == pytest.approx(0.05)


def test_means_queries_and_the_kept_replicates():
    a = np.array([1.0, 0.0, 0.5, 0.5])
    out = compare_models(scores(challenger=a, popularity=a / 2, oracle=a), CFG)
    assert out["challenger"]["queries"] == 4 and out["challenger"]["recall@10"] == 0.5
    assert out["popularity"]["mrr@10"] == 0.125
    boot = out["challenger"]["bootstrap"]
    assert boot["metric"] == "recall@10" and len(boot["means"]) == 500
    # the same resamples for every model: popularity's replicates are half the challenger's
    np.testing.assert_allclose(out["popularity"]["bootstrap"]["means"], np.divide(boot["means"], 2))
    assert "bootstrap" not in out["oracle"]  # only gated models keep replicates
    assert set(out["differences"]) == {"challenger-popularity"}  # no champion evaluated
    assert out["eval"] == {"bootstrap": {"samples": 500, "confidence": 0.9, "seed": BOOTSTRAP_SEED}}


def test_equal_models_differ_by_exactly_zero_and_runs_repeat_exactly():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=50)
    out = compare_models(scores(challenger=a, champion=a.copy()), CFG)
    assert out["differences"]["challenger-champion"]["recall@10"] == {"diff": 0.0, "ci": [0, 0]}
    assert compare_models(scores(challenger=a, champion=a.copy()), CFG) == out


def test_without_bootstrap_only_means_are_reported():
    cfg = EvalConfig(ks=[10], primary_metric="recall@10", bootstrap_samples=0)
    out = compare_models(scores(challenger=np.array([1.0, 0.0]), popularity=np.zeros(2)), cfg)
    assert set(out) == {"challenger", "popularity"}
    assert out["challenger"] == {"queries": 2, "recall@10": 0.5, "mrr@10": 0.25}


def test_models_scored_on_different_queries_are_refused():
    with pytest.raises(ValueError, match="different queries .*same eval queries"):
        compare_models(scores(challenger=np.ones(3), popularity=np.ones(4)), CFG)
