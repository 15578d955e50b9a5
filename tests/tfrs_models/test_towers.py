"""Tower shapes, unit norms, OOV ids and content for items never trained on."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from tfrs_models.towers import AGE_HALF_LIVES_DAYS, _masked_mean
from tfrs_models.train import build_model


@pytest.fixture(scope="module")
def model(feature_set):
    return build_model(feature_set, TrainConfig(embedding_dim=32))


def score_dims(cfg: TrainConfig) -> int:
    """Dimensions the towers add after the d unit-norm ones (item bias, age decays)."""
    return int(cfg.item_bias) + (len(AGE_HALF_LIVES_DAYS) if cfg.item_age_bias else 0)


def test_towers_return_unit_vectors_of_dimension_d(model, batch):
    queries = model.query_tower(batch).numpy()
    items = model.item_tower(batch["item_id"]).numpy()
    extra = score_dims(model.cfg)
    assert queries.shape == (64, 32 + extra) and items.shape == (64, 32 + extra)
    np.testing.assert_allclose(np.linalg.norm(queries[:, :32], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items[:, :32], axis=1), 1.0, rtol=1e-5)


def test_unseen_users_get_vectors_from_hash_buckets_and_features(model, batch, feature_set):
    features = dict(batch)
    features["user_id"] = tf.constant([f"never-seen-{i}" for i in range(64)])
    vectors = model.query_tower(features).numpy()
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :32], axis=1), 1.0, rtol=1e-5)
    lookup = model.query_tower.user_lookup(features["user_id"]).numpy()
    assert (lookup < feature_set.oov_buckets).all()  # OOV buckets come first
    assert len(set(lookup.tolist())) > 1  # spread over several OOV buckets


def test_item_never_trained_on_gets_its_vector_from_content(model, feature_set):
    catalog = feature_set.catalog
    cold = catalog.loc[catalog["train_count"] == 0, "item_id"].iloc[0]
    assert cold not in set(feature_set.vocab["item_id"])
    tower = model.item_tower
    with_content = tower(tf.constant([cold]), with_age=False).numpy()[:, :32]
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
        use_user_id=True,
        use_history=False,
        use_content=False,
        use_user_features=False,
        item_bias=False,
        embedding_dim=16,
    )
    model = build_model(feature_set, cfg)
    assert model.query_tower(batch, with_age=False).shape == (64, 16)
    names = {v.name for v in model.variables}
    assert not any("title_token" in n or "genre" in n or "hour" in n for n in names)


def test_without_the_user_id_the_query_ignores_it(feature_set, batch):
    model = build_model(
        feature_set, TrainConfig(use_user_id=False, item_age_bias=False, embedding_dim=16)
    )
    assert not any("user_id_embedding" in v.name for v in model.variables)
    renamed = dict(batch, user_id=tf.constant([f"someone-else-{i}" for i in range(64)]))
    np.testing.assert_allclose(model.query_tower(batch), model.query_tower(renamed), atol=1e-6)
    attention = build_model(
        feature_set,
        TrainConfig(
            use_user_id=False, history_pooling="attention", item_bias=False, embedding_dim=16
        ),
    )
    assert attention.query_tower(batch, with_age=False).shape == (64, 16)


def test_item_bias_adds_a_score_dimension_outside_the_normalisation(feature_set, batch):
    cfg = TrainConfig(item_bias=True, item_age_bias=False, embedding_dim=16, temperature=0.25)
    model = build_model(feature_set, cfg)
    tower = model.item_tower
    tower.id_bias.embeddings.assign(
        np.random.default_rng(0).normal(size=tower.id_bias.embeddings.shape)
    )
    kernel, offset = tower.content_bias.weights
    kernel.assign(tf.zeros_like(kernel))
    offset.assign([0.5])
    queries = model.query_tower(batch).numpy()
    items = tower(batch["item_id"]).numpy()
    assert queries.shape == (64, 17) and items.shape == (64, 17)
    np.testing.assert_allclose(np.linalg.norm(queries[:, :16], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items[:, :16], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(queries[:, 16], 0.25)
    index = tower.id_lookup(batch["item_id"])
    bias = tower.id_bias(index)[:, 0].numpy()
    np.testing.assert_allclose(items[:, 16], bias + 0.5, atol=1e-6)  # id row + content part
    cos = queries[:, :16] @ items[:, :16].T
    np.testing.assert_allclose(
        queries @ items.T / 0.25, cos / 0.25 + items[None, :, 16], rtol=1e-4, atol=1e-4
    )


def test_item_id_dropout_makes_training_candidates_look_cold(feature_set, batch):
    model = build_model(
        feature_set,
        TrainConfig(item_id_dropout=0.999, item_age_bias=False, item_bias=False, embedding_dim=16),
    )
    tower = model.item_tower
    ids = batch["item_id"]
    served = tower(ids).numpy()
    np.testing.assert_allclose(served, tower(ids, training=False).numpy())
    dropped = tower(ids, training=True).numpy()
    assert not np.allclose(served, dropped, atol=1e-3)
    # A dropped warm item gets exactly what an unseen id with its content (popularity 0) gets.
    row = tower.catalog_row.lookup(ids)
    parts = [
        tower.id_embedding(tower.id_lookup(tf.constant([f"unseen-{i}" for i in range(64)]))),
        tower.id_embedding(tf.strings.to_hash_bucket_fast(ids, feature_set.oov_buckets)),
    ]
    content = [
        _masked_mean(tower.token_embedding, tf.gather(tower.tokens, row)),
        _masked_mean(tower.genre_embedding, tf.gather(tower.genres, row)),
        tower.popularity_embedding(tf.zeros_like(row, dtype=tf.int32)),
    ]
    cold_like = tf.math.l2_normalize(tower.mlp(tf.concat([parts[1], *content], -1)), -1).numpy()
    matches = np.isclose(dropped, cold_like, atol=1e-5).all(axis=1).mean()
    assert matches > 0.9
    # Cold items themselves are already OOV with popularity 0: dropout leaves them unchanged.
    catalog = feature_set.catalog
    cold = tf.constant(catalog.loc[catalog["train_count"] == 0, "item_id"].iloc[:8].to_numpy(str))
    np.testing.assert_allclose(tower(cold, training=True), tower(cold), atol=1e-5)


def _history_query(days_since_last: float) -> dict[str, tf.Tensor]:
    """One user with three history items 1, 3 and 10 days apart, queried later."""
    t_last = 1_500_000_000
    history_t = [t_last, t_last - 2 * 86_400, t_last - 9 * 86_400]
    return {
        "timestamp": tf.constant([t_last + int(days_since_last * 86_400)], tf.int64),
        "history_timestamps": tf.constant([history_t + [0]], tf.int64),
        "history_item_ids": tf.constant([["a", "b", "c", ""]]),
    }


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_history_of_a_user_dormant_for_ten_years_keeps_its_recency_weights(feature_set, pooling):
    cfg = TrainConfig(embedding_dim=16, history_pooling=pooling, recency_half_life_days=7.0)
    model = build_model(feature_set, cfg)
    context = None if pooling == "mean" else tf.ones([1, 4])
    if context is not None:
        model.query_tower.attention_query.build([None, 4])
    pooled = {
        days: model.query_tower.encode_history(_history_query(days), context).numpy()
        for days in (0.5, 10 * 365.25)
    }
    # Shifting every timestamp by ten years changes nothing: weights depend on age differences.
    np.testing.assert_allclose(pooled[0.5], pooled[10 * 365.25], rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(pooled[10 * 365.25]) > 0.0
    if pooling == "mean":
        # Weights 2^-(age / 7) over ages 0, 2, 9 days, normalised; the padding slot gets none.
        vectors = model.item_tower.id_vectors(tf.constant(["a", "b", "c"])).numpy()
        raw = 2.0 ** (-np.array([0.0, 2.0, 9.0]) / 7.0)
        np.testing.assert_allclose(pooled[10 * 365.25][0], (raw / raw.sum()) @ vectors, rtol=1e-4)


def test_history_dropout_hides_items_in_training_only(feature_set, batch):
    model = build_model(feature_set, TrainConfig(embedding_dim=16, history_dropout=0.5))
    tower = model.query_tower
    serving = tower.encode_history(batch, None).numpy()
    np.testing.assert_array_equal(serving, tower.encode_history(batch, None).numpy())
    tf.random.set_seed(0)
    trained = tower.encode_history(batch, None, training=True).numpy()
    has_history = (batch["history_item_ids"].numpy() != b"").sum(axis=1) > 1
    assert has_history.any()
    changed = ~np.isclose(trained, serving, atol=1e-6).all(axis=1)
    assert changed[has_history].mean() > 0.5  # most multi-item histories lost an item
