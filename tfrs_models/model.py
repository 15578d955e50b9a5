"""The two-tower retrieval model: towers + `tfrs.tasks.Retrieval` (in-batch softmax).

Loss switches (all in `TrainConfig`): temperature; logQ correction with the feature job's
sampling probabilities; removal of accidental hits (a batch negative that is the positive
item); mixed negatives (extra uniformly sampled catalog items as negatives); hard-negative
mining (keep only the top-k negatives per query).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from pipelines.config import TrainConfig
from tfrs_models.data import FeatureSet, catalog_arrays
from tfrs_models.towers import ItemTower, QueryTower


class TwoTowerModel(tfrs.models.Model):
    """Query tower + item tower trained with an in-batch softmax retrieval task."""

    def __init__(self, features: FeatureSet, cfg: TrainConfig):
        super().__init__(name="two_tower")
        self.cfg = cfg
        catalog = catalog_arrays(features)
        self.item_tower = ItemTower(
            features.vocab["item_id"], features.oov_buckets, catalog,
            len(features.vocab["title_token"]), len(features.vocab["genre"]), cfg,
        )  # fmt: skip
        self.query_tower = QueryTower(
            features.vocab["user_id"],
            features.oov_buckets,
            features.user_features,
            self.item_tower,
            cfg,
        )
        self.task = tfrs.tasks.Retrieval(
            temperature=cfg.temperature,
            remove_accidental_hits=cfg.remove_accidental_hits,
            num_hard_negatives=cfg.hard_negatives,
        )
        self.catalog_ids = tf.constant(catalog["item_id"])
        probability = catalog["sampling_probability"]
        self.sampling_probability = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.catalog_ids, tf.constant(probability)),
            default_value=float(probability.min()),
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features)
        candidate_ids = features["item_id"]
        if self.cfg.mixed_negatives:
            sampled = tf.random.uniform(
                [self.cfg.mixed_negatives], 0, tf.shape(self.catalog_ids)[0], tf.int32
            )
            candidate_ids = tf.concat([candidate_ids, tf.gather(self.catalog_ids, sampled)], axis=0)
        candidates = self.item_tower(candidate_ids)
        return self.retrieval_loss(query, candidates, candidate_ids, tf.shape(query)[0])

    def retrieval_loss(
        self,
        query: tf.Tensor,
        candidates: tf.Tensor,
        candidate_ids: tf.Tensor,
        batch_size: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """In-batch softmax loss.

        Args:
            query: `[batch, d]` query vectors.
            candidates: `[batch + mixed_negatives, d]`; row i < batch is query i's positive.
            candidate_ids: `[batch + mixed_negatives]` item ids of the candidates.
            batch_size: number of queries (positives come first among candidates).
            sample_weight: optional `[batch]` weight of each query's term in the summed loss.
        """
        probability = None
        if self.cfg.logq_correction:
            probability = self.candidate_probability(candidate_ids, batch_size)
        return self.task(
            query, candidates,
            sample_weight=sample_weight,
            candidate_sampling_probability=probability,
            candidate_ids=candidate_ids if self.cfg.remove_accidental_hits else None,
            compute_metrics=False, compute_batch_metrics=False,
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
