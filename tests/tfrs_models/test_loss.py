"""Each loss switch changes the in-batch softmax loss the way it should."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from tfrs_models.model import TwoTowerModel


def loss(feature_set, query, candidates, ids, weights=None, **switches):
    """Summed loss with every switch off (temperature 1) except those given."""
    settings = {"remove_accidental_hits": False, "logq_correction": False, "temperature": 1.0}
    cfg = TrainConfig(**{**settings, **switches})
    model = TwoTowerModel(feature_set, cfg)
    return float(model.retrieval_loss(
        tf.constant(query, tf.float32), tf.constant(candidates, tf.float32), tf.constant(ids),
        tf.constant(len(query)), None if weights is None else tf.constant(weights, tf.float32),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def popular_and_rare(feature_set):
    catalog = feature_set.catalog.sort_values("train_count")
    return catalog["item_id"].iloc[-1], catalog["item_id"].iloc[0]


def test_logq_correction_penalises_popular_candidates(feature_set, popular_and_rare):
    popular, rare = popular_and_rare
    same = np.ones((2, 4)) / 2.0  # every score equal: only the correction separates them
    ids = [popular, rare]  # query 0's positive is the popular item, query 1's the rare one
    plain = loss(feature_set, same, same, ids, weights=[1, 0])
    assert plain == pytest.approx(np.log(2))
    popular_positive = loss(feature_set, same, same, ids, weights=[1, 0], logq_correction=True)
    rare_positive = loss(feature_set, same, same, ids, weights=[0, 1], logq_correction=True)
    # logits - log q: the popular item's logit drops, so as the positive it costs more and as
    # a negative it costs less than without the correction.
    assert popular_positive > plain > rare_positive


def test_lower_temperature_lowers_the_loss_of_well_separated_pairs(feature_set, popular_and_rare):
    a, b = popular_and_rare
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    warm = loss(feature_set, q, q, [a, b], temperature=1.0)
    cold = loss(feature_set, q, q, [a, b], temperature=0.1)
    assert cold < warm


def test_accidental_hits_are_not_counted_as_negatives(feature_set, popular_and_rare):
    a, _ = popular_and_rare
    q = np.eye(3)[:2]
    candidates = np.array([[1.0, 0, 0], [1.0, 0, 0]])  # both queries' positive is the same item
    kept = loss(feature_set, q, candidates, [a, a])
    removed = loss(feature_set, q, candidates, [a, a], remove_accidental_hits=True)
    assert removed < kept


def test_mixed_negatives_add_candidates_to_the_softmax(feature_set, popular_and_rare):
    a, b = popular_and_rare
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    extra = np.vstack([q, [[0.6, 0.8], [0.8, 0.6]]])
    items = list(feature_set.catalog["item_id"].iloc[5:7])
    in_batch = loss(feature_set, q, q, [a, b])
    mixed = loss(feature_set, q, extra, [a, b, *items], mixed_negatives=2)
    assert mixed > in_batch


def test_hard_negative_mining_keeps_only_the_hardest(feature_set):
    ids = list(feature_set.catalog["item_id"].iloc[:4])
    q = np.eye(4)
    candidates = np.eye(4) + 0.3
    full = loss(feature_set, q, candidates, ids)
    hard = loss(feature_set, q, candidates, ids, hard_negatives=1)
    assert hard < full


def test_candidate_probability_scales_and_mixes(feature_set, popular_and_rare):
    popular, rare = popular_and_rare
    model = TwoTowerModel(feature_set, TrainConfig(mixed_negatives=2))
    q = model.candidate_probability(
        tf.constant([popular, rare, rare, popular]), tf.constant(2)
    ).numpy()
    catalog = feature_set.catalog.set_index("item_id")["sampling_probability"]
    assert q.max() == pytest.approx(1.0)
    assert q[0] / q[1] == pytest.approx(catalog[popular] / catalog[rare], rel=1e-5)
    uniform = 2 / len(catalog)
    assert q[2] / q[0] == pytest.approx(uniform / (2 * catalog[popular]), rel=1e-5)


def test_item_age_bias_scores_exactly_and_exports_factored(feature_set, batch):
    from tfrs_models.data import load_eval_queries
    from tfrs_models.towers import AGE_HALF_LIVES_DAYS
    from tfrs_models.train import build_model

    def age_decays(age):  # the closed form, in float64
        return 2.0 ** (
            -np.maximum(np.asarray(age, np.float64), 0.0)[..., None] / AGE_HALF_LIVES_DAYS
        )

    cfg = TrainConfig(item_age_bias=True, item_bias=False, embedding_dim=16, temperature=0.5)
    model = build_model(feature_set, cfg)
    model.query_tower.age_weights.assign([2.0, 1.0, -0.5, 0.25])
    # Training: the pairwise bonus follows the age at query time; later items are masked out.
    bonus, mask = model.age_bonus(batch, batch["item_id"])
    age = model.query_tower.days(batch)[:, None] - model.item_tower.created(batch["item_id"])
    expected = age_decays(age) @ np.array([2.0, 1.0, -0.5, 0.25])
    np.testing.assert_allclose(bonus, expected, rtol=1e-5)
    np.testing.assert_array_equal(mask, (age.numpy() >= 0) | np.eye(64, dtype=bool))
    assert np.diag(age.numpy()).min() >= 0  # a positive existed when it was chosen
    plain = float(model.compute_loss(batch))
    model.query_tower.age_weights.assign([0.0, 0.0, 0.0, 0.0])
    assert float(model.compute_loss(batch)) != pytest.approx(plain)
    model.query_tower.age_weights.assign([2.0, 1.0, -0.5, 0.25])
    # Export: query . item / T = cos / T + the bonus at the query's time (t >= t0).
    queries = load_eval_queries(feature_set, limit=16)
    q = model.query_tower(queries).numpy()
    ids = tf.constant(feature_set.catalog["item_id"].to_numpy(str))
    items = model.item_tower(ids).numpy()
    assert q.shape[1] == items.shape[1] == 16 + 4
    created = np.minimum(model.item_tower.created(ids).numpy(), 0.0)  # after t0: as at t0
    age = model.query_tower.days(queries).numpy()[:, None] - created[None, :]
    assert age.min() >= 0
    exact = q[:, :16] @ items[:, :16].T / 0.5 + age_decays(age) @ [2.0, 1.0, -0.5, 0.25]
    np.testing.assert_allclose(q @ items.T / 0.5, exact, rtol=1e-4, atol=1e-4)
