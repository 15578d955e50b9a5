"""`EvalSet` on the small preset's features, and the popularity slices of its items."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import EvalConfig
from pipelines.evaluation import EvalSet
from pipelines.evaluation.evalset import item_slices


def test_item_slices_split_the_catalog_by_training_popularity():
    counts = np.array([5.0, 0.0, 30.0, 10.0, 5.0, 50.0])  # total 100
    # by popularity: 50 (index 5), 30 (2), 10 (3), 5 (0), 5 (4): 50 + 30 reach 0.6
    assert item_slices(counts, 0.6).tolist() == ["tail", "cold", "head", "tail", "tail", "head"]
    # the head takes the item that crosses the share; ties go by catalog order
    assert item_slices(counts, 0.92).tolist() == ["head", "cold", "head", "head", "tail", "head"]
    assert item_slices(np.zeros(3), 0.5).tolist() == ["cold", "cold", "cold"]


@pytest.fixture(scope="module")
def evalset(small_features):
    return EvalSet(small_features.features_dir, EvalConfig(ks=[10, 50], primary_metric="recall@50"))


def test_queries_targets_and_seen_items_line_up(evalset):
    n = len(evalset)
    assert n > 0 and len(evalset.seen_ids) == len(evalset.users) == n
    assert "seen_item_ids" not in evalset.queries and "label_item_ids" not in evalset.queries
    assert all(len(v) == n for v in evalset.queries.values())
    assert evalset.users == [u.decode() for u in evalset.queries["user_id"]]
    for target, seen in zip(evalset.targets, evalset.seen_ids, strict=True):
        assert not set(evalset.item_ids[target]) & set(seen)  # targets are unseen items


def test_users_are_warm_exactly_when_training_knows_them(evalset):
    vocab = set(evalset.features.vocab["user_id"])
    assert evalset.warm_user.tolist() == [u in vocab for u in evalset.users]
    counts = evalset.features.catalog["train_count"].to_numpy()
    assert (evalset.item_slice == "cold").tolist() == (counts == 0).tolist()
    head_share = counts[evalset.item_slice == "head"].sum() / counts.sum()
    assert head_share >= evalset.cfg.head_share


def test_metrics_of_a_perfect_ranking_with_slices(evalset):
    kmax = 50
    ranked = np.full((len(evalset), kmax), -1, dtype=np.int64)
    for i, target in enumerate(evalset.targets):
        ranked[i, : min(kmax, len(target))] = target[:kmax]
    out = evalset.metrics(ranked)
    scored = sum(1 for t in evalset.targets if len(t))
    assert out["queries"] == scored and out["hit_rate@50"] == 1.0 and out["mrr@50"] == 1.0
    slices = out["slices"]
    assert set(slices) == {"warm_users", "cold_users", "head_items", "tail_items", "cold_items"}
    assert slices["warm_users"]["queries"] + slices["cold_users"]["queries"] == scored
    assert set(slices["head_items"]) == {"queries", "recall@10", "recall@50"}


def test_max_queries_takes_a_seeded_subset(small_features, evalset):
    cfg = EvalConfig(ks=[10, 50], primary_metric="recall@50", max_queries=20)
    first, again = (EvalSet(small_features.features_dir, cfg) for _ in range(2))
    assert len(first) == min(20, len(evalset))
    assert first.users == again.users and set(first.users) <= set(evalset.users)
