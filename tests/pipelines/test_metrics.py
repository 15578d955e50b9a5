"""Ranking metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.metrics import ranking_metrics, recall_curve, top_k


def test_hand_computed_single_query():
    # Targets {7, 3}; ranked 5, 7, 1, 3 -> hits at ranks 2 and 4.
    m = ranking_metrics(np.array([[5, 7, 1, 3]]), [np.array([7, 3])], ks=[2, 4], n_items=10)
    assert m["recall@2"] == 0.5 and m["recall@4"] == 1.0
    assert m["hit_rate@2"] == 1.0
    ideal2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / ideal2)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal2)
    assert m["mrr@4"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(2 / 10) and m["coverage@4"] == pytest.approx(4 / 10)
    assert m["queries"] == 1


def test_fewer_relevant_items_than_k_and_more_than_k():
    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    targets = [np.array([2]), np.array([4, 9, 8, 7])]
    m = ranking_metrics(ranked, targets, ks=[3], n_items=10)
    # Query 1: one target found -> recall 1, NDCG = (1/log2 3) / 1.
    # Query 2: 1 of 4 found -> recall 0.25 (cannot reach 1 at K=3); NDCG ideal has 3 hits.
    assert m["recall@3"] == pytest.approx((1 + 0.25) / 2)
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / ideal3) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)


def test_queries_without_targets_are_skipped_and_padding_never_hits():
    ranked = np.array([[-1, -1], [0, -1]])
    targets = [np.array([], dtype=np.int64), np.array([0, 1])]
    m = ranking_metrics(ranked, targets, ks=[2], n_items=4)
    assert m["queries"] == 1
    assert m["recall@2"] == 0.5
    assert m["coverage@2"] == pytest.approx(1 / 4)


def test_duplicate_targets_count_once():
    m = ranking_metrics(np.array([[1, 2]]), [np.array([1, 1, 3])], ks=[2], n_items=5)
    assert m["recall@2"] == 0.5


def test_ties_rank_the_lower_catalog_index_first():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert top_k(scores, 4).tolist() == [[1, 3, 0, 2]]
    # The tie decides a hit: with target 2 only, recall@3 is 0 because item 0 wins the tie.
    m = ranking_metrics(top_k(scores, 3), [np.array([2])], ks=[3], n_items=5)
    assert m["recall@3"] == 0.0


def test_recall_curve_matches_recall_at_each_k():
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50)[:20] for _ in range(30)])
    targets = [rng.choice(50, size=rng.integers(0, 6), replace=False) for _ in range(30)]
    curve = recall_curve(ranked, targets, 20)
    for k in (1, 5, 20):
        assert curve[k - 1] == pytest.approx(
            ranking_metrics(ranked, targets, [k], 50)[f"recall@{k}"]
        )
