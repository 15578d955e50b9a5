"""Exact scoring against the catalog goes in byte-bounded blocks; the results do not depend on
the block size (the oracle's true logits, the index tuning's exact top-k)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import pipelines.metrics
from pipelines.metrics import score_block_rows
from pipelines.synthetic import GroundTruth
from scann_index.index import exact_top_k


def test_block_rows_fit_the_byte_budget():
    budget = pipelines.metrics.SCORE_BLOCK_BYTES
    assert score_block_rows(1_000_000) * 4 * 1_000_000 <= budget
    assert score_block_rows(1_000_000, cell_bytes=8) * 8 * 1_000_000 <= budget
    assert score_block_rows(10 * budget) == 1  # a huge catalog still scores one query at a time
    assert score_block_rows(0) >= 1


def test_oracle_logits_are_the_true_logits_whatever_the_block_size(small_world, monkeypatch):
    truth = GroundTruth.load(small_world)
    rng = np.random.default_rng(0)
    items = [f"i{i:07d}" for i in rng.choice(len(truth.item_vectors), 300, replace=False)]
    columns = np.array([int(x[1:]) for x in items])
    user_index = rng.choice(len(truth.user_vectors), 40, replace=False)
    users = [f"u{u:07d}" for u in user_index]
    start = int(truth.start.timestamp())
    times = start + rng.integers(0, 14 * 86400, size=40)  # several days: several biases
    expected = np.stack([
        truth.logits(np.array([u]), pd.Timestamp(int(t), unit="s", tz="UTC"))[0, columns]
        for u, t in zip(user_index, times, strict=True)
    ])  # fmt: skip
    assert np.isneginf(expected).any()  # items not arrived yet at some query's moment
    whole = np.concatenate(list(truth.score_blocks(items, users, times)))
    # One matrix product per block instead of one per query: equal up to float64 rounding.
    np.testing.assert_allclose(whole, expected, rtol=1e-12, atol=1e-12)
    assert (np.isneginf(whole) == np.isneginf(expected)).all()
    monkeypatch.setattr(pipelines.metrics, "SCORE_BLOCK_BYTES", 3 * 8 * len(items))
    blocks = list(truth.score_blocks(items, users, times))
    assert [len(b) for b in blocks[:2]] == [3, 3] and len(blocks) == 14
    np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=1e-12, atol=1e-12)
    ranked = pipelines.metrics.top_k(np.concatenate(blocks).astype(np.float32), 100)
    np.testing.assert_array_equal(ranked, pipelines.metrics.top_k(whole.astype(np.float32), 100))
    same_day = np.full(40, start + 86400 * 5)
    np.testing.assert_allclose(
        np.concatenate(list(truth.score_blocks(items, users, same_day))),
        np.concatenate(list(truth.score_blocks(items, users, same_day, batch=1))),
        rtol=1e-12,
        atol=1e-12,
    )


def test_exact_top_k_does_not_depend_on_the_block_size(monkeypatch):
    rng = np.random.default_rng(3)
    items, queries = rng.normal(size=(500, 16)), rng.normal(size=(90, 16))
    whole = exact_top_k(items, queries, 20)
    monkeypatch.setattr(pipelines.metrics, "SCORE_BLOCK_BYTES", 4 * 4 * len(items))
    np.testing.assert_array_equal(exact_top_k(items, queries, 20), whole)
    np.testing.assert_array_equal(whole, np.argsort(-(queries @ items.T), axis=1)[:, :20])


def test_top_k_gives_ties_at_the_cut_to_the_lower_index():
    scores = np.array([[1.0, 5.0, 3.0, 3.0, 3.0, 3.0, -np.inf], [3.0] * 7])
    rows = pipelines.metrics.top_k(scores, 3)
    np.testing.assert_array_equal(rows, [[1, 2, 3], [0, 1, 2]])
    everything = np.array([[-np.inf, 2.0, -np.inf]])
    np.testing.assert_array_equal(pipelines.metrics.top_k(everything, 3), [[1, 0, 2]])
    tied = np.random.default_rng(0).integers(0, 4, size=(50, 1000)).astype(np.float32)
    expected = np.argsort(-tied, axis=1, kind="stable")[:, :100]
    np.testing.assert_array_equal(pipelines.metrics.top_k(tied, 100), expected)
    # Wide rows are cut down to the items above a sampled floor first: the same top k.
    np.testing.assert_array_equal(pipelines.metrics.top_k(tied, 10), expected[:, :10])
    wide = np.random.default_rng(1).normal(size=(5, 20_000))
    expected = np.argsort(-wide, axis=1, kind="stable")[:, :50]
    np.testing.assert_array_equal(pipelines.metrics.top_k(wide, 50), expected)
    wide[0, ::2] = np.nan  # a diverged model: NaN never outranks a score
    assert not np.isnan(wide[0, pipelines.metrics.top_k(wide, 50)[0]]).any()
