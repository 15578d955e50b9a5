"""The two-tower retrieval model: towers + an in-batch softmax loss (`tfrs_models.loss`).

Logits are query . candidate / temperature, plus with `item_age_bias` the exact novelty bonus of
each (query, candidate) pair, with candidates created after their query masked out. Loss
switches (all in `TrainConfig`): temperature; logQ correction with the feature job's sampling
probabilities; removal of accidental hits (a batch negative that is the positive item); mixed
negatives (extra uniformly sampled catalog items as negatives); hard-negative mining (keep only
the top-k negatives per query); interaction weights as each query's sample weight
(`weighting: "weight"`).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from pipelines.config import TrainConfig
from tfrs_models.data import FeatureSet, catalog_arrays, loss_weights
from tfrs_models.loss import InBatchSoftmax
from tfrs_models.towers import ItemTower, QueryTower, age_decays


@tf.function(jit_compile=True)
def _pairwise_age_bonus(
    query_days: tf.Tensor, created_days: tf.Tensor, weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """`TwoTowerModel.age_bonus` from `[batch]` query days, `[candidates]` creation days and
    the `[K]` weights, compiled by XLA into one pass over the `[batch, candidates]` pairs.

    Unfused, TensorFlow writes the `[batch, candidates, K]` decays to memory and reads them back
    for the weighted sum, the mask and the gradient: on CPU that cost about as much as the
    rest of the loss.
    """
    age = query_days[:, None] - created_days[None, :]
    bonus = tf.reduce_sum(age_decays(age) * weights, axis=-1)
    positive = tf.eye(tf.shape(age)[0], tf.shape(age)[1]) > 0
    return bonus, (age >= 0.0) | positive


class TwoTowerModel(tfrs.models.Model):
    """Query tower + item tower trained with an in-batch softmax over their scores."""

    def __init__(self, features: FeatureSet, cfg: TrainConfig):
        super().__init__(name="two_tower")
        self.cfg = cfg
        catalog = catalog_arrays(features)
        reference_time = None
        if cfg.item_age_bias:
            # t0 of the exported age dimensions: the end of the training data. With per-user
            # holdout cuts users train up to the window's end (eval_start is only the earliest
            # cut, years back on long-horizon data, which would flatten every item's age).
            window = features.manifest.get("window_epoch_s") or {}
            design = (features.manifest.get("split") or {}).get("design", "temporal")
            key = "window_end" if design == "holdout" else "eval_start"
            reference_time = window.get(key) or window.get("window_end")
            if reference_time is None:
                raise ValueError("item_age_bias needs the features' window_epoch_s")
        self.item_tower = ItemTower(
            features.vocab["item_id"], features.oov_buckets, catalog,
            len(features.vocab["title_token"]), len(features.vocab["genre"]), cfg,
            reference_time=reference_time,
        )  # fmt: skip
        self.query_tower = QueryTower(
            features.vocab["user_id"],
            features.oov_buckets,
            features.user_features,
            self.item_tower,
            cfg,
            reference_time=reference_time,
        )
        self.softmax = InBatchSoftmax(cfg.remove_accidental_hits, cfg.hard_negatives)
        self.catalog_ids = tf.constant(catalog["item_id"])
        probability = catalog["sampling_probability"]
        self.sampling_probability = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.catalog_ids, tf.constant(probability)),
            default_value=float(probability.min()),
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The loss of one training batch (`retrieval_loss` over the towers' vectors).

        Args:
            features: a `tfrs_models.data.train_dataset` batch (query features, `item_id`
                `[batch]` positives, `weight` `[batch]`).
            training: towers apply their training-only dropouts.

        Returns:
            Scalar float32 summed loss.
        """
        query = self.query_tower(features, with_age=False, training=training)
        candidate_ids = features["item_id"]
        if self.cfg.mixed_negatives:
            sampled = tf.random.uniform(
                [self.cfg.mixed_negatives], 0, tf.shape(self.catalog_ids)[0], tf.int32
            )
            candidate_ids = tf.concat([candidate_ids, tf.gather(self.catalog_ids, sampled)], axis=0)
        candidates = self.item_tower(candidate_ids, training=training, with_age=False)
        offset = mask = None
        if self.cfg.item_age_bias:
            offset, mask = self.age_bonus(features, candidate_ids)
        weights = loss_weights(features["weight"]) if self.cfg.weighting == "weight" else None
        return self.retrieval_loss(
            query, candidates, candidate_ids, sample_weight=weights, score_offset=offset,
            score_mask=mask,
        )  # fmt: skip

    def age_bonus(
        self, features: dict[str, tf.Tensor], candidate_ids: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Exact novelty bonus of every (query, candidate) pair and the availability mask.

        Returns:
            `[batch, candidates]` bonus sum_k w_k 2^(-age / h_k), and a mask that is False for
            candidates created after the query (not available then; a positive is always kept).
        """
        return _pairwise_age_bonus(
            self.query_tower.days(features),
            self.item_tower.created(candidate_ids),
            self.query_tower.age_weights,
        )

    def retrieval_loss(
        self,
        query: tf.Tensor,
        candidates: tf.Tensor,
        candidate_ids: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
        score_offset: tf.Tensor | None = None,
        score_mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """In-batch softmax loss of the queries against their positives and extra negatives.

        Args:
            query: `[batch, d]` query vectors.
            candidates: `[batch + mixed_negatives, d]`; row i < batch is query i's positive.
            candidate_ids: `[batch + mixed_negatives]` item ids of the candidates.
            sample_weight: optional `[batch]` weight of each query's term in the summed loss.
            score_offset: optional `[batch, candidates]` added to the logits (after temperature).
            score_mask: optional `[batch, candidates]` bool, False = not a candidate.

        Returns:
            Scalar float32: the summed cross-entropy (`InBatchSoftmax`).
        """
        logits = tf.linalg.matmul(query, candidates, transpose_b=True) / self.cfg.temperature
        if score_offset is not None:
            logits += score_offset
        probability = None
        if self.cfg.logq_correction:
            probability = self.candidate_probability(candidate_ids, tf.shape(query)[0])
        if self.cfg.remove_accidental_hits:
            # Accidental hits compare every (positive, candidate) pair of ids: 64-bit
            # fingerprints instead of the strings cut that from ~20 to ~2 ms at batch 1,024. Two
            # ids share a fingerprint with probability ~2^-62: at worst one negative dropped.
            candidate_ids = tf.strings.to_hash_bucket_fast(candidate_ids, 2**62)
        return self.softmax(
            logits, sample_weight=sample_weight, candidate_sampling_probability=probability,
            candidate_ids=candidate_ids, score_mask=score_mask,
        )  # fmt: skip

    def candidate_probability(self, candidate_ids: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
        """Relative chance of each candidate being in the candidate set: `[num_candidates]`.

        In-batch candidates are drawn with the data (batch_size * p_i); mixed negatives
        uniformly (mixed_negatives / catalog size). Scores get `- log q`, which is unchanged
        by a common factor, so q is divided by its max to stay inside TFRS' clip [1e-6, 1].
        """
        in_batch = tf.cast(batch_size, tf.float32) * self.sampling_probability.lookup(
            candidate_ids[:batch_size]
        )
        extra = tf.shape(candidate_ids)[0] - batch_size
        uniform = tf.fill(
            [extra], self.cfg.mixed_negatives / tf.cast(tf.shape(self.catalog_ids)[0], tf.float32)
        )
        q = tf.concat([in_batch, uniform], axis=0)
        return q / tf.reduce_max(q)
