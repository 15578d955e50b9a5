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
        None if weights is None else tf.constant(weights, tf.float32),
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


# -- the loss, pinned against an explicit float64 reference ------------------------------------

BATCH, MIXED, HARD, TEMPERATURE = 6, 3, 2, 0.5


def reference_loss(query, candidates, ids, probability, temperature, remove_accidental_hits,
                   hard_negatives, sample_weight=None, offset=None, mask=None):  # fmt: skip
    """Summed in-batch softmax cross-entropy, from the definitions, in float64.

    Query i's positive is candidate i. Its logits are q.c / T (+ offset) - log q (q clipped to
    [1e-6, 1]); a negative leaves the softmax when it is the positive's item (accidental hit)
    or masked out; with hard negatives only the top-k remaining negatives stay.
    """
    logits = np.asarray(query, np.float64) @ np.asarray(candidates, np.float64).T / temperature
    if offset is not None:
        logits = logits + offset
    if probability is not None:
        logits = logits - np.log(np.clip(probability, 1e-6, 1.0))
    n = len(query)
    ids = np.asarray(ids)
    excluded = np.zeros(logits.shape, bool)
    if remove_accidental_hits:
        excluded |= ids[None, :] == ids[:n, None]
    if mask is not None:
        excluded |= ~np.asarray(mask)
    total = 0.0
    for i in range(n):
        negatives = np.delete(logits[i], i)[~np.delete(excluded[i], i)]
        if hard_negatives is not None:
            negatives = np.sort(negatives)[::-1][:hard_negatives]
        row = np.append(logits[i, i], negatives)
        ce = row.max() + np.log(np.exp(row - row.max()).sum()) - logits[i, i]
        total += (1.0 if sample_weight is None else sample_weight[i]) * ce
    return total


def reference_probability(feature_set, ids, batch_size, mixed_negatives):
    """Relative chance of each candidate being drawn, scaled to a max of 1."""
    p = feature_set.catalog.set_index("item_id")["sampling_probability"]
    q = np.array(
        [batch_size * p[i] for i in ids[:batch_size]]
        + [mixed_negatives / len(p)] * (len(ids) - batch_size)
    )
    return q / q.max()


@pytest.fixture(scope="module")
def fixed_batch(feature_set):
    """6 queries, their positives and 3 extra negatives: one item is the positive of two
    queries, another is both a positive and an extra negative (accidental hits both ways)."""
    rng = np.random.default_rng(14)
    catalog = feature_set.catalog.sort_values("train_count")
    items = list(catalog["item_id"].iloc[np.linspace(0, len(catalog) - 1, 7).astype(int)])
    ids = [items[0], items[1], items[0], items[2], items[3], items[4], items[5], items[1], items[6]]
    mask = rng.random((BATCH, BATCH + MIXED)) > 0.3
    mask[np.arange(BATCH), np.arange(BATCH)] = True
    return {
        "query": rng.normal(size=(BATCH, 4)),
        "candidates": rng.normal(size=(BATCH + MIXED, 4)),
        "ids": np.array(ids),
        "weights": np.array([1.0, 0.0, 2.0, 0.5, 1.5, 1.0]),
        "offset": rng.normal(size=(BATCH, BATCH + MIXED)),
        "mask": mask,
    }


