"""Ranking metrics against hand-computed cases; per-query values and bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.metrics import (
    bootstrap_ci,
    bootstrap_means,
    paired_bootstrap_ci,
    per_query_metrics,
    ranking_metrics,
    recall_curve,
    top_k,
)


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


def random_rankings(rng, n_queries, n_items=60, width=20):
    ranked = np.stack([rng.permutation(n_items)[:width] for _ in range(n_queries)])
    ranked[rng.random(ranked.shape) < 0.1] = -1  # some padding
    targets = [rng.choice(n_items, size=rng.integers(0, 6)) for _ in range(n_queries)]
    return ranked, targets


def test_per_query_values_average_to_the_ranking_metrics():
    ranked, targets = random_rankings(np.random.default_rng(3), 80)
    means = ranking_metrics(ranked, targets, [5, 20], 60)
    values = per_query_metrics(ranked, targets, [5, 20])
    assert set(values) == {k for k in means if not k.startswith(("coverage", "queries"))}
    for key, per_query in values.items():
        assert per_query.shape == (means["queries"],)  # queries without targets are left out
        assert per_query.mean() == pytest.approx(means[key])


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_queries():
    rng = np.random.default_rng(5)
    widths = []
    for n in (30, 3000):
        values = rng.binomial(10, 0.3, size=n) / 10
        low, high = bootstrap_ci(values, samples=500, confidence=0.95, seed=0)
        assert low < values.mean() < high
        widths.append(high - low)
    # The width of a mean's interval falls like 1/sqrt(n): 100x the queries, ~1/10 the width.
    assert widths[1] < widths[0] / 5
    assert bootstrap_ci(values, 500, 0.95, seed=0) == bootstrap_ci(values, 500, 0.95, seed=0)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    values = np.random.default_rng(6).random(50)
    assert paired_bootstrap_ci(values, values, samples=300) == (0.0, 0.0)


def test_pairing_removes_what_the_queries_share():
    # Query difficulty dominates both models; the challenger adds a small, steady gain.
    rng = np.random.default_rng(7)
    difficulty = rng.random(200)
    champion = difficulty
    challenger = difficulty + 0.02 + rng.normal(0, 0.01, size=200)
    low, high = paired_bootstrap_ci(challenger, champion, samples=500)
    assert 0 < low < 0.02 < high
    # Unpaired, each mean's own interval is wider than the gain: the overlap hides it.
    c_low, _ = bootstrap_ci(challenger, samples=500)
    _, b_high = bootstrap_ci(champion, samples=500)
    assert c_low < b_high


def test_resamples_are_shared_by_every_column():
    values = np.random.default_rng(8).random((40, 2))
    both = bootstrap_means(values, samples=200, seed=3)
    assert both.shape == (200, 2)
    assert np.allclose(
        both[:, 0] - both[:, 1], bootstrap_means(values[:, 0] - values[:, 1], 200, 3)
    )
    assert np.all(bootstrap_means(np.zeros(0), 10, 0) == 0.0)  # no query: mean 0 by convention


def test_paired_bootstrap_refuses_unaligned_models():
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap_ci(np.zeros(3), np.zeros(4))


def test_vectorised_hits_match_a_per_query_reference():
    """`hit_matrix`, `row_members` and `recall_at_k` (one membership test over all queries)
    against a plain
    per-query loop: repeated targets, -1 padding, queries without targets, ids beyond the
    ranked range and a ranked width below max(K)."""
    from pipelines.metrics import hit_matrix, recall_at_k, row_members

    rng = np.random.default_rng(3)
    ranked = rng.integers(-1, 50, (300, 12))
    targets = [rng.integers(0, 60, rng.integers(0, 6)) for _ in range(300)]
    targets[0] = np.array([ranked[0, 0]] * 3 + [59])  # a repeated hit and a miss
    hits, sizes = hit_matrix(ranked, targets)
    scored = [i for i, t in enumerate(targets) if len(t)]
    expected = [np.isin(ranked[i], np.unique(targets[i])) & (ranked[i] >= 0) for i in scored]
    np.testing.assert_array_equal(hits, np.array(expected))
    np.testing.assert_array_equal(sizes, [len(np.unique(targets[i])) for i in scored])
    # row_members: the same test for every row, empty sets included (never a member).
    members = row_members(ranked, targets)
    every = [np.isin(r, t) & (r >= 0) for r, t in zip(ranked, targets, strict=True)]
    np.testing.assert_array_equal(members, np.array(every))
    assert not members[[i for i, t in enumerate(targets) if not len(t)]].any()
    # recall_at_k counts each target entry, repeats included (as np.isin(target, row) does).
    reference = np.mean([np.isin(targets[i], ranked[i][ranked[i] >= 0]).mean() for i in scored])
    assert recall_at_k(ranked, targets) == pytest.approx(reference, abs=1e-12)
    values = per_query_metrics(ranked, targets, [5, 20])  # 20 > the ranked width of 12
    for row, i in enumerate(scored):
        target = np.unique(targets[i])
        assert values["recall@20"][row] == pytest.approx(expected[row].sum() / len(target))
        first = np.flatnonzero(expected[row])
        assert values["mrr@20"][row] == pytest.approx(1 / (first[0] + 1) if len(first) else 0.0)
