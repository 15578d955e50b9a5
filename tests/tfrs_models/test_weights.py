"""Interaction weights in training (`train.weighting`, `train.min_weight`): a weight scales its
example's loss term, a threshold drops low-weight train examples but never their history."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from pipelines.errors import ConfigError
from pipelines.formats.example_decoder import decode_example
from pipelines.formats.tfrecord import read_tfrecords
from tfrs_models.data import kept_examples, loss_weights, train_dataset
from tfrs_models.train import build_model

SMALL = {"embedding_dim": 16, "id_embedding_dim": 16, "hidden_units": 32}
# The query side of a train example: what a zero-weight row may change without effect.
QUERY_KEYS = ("user_id", "timestamp", "history_item_ids", "history_timestamps")


def with_weights(batch: dict, weights: np.ndarray) -> dict:
    return {**batch, "weight": tf.constant(weights, tf.float32)}


def shuffled_queries(batch: dict, rows: np.ndarray) -> dict:
    """The batch with the query features of `rows` rotated among those rows (items unchanged)."""
    order = np.arange(len(batch["item_id"]))
    order[rows] = np.roll(rows, 1)
    return {k: tf.gather(v, order) if k in QUERY_KEYS else v for k, v in batch.items()}


@pytest.fixture(scope="module")
def weighted_model(feature_set):
    return build_model(feature_set, TrainConfig(weighting="weight", **SMALL))


def test_weight_zero_examples_contribute_nothing_to_the_loss(weighted_model, batch):
    n = len(batch["item_id"])
    weights = np.where(np.arange(n) % 2 == 0, 0.0, 4.0)
    zero, nonzero = np.flatnonzero(weights == 0), np.flatnonzero(weights > 0)
    base = with_weights(batch, weights)
    loss = float(weighted_model.compute_loss(base))
    # Another query in a zero-weight row changes nothing (its items stay in-batch negatives)...
    moved = float(weighted_model.compute_loss(shuffled_queries(base, zero)))
    assert moved == pytest.approx(loss, rel=1e-6)
    # ...while in a weighted row it does.
    assert float(weighted_model.compute_loss(shuffled_queries(base, nonzero))) != pytest.approx(
        loss, rel=1e-4
    )


def test_weights_are_scaled_to_a_mean_of_one_and_ignored_without_weighting(
    feature_set, weighted_model, batch
):
    n = len(batch["item_id"])
    uniform = float(weighted_model.compute_loss(with_weights(batch, np.full(n, 5.0))))
    unweighted = build_model(feature_set, TrainConfig(**SMALL))
    unweighted.set_weights(weighted_model.get_weights())
    # Equal weights, whatever their value, give the unweighted loss (mean 1 per batch)...
    assert uniform == pytest.approx(float(unweighted.compute_loss(batch)), rel=1e-5)
    # ...and weighting "none" ignores the weights.
    skewed = with_weights(batch, np.linspace(0.0, 9.0, n))
    assert float(unweighted.compute_loss(skewed)) == pytest.approx(
        float(unweighted.compute_loss(batch)), rel=1e-6
    )
    assert float(weighted_model.compute_loss(skewed)) != pytest.approx(uniform, rel=1e-4)
    np.testing.assert_allclose(loss_weights(tf.constant([-2.0, 0.0, 1.0, 3.0])), [0, 0, 1, 3])
    np.testing.assert_array_equal(loss_weights(tf.zeros([3])), [0, 0, 0])


def train_records(feature_set) -> list[dict]:
    return [decode_example(r) for f in feature_set.files("train") for r in read_tfrecords(f)]


def test_a_threshold_drops_low_weights_from_training_but_not_from_histories(feature_set):
    # The small world weighs a view 1.0 and a purchase 3.0.
    records = train_records(feature_set)
    weights = np.array([r["weight"][0] for r in records])
    assert set(weights.tolist()) == {1.0, 3.0}
    cfg = TrainConfig(weighting="threshold", min_weight=2.0, batch_size=64)
    assert kept_examples(feature_set, cfg) == int((weights >= 2.0).sum())
    assert kept_examples(feature_set, TrainConfig()) == len(records)
    read = list(train_dataset(feature_set, cfg, shuffle=False))
    assert len(read) == int((weights >= 2.0).sum()) // 64
    assert all(float(tf.reduce_min(b["weight"])) == 3.0 for b in read)
    # Histories still hold the dropped (low-weight) interactions: the model sees what the user
    # viewed, as serving does, and learns only to predict purchases.
    dropped = {
        (r["user_id"][0], t) for r, w in zip(records, weights, strict=True) if w < 2.0
        for t in r["timestamp"]
    }  # fmt: skip
    in_history = sum(
        (user, int(t)) in dropped
        for b in read
        for user, times in zip(b["user_id"].numpy(), b["history_timestamps"].numpy(), strict=True)
        for t in times
        if t
    )
    assert in_history > 0


def test_min_weight_must_have_a_use():
    with pytest.raises(ValueError, match="needs train.min_weight"):
        TrainConfig(weighting="threshold")
    with pytest.raises(ValueError, match="ignored with train.weighting 'none'"):
        TrainConfig(min_weight=4.0)
    from pipelines.config import load_config

    with pytest.raises(ConfigError, match="train.min_weight"):
        load_config(env={}, overrides={"train": {"min_weight": 4.0}})
    assert TrainConfig(weighting="weight", min_weight=4.0).min_weight == 4.0
