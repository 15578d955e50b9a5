"""Exact top-K over the catalog with each query's seen items excluded."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_validation_and_eval_queries_are_separate_splits(feature_set):

    valid = QuickEval(feature_set, None, split="valid")
    evaluation = QuickEval(feature_set, None)  # the evaluation step's call: the eval split
    assert evaluation.split == "eval" and valid.split == "valid"
    assert len(valid) == feature_set.manifest["counts"]["valid_queries"] == 500
    assert len(evaluation) == feature_set.manifest["counts"]["eval_queries"]
    # Validation queries sit inside the training window, before the eval period.
    eval_start = feature_set.manifest["window_epoch_s"]["eval_start"]
    assert int(valid.queries["timestamp"].numpy().max()) < eval_start
    assert int(evaluation.queries["timestamp"].numpy().min()) >= eval_start
    # Labels already seen before the query are no targets: a few queries keep none.
    assert sum(len(t) > 0 for t in valid.targets) > 0.9 * len(valid)


@pytest.mark.parametrize("split", ["valid", "eval"])
def test_rankings_leave_out_items_created_after_the_query(feature_set, split):
    """Validation queries inside the training window and eval queries at the eval start alike:
    an item created after the query's moment is never ranked for it (it stays a target)."""
    queries = QuickEval(feature_set, 200, split=split)
    created = queries.created_at
    later = created[None, :] > queries.query_times[:, None]
    assert later.any(), "the small world keeps adding items, in the eval period too"
    ranked = queries.ranked([np.zeros((len(queries), len(created)))], len(created) // 2)
    for row, top in enumerate(ranked):
        assert not later[row, top].any()
    expected = [np.flatnonzero(row) for row in later]
    found = [queries.catalog.created_after(t) for t in queries.query_times]
    assert all(map(np.array_equal, map(np.sort, found), expected))
    with pytest.raises(ValueError, match="query split must be one of"):
        QuickEval(feature_set, 10, split="train")


@pytest.mark.parametrize("split", ["eval", "valid"])
def test_rankings_do_not_depend_on_the_score_block_size(feature_set, split, monkeypatch):
    import pipelines.metrics

    ev = QuickEval(feature_set, 300, split=split)
    scores = np.random.default_rng(1).normal(size=(len(ev), len(ev.item_ids)))
    whole = ev.ranked([scores], 50)
    popular = ev.ranked(ev.popularity_blocks(), 50)
    # 7 rows a block: the caller's one block is ranked in pieces, popularity comes in 43 blocks.
    monkeypatch.setattr(pipelines.metrics, "SCORE_BLOCK_BYTES", 7 * 4 * len(ev.item_ids))
    assert pipelines.metrics.score_block_rows(len(ev.item_ids)) == 7
    assert len(list(ev.popularity_blocks())) == -(-len(ev) // 7)
    np.testing.assert_array_equal(ev.ranked([scores], 50), whole)
    np.testing.assert_array_equal(ev.ranked(ev.popularity_blocks(), 50), popular)
    monkeypatch.setattr(pipelines.metrics, "SCORE_BLOCK_BYTES", 1)  # at least one row
    np.testing.assert_array_equal(ev.ranked([scores[:10]], 50), whole[:10])


@pytest.mark.parametrize("split", ["eval", "valid"])
def test_streamed_chunks_are_the_same_queries_and_popularity_needs_no_catalog_pass(
    feature_set, split
):
    whole = QuickEval(feature_set, 300, seed=4, split=split)
    chunks = list(QuickEval.chunks(feature_set, 300, seed=4, split=split, rows=70))
    assert [len(c) for c in chunks] == [70, 70, 70, 70, 20]
    for name in ("user_id", "timestamp"):
        streamed = np.concatenate([c.queries[name].numpy() for c in chunks])
        np.testing.assert_array_equal(streamed, whole.queries[name].numpy())
    for attr in ("seen", "targets"):
        streamed = [row for c in chunks for row in getattr(c, attr)]
        assert all(map(np.array_equal, streamed, getattr(whole, attr)))
    # Popularity from the one shared order equals scoring the catalog for every query.
    expected = whole.ranked(whole.popularity_blocks(), 100)
    np.testing.assert_array_equal(whole.popularity_ranked(100), expected)
    streamed = np.concatenate([c.popularity_ranked(100) for c in chunks])
    np.testing.assert_array_equal(streamed, expected)
    # A k beyond what is left after the exclusions fills up the long way, as `ranked` does.
    n = len(whole.item_ids)
    np.testing.assert_array_equal(
        whole.popularity_ranked(n), whole.ranked(whole.popularity_blocks(), n)
    )
