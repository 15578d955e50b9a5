"""The retrieval loss: softmax cross-entropy over a `[queries, candidates]` logit matrix.

`InBatchSoftmax` is the loss half of `tfrs.tasks.Retrieval`, composed from the TFRS loss layers
in the task's order, taking logits where the task takes embeddings. The task scores candidates
itself (query . candidate / temperature) and has no per-(query, candidate) term, which the
item-age bonus is: sum_k w_k 2^(-age / h_k) of the item's age at each query's time. That bonus
factors into query and item dimensions only around one reference time, with factors 2^(±days /
h_k) that overflow float32 beyond ~64 days at h = 0.5 days, so training adds it exactly to
the logits (`TwoTowerModel.retrieval_loss`) and every configuration goes through this layer.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


class InBatchSoftmax(tf.keras.layers.Layer):
    """Summed softmax cross-entropy of each query's positive among the candidates.

    Steps, in `tfrs.tasks.Retrieval`'s order: subtract log sampling probabilities (logQ
    correction), drop accidental hits (a negative that is the query's positive item), drop
    masked-out candidates, keep the hardest negatives, then categorical cross-entropy summed
    over queries (each term times its sample weight).

    Args:
        remove_accidental_hits: drop negatives whose id equals the positive's id.
        num_hard_negatives: keep only this many highest-scored negatives per query (None: all).
    """

    def __init__(
        self, remove_accidental_hits: bool = False, num_hard_negatives: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.remove_accidental_hits = remove_accidental_hits
        self.correct_sampling = tfrs.layers.loss.SamplingProbablityCorrection()
        self.accidental_hits = tfrs.layers.loss.RemoveAccidentalHits()
        self.hard_negatives = (
            None
            if num_hard_negatives is None
            else tfrs.layers.loss.HardNegativeMining(num_hard_negatives)
        )
        self.cross_entropy = tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM
        )

    def call(
        self,
        logits: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
        candidate_sampling_probability: tf.Tensor | None = None,
        candidate_ids: tf.Tensor | None = None,
        score_mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """The loss of one batch.

        Args:
            logits: `[num_queries, num_candidates]` float32; candidate i is query i's positive
                (the candidates after the first num_queries are extra negatives for every query).
            sample_weight: optional `[num_queries]` weight of each query's term.
            candidate_sampling_probability: optional `[num_candidates]` relative chance of each
                candidate being drawn; logits get `- log(clip(p, 1e-6, 1))`.
            candidate_ids: `[num_candidates]` ids, required with accidental-hit removal.
            score_mask: optional `[num_queries, num_candidates]` bool, False = not a candidate
                for that query (never False on a positive).

        Returns:
            Scalar float32: the summed, weighted cross-entropy.

        Raises:
            ValueError: accidental-hit removal is on and `candidate_ids` is None.
        """
        labels = tf.eye(tf.shape(logits)[0], tf.shape(logits)[1])
        if candidate_sampling_probability is not None:
            logits = self.correct_sampling(logits, candidate_sampling_probability)
        if self.remove_accidental_hits:
            if candidate_ids is None:
                raise ValueError(
                    "InBatchSoftmax removes accidental hits: pass candidate_ids, or build it "
                    "with remove_accidental_hits=False"
                )
            logits = self.accidental_hits(labels, logits, candidate_ids)
        if score_mask is not None:
            logits = tf.where(score_mask, logits, tfrs.layers.loss.MIN_FLOAT)
        if self.hard_negatives is not None:
            logits, labels = self.hard_negatives(logits, labels)
        return self.cross_entropy(y_true=labels, y_pred=logits, sample_weight=sample_weight)
