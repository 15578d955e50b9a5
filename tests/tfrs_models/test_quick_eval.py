"""Exact top-K over the catalog with each query's seen items excluded."""

from __future__ import annotations

import numpy as np

from tfrs_models.quick_eval import QuickEval


def test_ranking_block_by_block_with_offsets_equals_one_pass(feature_set):
    ev = QuickEval(feature_set, limit=300)
    scores = np.random.default_rng(0).normal(size=(len(ev), len(ev.item_ids)))
    whole = ev.ranked([scores], 20)
    parts = np.concatenate(
        [ev.ranked([scores[:120]], 20), ev.ranked([scores[120:]], 20, start=120)]
    )
    np.testing.assert_array_equal(whole, parts)
    assert sum(len(seen) for seen in ev.seen[120:]) > 0  # the offset picks the right exclusions
    for row, seen in zip(whole, ev.seen, strict=True):
        assert not np.isin(row, seen).any()
    # Without the offset the second block would exclude the first block's seen items instead.
    assert not np.array_equal(ev.ranked([scores[120:]], 20), whole[120:])
