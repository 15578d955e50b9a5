"""Training end to end on the small world: beats popularity, resumes, exports, warm-starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from tfrs_models.data import load_eval_queries
from tfrs_models.export import QUERY_INPUTS, load_query_tower
from tfrs_models.train import build_model, train_model
from tfrs_models.warm_start import embedding_rows, warm_start

pytestmark = pytest.mark.slow
CFG = TrainConfig(epochs=2, eval_sample=500)


@pytest.fixture(scope="module")
def trained(small_features, tmp_path_factory):
    # Four epochs: at temperature 0.2 recall still climbs after two (0.66-0.72 run to run there).
    cfg = CFG.model_copy(update={"epochs": 4})
    return train_model(
        small_features.features_dir, tmp_path_factory.mktemp("model"), cfg, progress=False
    )


def test_training_beats_popularity_on_the_eval_period(trained):
    m = trained.manifest
    assert m["eval_queries"] > 1000
    assert m["recall@100"] > 1.5 * m["popularity_recall@100"] > 0
    # Four epochs, or three when early stopping (patience 2) ends the run.
    assert len(m["curve"]) in (3, 4) and m["train_examples_per_second"] > 0
    assert (
        trained.model_dir
        and json.loads(open(f"{trained.model_dir}/train_manifest.json").read())["best_epoch"]
    )


def test_export_round_trip(trained, feature_set):
    serve = load_query_tower(trained.model_dir)
    queries = load_eval_queries(feature_set, limit=32)
    inputs = {name: queries[name] for name in (*QUERY_INPUTS, *feature_set.user_features)}
    exported = serve(**inputs)["embedding"].numpy()
    in_memory = trained.model.query_tower(inputs).numpy()
    np.testing.assert_allclose(exported, in_memory, atol=1e-5)
    # Histories of any length are accepted (no fixed H in the signature).
    short = dict(
        inputs,
        history_item_ids=inputs["history_item_ids"][:, :3],
        history_timestamps=inputs["history_timestamps"][:, :3],
    )
    assert serve(**short)["embedding"].shape == (32, in_memory.shape[1])
    ids = open(f"{trained.model_dir}/item_ids.txt").read().split()
    vectors = np.load(f"{trained.model_dir}/item_embeddings.npy", allow_pickle=False)
    assert len(ids) == len(feature_set.catalog) == len(vectors)
    np.testing.assert_allclose(
        vectors[:50], trained.model.item_tower(tf.constant(ids[:50])).numpy(), atol=1e-5
    )


def test_a_killed_run_resumes_from_its_last_checkpoint(small_features, tmp_path):
    first = train_model(
        small_features.features_dir, tmp_path, CFG.model_copy(update={"epochs": 1}), progress=False
    )
    assert first.manifest["epochs_run"] == 1 and (tmp_path / "checkpoints" / "checkpoint").is_file()
    second = train_model(small_features.features_dir, tmp_path, CFG, progress=False)
    assert second.manifest["resumed_from_epoch"] == 1
    assert second.manifest["epochs_run"] == 2
    assert [c["epoch"] for c in second.manifest["curve"]] == [2]


def test_embedding_rows_map_shared_ids_and_oov_buckets():
    new_rows, old_rows = embedding_rows(["a", "b", "c"], ["c", "x", "a"], old_oov=2, new_oov=2)
    assert list(zip(new_rows.tolist(), old_rows.tolist(), strict=True)) == [
        (0, 0),
        (1, 1),
        (2, 4),
        (4, 2),
    ]
    new_rows, old_rows = embedding_rows(["a"], ["a"], old_oov=2, new_oov=3)
    assert list(zip(new_rows.tolist(), old_rows.tolist(), strict=True)) == [
        (3, 2)
    ]  # buckets differ


def test_warm_start_copies_rows_of_shared_ids(trained, feature_set, tmp_path):
    import shutil

    # A "next day" vocabulary: one item gone, one new item first (the default query tower has
    # no user-id embedding, so the item table shows the row mapping).
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    items = feature_set.vocab["item_id"]
    (vocab_dir / "item_id.tsv").write_text("".join(f"{i}\t1\n" for i in ["brand-new", *items[1:]]))
    shutil.copyfile(f"{feature_set.directory}/vocab/user_id.tsv", vocab_dir / "user_id.tsv")
    fresh = build_model(feature_set, CFG)
    before = fresh.item_tower.id_embedding.embeddings.numpy().copy()
    stats = warm_start(
        fresh, vocab_dir, feature_set.oov_buckets, trained.model_dir, feature_set.oov_buckets
    )
    after = fresh.item_tower.id_embedding.embeddings.numpy()
    old = trained.model.item_tower.id_embedding.embeddings.numpy()
    k = feature_set.oov_buckets
    # Rows of items present in both vocabularies are copied to their new positions...
    np.testing.assert_array_equal(after[k + 1 :], old[k + 1 :])
    # ...the new item keeps its fresh row, and the OOV buckets are copied.
    np.testing.assert_array_equal(after[k], before[k])
    np.testing.assert_array_equal(after[:k], old[:k])
    assert stats["item_id_rows_fresh"] == 1 and stats["variables_skipped"] == 0
    np.testing.assert_array_equal(
        fresh.item_tower.mlp.weights[0].numpy(), trained.model.item_tower.mlp.weights[0].numpy()
    )
