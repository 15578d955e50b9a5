"""Tower shapes, unit norms, OOV ids and content for items never trained on."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from tfrs_models.train import build_model


@pytest.fixture(scope="module")
def model(feature_set):
    return build_model(feature_set, TrainConfig(embedding_dim=32))


def test_towers_return_unit_vectors_of_dimension_d(model, batch):
    queries = model.query_tower(batch).numpy()
    items = model.item_tower(batch["item_id"]).numpy()
    assert queries.shape == (64, 32) and items.shape == (64, 32)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)


def test_unseen_users_get_vectors_from_hash_buckets_and_features(model, batch, feature_set):
    features = dict(batch)
    features["user_id"] = tf.constant([f"never-seen-{i}" for i in range(64)])
    vectors = model.query_tower(features).numpy()
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    lookup = model.query_tower.user_lookup(features["user_id"]).numpy()
    assert (lookup < feature_set.oov_buckets).all()  # OOV buckets come first
    assert len(set(lookup.tolist())) > 1  # spread over several OOV buckets


def test_item_never_trained_on_gets_its_vector_from_content(model, feature_set):
    catalog = feature_set.catalog
    cold = catalog.loc[catalog["train_count"] == 0, "item_id"].iloc[0]
    assert cold not in set(feature_set.vocab["item_id"])
    tower = model.item_tower
    with_content = tower(tf.constant([cold])).numpy()
    ids = tower.id_vectors(tf.constant([cold]))
    # Same OOV id vector, but the catalog's title/genre/popularity content differs from an
    # unknown id that has no catalog row.
    without_content = tower.mlp(tf.concat([
        ids, tf.zeros([1, 32]), tf.zeros([1, 16]), tower.popularity_embedding(tf.constant([0])),
    ], axis=-1))  # fmt: skip
    without_content = tf.math.l2_normalize(without_content, axis=-1).numpy()
    assert not np.allclose(with_content, without_content)
    row = catalog.index[catalog["item_id"] == cold][0]
    assert tower.catalog_row.lookup(tf.constant([cold])).numpy()[0] == row


def test_id_only_configuration_uses_ids_alone(feature_set, batch):
    cfg = TrainConfig(
        use_history=False, use_content=False, use_user_features=False, embedding_dim=16
    )
    model = build_model(feature_set, cfg)
    assert model.query_tower(batch).shape == (64, 16)
    names = {v.name for v in model.variables}
    assert not any("title_token" in n or "genre" in n or "hour" in n for n in names)