SWITCHES = [
    dict(
        logq_correction=logq,
        remove_accidental_hits=hits,
        mixed_negatives=mixed,
        hard_negatives=hard,
    )  # fmt: skip
    for logq in (False, True)
    for hits in (False, True)
    for mixed in (0, MIXED)
    for hard in (None, HARD)
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_loss_matches_the_reference_in_every_configuration(feature_set, fixed_batch, switches):
    cfg = TrainConfig(temperature=TEMPERATURE, item_age_bias=False, **switches)
    model = TwoTowerModel(feature_set, cfg)
    n = BATCH + switches["mixed_negatives"]
    query, ids = fixed_batch["query"], fixed_batch["ids"][:n]
    candidates = fixed_batch["candidates"][:n]
    offset, mask = fixed_batch["offset"][:, :n], fixed_batch["mask"][:, :n]
    probability = None
    if switches["logq_correction"]:
        probability = reference_probability(feature_set, ids, BATCH, switches["mixed_negatives"])
    for weights in (None, fixed_batch["weights"]):
        for adjusted in (False, True):
            got = float(model.retrieval_loss(
                tf.constant(query, tf.float32), tf.constant(candidates, tf.float32),
                tf.constant(ids),
                sample_weight=None if weights is None else tf.constant(weights, tf.float32),
                score_offset=tf.constant(offset, tf.float32) if adjusted else None,
                score_mask=tf.constant(mask) if adjusted else None,
            ))  # fmt: skip
            expected = reference_loss(
                query, candidates, ids, probability, TEMPERATURE,
                switches["remove_accidental_hits"], switches["hard_negatives"], weights,
                offset if adjusted else None, mask if adjusted else None,
            )  # fmt: skip
            assert got == pytest.approx(expected, rel=1e-5), (weights is not None, adjusted)


@pytest.mark.parametrize("item_age_bias", [False, True])
@pytest.mark.parametrize("weighting", ["none", "weight"])
def test_compute_loss_matches_the_reference_on_a_batch(feature_set, batch, item_age_bias,
                                                       weighting):  # fmt: skip
    from tfrs_models.towers import AGE_HALF_LIVES_DAYS
    from tfrs_models.train import build_model

    cfg = TrainConfig(item_age_bias=item_age_bias, weighting=weighting, hard_negatives=8,
                      embedding_dim=16)  # fmt: skip
    model = build_model(feature_set, cfg)
    ids = batch["item_id"].numpy().astype(str)
    n = len(ids)
    offset = mask = None
    if item_age_bias:
        age_weights = np.array([2.0, 1.0, -0.5, 0.25])
        model.query_tower.age_weights.assign(age_weights)
        age = (
            model.query_tower.days(batch).numpy()[:, None].astype(np.float64)
            - model.item_tower.created(batch["item_id"]).numpy()[None, :]
        )
        decays = 2.0 ** (-np.maximum(age, 0.0)[..., None] / np.array(AGE_HALF_LIVES_DAYS))
        offset = decays @ age_weights
        mask = (age >= 0) | np.eye(n, dtype=bool)
    weights = None
    if weighting == "weight":
        weights = np.maximum(batch["weight"].numpy().astype(np.float64), 0.0)
        weights = weights / weights.mean()
    query = model.query_tower(batch, with_age=False).numpy()
    candidates = model.item_tower(batch["item_id"], with_age=False).numpy()
    expected = reference_loss(
        query, candidates, ids, reference_probability(feature_set, ids, n, 0), cfg.temperature,
        True, 8, weights, offset, mask,
    )  # fmt: skip
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_in_batch_softmax_is_the_tfrs_retrieval_task_on_logits(fixed_batch, switches):
    import tensorflow_recommenders as tfrs

    from tfrs_models.loss import InBatchSoftmax

    n = BATCH + switches["mixed_negatives"]
    query = tf.constant(fixed_batch["query"], tf.float32)
    candidates = tf.constant(fixed_batch["candidates"][:n], tf.float32)
    ids = tf.constant(fixed_batch["ids"][:n])
    inputs = {
        "sample_weight": tf.constant(fixed_batch["weights"], tf.float32),
        "candidate_sampling_probability": tf.linspace(0.1, 1.0, n)
        if switches["logq_correction"]
        else None,
        "candidate_ids": ids,
        "score_mask": tf.constant(fixed_batch["mask"][:, :n]),
    }
    task = tfrs.tasks.Retrieval(
        temperature=TEMPERATURE,
        remove_accidental_hits=switches["remove_accidental_hits"],
        num_hard_negatives=switches["hard_negatives"],
    )
    softmax = InBatchSoftmax(switches["remove_accidental_hits"], switches["hard_negatives"])
    logits = tf.linalg.matmul(query, candidates, transpose_b=True) / TEMPERATURE
    expected = task(query, candidates, compute_metrics=False, compute_batch_metrics=False, **inputs)
    assert float(softmax(logits, **inputs)) == float(expected)


def test_in_batch_softmax_asks_for_ids_to_remove_accidental_hits():
    from tfrs_models.loss import InBatchSoftmax

    with pytest.raises(ValueError, match="candidate_ids"):
        InBatchSoftmax(remove_accidental_hits=True)(tf.zeros([2, 2]))
