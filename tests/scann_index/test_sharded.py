"""The sharded index: same results as one index in exact mode, recall held when tuned, I/O, and
the serving / evaluation / recommend paths loading it unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_index import clustered
from tiny_served import ITEMS

from pipelines.config import IndexConfig
from pipelines.errors import PipelineError
from scann_index.index import (
    ItemIndex,
    SearchParams,
    ann_recall,
    build_index,
    exact_top_k,
    tune_index,
)
from scann_index.sharded import ShardedIndex, shard_bounds


@pytest.fixture(scope="module")
def exact_pair():
    """1003 items: one exact index, and exact shards of 251/251/250/251 rows (k > a shard)."""
    x, q, ids = clustered(1003, 16, clusters=30, seed=0)
    cfg = IndexConfig(k=300, shard_items=260, threads=1)
    single = build_index(x, ids, cfg.model_copy(update={"shard_items": 0}))
    return x, q, single, build_index(x, ids, cfg)


def test_shards_are_contiguous_and_at_most_shard_items():
    assert shard_bounds(1003, 260) == [(0, 251), (251, 502), (502, 752), (752, 1003)]
    assert shard_bounds(10, 10) == [(0, 10)] and shard_bounds(11, 10) == [(0, 6), (6, 11)]
    x, _, ids = clustered(50, 4, clusters=30, seed=1)
    assert not isinstance(build_index(x, ids, IndexConfig(shard_items=50)), ShardedIndex)
    assert not isinstance(build_index(x, ids, IndexConfig(shard_items=0)), ShardedIndex)


def test_exact_sharded_search_equals_one_exact_index(exact_pair):
    x, q, single, sharded = exact_pair
    assert isinstance(sharded, ShardedIndex) and sharded.kind == single.kind == "brute_force"
    assert [s["items"] for s in sharded.manifest["shards"]] == [251, 251, 250, 251]
    np.testing.assert_array_equal(sharded.item_ids, single.item_ids)
    for k in (10, 300, 1100):  # 300 > any shard; 1100 > the catalog: padded with -1 / -inf
        want_rows, want_scores = single.search(q, k)
        rows, scores = sharded.search(q, k)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
    assert ann_recall(sharded.search(q, 300)[0], exact_top_k(x, q, 300)) == 1.0  # numpy: ulps
    one, _ = sharded.search(q[7], 40)
    np.testing.assert_array_equal(one[0], single.search(q[7], 40)[0][0])
    # Excluded rows are global rows: the same ones as for the single index.
    exclude = [single.search(q[i], 60)[0][0][::2] for i in range(20)]
    rows, scores = sharded.search(q[:20], 50, exclude=exclude)
    want_rows, want_scores = single.search(q[:20], 50, exclude=exclude)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)


def test_ties_are_broken_by_row():
    x = np.tile(np.eye(4, dtype=np.float32), (3, 1))  # rows 0, 4, 8 are the same vector
    index = build_index(x, np.arange(12).astype(str), IndexConfig(k=5, shard_items=5))
    rows, _ = index.search(np.eye(4, dtype=np.float32), 3)
    np.testing.assert_array_equal(rows, [[0, 4, 8], [1, 5, 9], [2, 6, 10], [3, 7, 11]])


def test_tuned_sharded_recall_holds_against_exact_search():
    x, q, ids = clustered(24_000, 32, clusters=30, seed=2)
    cfg = IndexConfig(
        k=50, brute_force_max_items=1000, target_recall=0.9, shard_items=10_000, threads=1
    )
    sharded = build_index(x, ids, cfg)
    single = build_index(x, ids, cfg.model_copy(update={"shard_items": 0}))
    assert sharded.kind == "tree_ah" and len(sharded.shards) == 3
    assert sharded.manifest["num_leaves"] == 89  # ~sqrt(8000) per shard
    tuned = tune_index(sharded, x, q[:200], cfg)
    assert tuned["reached_target"] and tuned["leaves_to_search"] < 89
    exact = exact_top_k(x, q[200:], 50)
    found, _ = sharded.search(q[200:], 50)
    assert ann_recall(found, exact) >= cfg.target_recall - 0.03  # held-out queries
    # At the same search settings, fanning out to shards loses nothing vs one tree (which
    # searches a third as many leaves in all).
    params = SearchParams(tuned["leaves_to_search"], tuned["pre_reorder"])
    single_found, _ = single.search(q[200:], 50, params=params)
    assert ann_recall(found, exact) >= ann_recall(single_found, exact)


def test_sharded_index_round_trips_and_bad_manifests_are_named(exact_pair, tmp_path):
    _, q, _, sharded = exact_pair
    directory = sharded.save(tmp_path / "index")
    assert sorted(p.name for p in directory.iterdir()) == [
        "index_manifest.json", "shard-0", "shard-1", "shard-2", "shard-3"
    ]  # fmt: skip
    manifest = json.loads((directory / "index_manifest.json").read_text())
    assert [(s["path"], s["offset"]) for s in manifest["shards"]] == [
        ("shard-0", 0), ("shard-1", 251), ("shard-2", 502), ("shard-3", 752)
    ]  # fmt: skip
    loaded = ItemIndex.load(directory, threads=1)
    assert isinstance(loaded, ShardedIndex) and loaded.manifest == sharded.manifest
    np.testing.assert_array_equal(loaded.search(q, 20)[0], sharded.search(q, 20)[0])

    manifest["shards"][1]["offset"] = 250
    (directory / "index_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="shard-1 has 251 items at row 251"):
        ItemIndex.load(directory)
    manifest["shards"][1] = {**manifest["shards"][1], "path": "../elsewhere", "offset": 251}
    (directory / "index_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="'../elsewhere' is not shard-<i>"):
        ItemIndex.load(directory)


def test_serving_evaluation_and_recommend_use_a_sharded_index_unchanged(served_dir, tmp_path):
    from pipelines.evaluation import ann_section
    from pipelines.recommend import Recommender

    sharded_dir = tmp_path / "model"
    shutil.copytree(served_dir, sharded_dir)
    embeddings = np.load(sharded_dir / "item_embeddings.npy")
    build_index(embeddings, ITEMS, IndexConfig(threads=1, shard_items=2)).save(
        sharded_dir / "index"
    )
    one, many = Recommender(served_dir), Recommender(sharded_dir)
    assert len(many.model.index.shards) == 3 and list(many.model.item_ids) == ITEMS
    users = ["u1", "u2", "u3", "nobody"]
    for k in (1, 4):
        assert many.recommend(users, k=k) == one.recommend(users, k=k)
    assert many.recommend(users, exclude_seen=False) == one.recommend(users, exclude_seen=False)
    queries = np.random.default_rng(0).normal(size=(10, embeddings.shape[1])).astype(np.float32)
    ann = ann_section(many.model, queries)
    assert ann["shards"] == 3 and ann[f"recall@{len(ITEMS)}"] == 1.0
    assert ann_section(one.model, queries)["shards"] == 1
