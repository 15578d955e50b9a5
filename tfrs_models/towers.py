"""The two towers. Both take raw features (string ids, int64 timestamps) and return
L2-normalised vectors, so serving needs no Python preprocessing.

ItemTower:  item id embedding (+ hashed OOV buckets)  ⊕ title-token bag ⊕ genres ⊕ popularity
            -> MLP -> [batch, d], unit norm. Content comes from the catalog the tower carries,
            so an item never seen in training still gets a vector from its title and genres.
QueryTower: user id embedding (+ OOV buckets) ⊕ history (recency-weighted mean, or attention,
            over the shared item-id embeddings) ⊕ hashed user features ⊕ hour / day of week
            -> MLP -> [batch, d], unit norm.

With `item_bias`, both towers return one more dimension: the item tower appends a learned
per-item bias b_i (id row + a linear function of the content), the query tower appends the
temperature, so query . item / temperature = cos / temperature + b_i. The first d dimensions
stay unit norm.

With `item_age_bias`, a novelty bonus sum_k w_k 2^(-age / h_k) on the item's age at query time
(catalog `created_at`) is added to the score. Training computes it exactly per (query,
candidate) pair; the exported towers factor it around a reference time t0 (the end of the
training data): item dims 2^((min(created, t0) - t0) / h_k), query dims
T * w_k * 2^((t0 - t) / h_k). Items created after t0 count as created at t0.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from pipelines import schema
from pipelines.config import TrainConfig
from pipelines.schema import DAY_SECONDS, HOUR_SECONDS
from tfrs_models.optimizers import CatchUpEmbedding

_POPULARITY_BUCKETS = 64
AGE_HALF_LIVES_DAYS = (0.5, 2.0, 8.0, 32.0)
_UNKNOWN_AGE_DAYS = -1e4  # items without created_at: old enough for every decay to vanish


def age_decays(age_days: tf.Tensor) -> tf.Tensor:
    """`[..., K]` decays 2^(-age / h_k) of non-negative ages in days.

    Written as exp(-age ln2 / h_k): on CPU `tf.pow` costs 3x as much, and training evaluates
    this for every (query, candidate) pair of a batch.
    """
    rates = tf.constant([-math.log(2.0) / h for h in AGE_HALF_LIVES_DAYS], tf.float32)
    return tf.exp(tf.maximum(age_days, 0.0)[..., None] * rates)


def _string_lookup(vocabulary: list[str], oov_buckets: int, name: str):
    """A `StringLookup` over `vocabulary` (index 0.. oov_buckets-1: hashed OOV buckets).

    The vocabulary goes in as a tensor: a Python list would stay on the layer as a tracked list,
    and Keras walks every tracked object whenever it collects `model.metrics`, which its
    progress bar does after every batch: 0.5-0.9 s per step with 812k item ids.
    """
    return tf.keras.layers.StringLookup(
        vocabulary=tf.constant(vocabulary, tf.string), num_oov_indices=oov_buckets, name=name
    )


def _mlp(cfg: TrainConfig, name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential(
        [
            tf.keras.layers.Dense(cfg.hidden_units, activation="relu", name=f"{name}_hidden"),
            tf.keras.layers.Dense(cfg.embedding_dim, name=f"{name}_output"),
        ],
        name=f"{name}_mlp",
    )


class ItemTower(tf.keras.Model):
    """Item ids `[batch]` (strings) -> unit vectors `[batch, d]`.

    Args:
        item_vocab: item ids with a trained embedding row (most frequent first).
        oov_buckets: hash buckets for ids outside the vocabulary.
        catalog: `tfrs_models.data.catalog_arrays` (content of every catalog item).
        n_tokens / n_genres: vocabulary sizes of title tokens and genres.
    """

    def __init__(
        self,
        item_vocab: list[str],
        oov_buckets: int,
        catalog: dict[str, np.ndarray],
        n_tokens: int,
        n_genres: int,
        cfg: TrainConfig,
        reference_time: int | None = None,
        **kwargs,
    ):
        super().__init__(name="item_tower", **kwargs)
        self.cfg = cfg
        if cfg.item_age_bias:
            created = (np.asarray(catalog["created_at"], np.float64) - reference_time) / DAY_SECONDS
            created = np.append(np.nan_to_num(created, nan=_UNKNOWN_AGE_DAYS), _UNKNOWN_AGE_DAYS)
            self.created_days = tf.constant(created, tf.float32)  # vs t0; last row: unknown ids
            self.created_row = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(catalog[schema.ITEM_ID]),
                    tf.range(len(catalog[schema.ITEM_ID]), dtype=tf.int64),
                ),
                default_value=len(catalog[schema.ITEM_ID]),
            )
        self.id_lookup = _string_lookup(item_vocab, oov_buckets, "item_id_lookup")
        self.id_embedding = CatchUpEmbedding(
            self.id_lookup.vocabulary_size(), cfg.id_embedding_dim, name="item_id_embedding"
        )
        self.oov_buckets = oov_buckets
        if cfg.item_bias:
            self.id_bias = CatchUpEmbedding(
                self.id_lookup.vocabulary_size(), 1, embeddings_initializer="zeros",
                name="item_id_bias",
            )  # fmt: skip
            if cfg.use_content:
                self.content_bias = tf.keras.layers.Dense(1, name="item_content_bias")
        if cfg.use_content:
            self.catalog_row = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(catalog[schema.ITEM_ID]),
                    tf.range(len(catalog[schema.ITEM_ID]), dtype=tf.int64),
                ),
                default_value=len(catalog[schema.ITEM_ID]),
            )  # unknown ids -> the empty row appended below
            pad = lambda a: np.concatenate([a, np.zeros((1,) + a.shape[1:], a.dtype)])  # noqa: E731
            self.tokens = tf.constant(pad(catalog["title_tokens"]))
            self.genres = tf.constant(pad(catalog["genres"]))
            self.popularity = tf.constant(
                np.minimum(pad(catalog["popularity_bucket"]), _POPULARITY_BUCKETS - 1)
            )
            self.token_embedding = CatchUpEmbedding(
                n_tokens + 1, 32, mask_zero=True, name="title_token_embedding"
            )
            self.genre_embedding = CatchUpEmbedding(
                n_genres + 1, 16, mask_zero=True, name="genre_embedding"
            )
            self.popularity_embedding = CatchUpEmbedding(
                _POPULARITY_BUCKETS, 8, name="popularity_embedding"
            )
            self.mlp = _mlp(cfg, "item")
        else:
            self.mlp = tf.keras.layers.Dense(cfg.embedding_dim, name="item_output")

    def id_vectors(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Id embeddings of any-shaped string ids (shared with the query tower's history).

        Each distinct id is looked up once and its vector gathered into place. A batch's
        histories repeat items (1,024 x 100 slots over a 20k-item catalog on `medium`), and the
        embedding's sparse gradient then carries one row per distinct item instead of one per
        slot, for the backward pass and the optimizer: half the step time of the default model.
        """
        index = self.id_lookup(item_ids)
        unique, position = tf.unique(tf.reshape(index, [-1]))
        vectors = tf.gather(self.id_embedding(unique), position)
        return tf.reshape(vectors, tf.concat([tf.shape(index), [-1]], axis=0))

    def created(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Creation times in days relative to t0 (very negative when unknown): `[batch]`."""
        return tf.gather(self.created_days, self.created_row.lookup(item_ids))

    def call(self, item_ids: tf.Tensor, training=None, with_age: bool = True) -> tf.Tensor:
        index = self.id_lookup(item_ids)
        dropped = None
        if training and self.cfg.item_id_dropout > 0:
            # Cold-start training: some candidates look like items never seen in training (an
            # OOV hash bucket for the id, popularity bucket 0), so content learns to stand in.
            dropped = tf.random.uniform(tf.shape(index)) < self.cfg.item_id_dropout
            oov = tf.strings.to_hash_bucket_fast(item_ids, self.oov_buckets)
            index = tf.where(dropped, oov, index)
        parts = [self.id_embedding(index)]
        if self.cfg.use_content:
            row = self.catalog_row.lookup(item_ids)
            popularity = tf.gather(self.popularity, row)
            if dropped is not None:
                popularity = tf.where(dropped, tf.zeros_like(popularity), popularity)
            parts.append(_masked_mean(self.token_embedding, tf.gather(self.tokens, row)))
            parts.append(_masked_mean(self.genre_embedding, tf.gather(self.genres, row)))
            parts.append(self.popularity_embedding(popularity))
        features = tf.concat(parts, axis=-1)
        out = [tf.math.l2_normalize(self.mlp(features), axis=-1)]
        if self.cfg.item_bias:
            bias = self.id_bias(index)
            if self.cfg.use_content:
                bias += self.content_bias(tf.concat(parts[1:], axis=-1))
            out.append(bias)
        if self.cfg.item_age_bias and with_age:
            out.append(age_decays(-tf.minimum(self.created(item_ids), 0.0)))
        return tf.concat(out, axis=-1) if len(out) > 1 else out[0]


class QueryTower(tf.keras.Model):
    """Raw query features -> unit vectors `[batch, d]`.

    Inputs (dict): `user_id` [batch] str, `timestamp` [batch] int64, `history_item_ids`
    [batch, H] str ("" = padding), `history_timestamps` [batch, H] int64, and one
    `user_<feature>` [batch] str per user feature.
    """

    def __init__(
        self,
        user_vocab: list[str],
        oov_buckets: int,
        user_features: list[str],
        item_tower: ItemTower,
        cfg: TrainConfig,
        reference_time: int | None = None,
        **kwargs,
    ):
        super().__init__(name="query_tower", **kwargs)
        self.cfg = cfg
        if cfg.item_age_bias:
            self.reference_time = tf.constant(int(reference_time), tf.int64)
            self.age_weights = self.add_weight(
                name="item_age_weights", shape=[len(AGE_HALF_LIVES_DAYS)], initializer="zeros"
            )
        self.item_tower = item_tower
        self.user_features = list(user_features) if cfg.use_user_features else []
        self.user_lookup = _string_lookup(user_vocab, oov_buckets, "user_id_lookup")
        if cfg.use_user_id:
            self.user_embedding = CatchUpEmbedding(
                self.user_lookup.vocabulary_size(), cfg.id_embedding_dim, name="user_id_embedding"
            )
        if cfg.use_history and cfg.history_pooling == "attention":
            self.attention_query = tf.keras.layers.Dense(
                cfg.id_embedding_dim, name="history_attention"
            )
        self.feature_hashing = {
            name: tf.keras.layers.Hashing(cfg.user_feature_buckets, name=f"{name}_hashing")
            for name in self.user_features
        }
        self.feature_embedding = {
            name: CatchUpEmbedding(cfg.user_feature_buckets, 16, name=f"{name}_embedding")
            for name in self.user_features
        }
        if cfg.use_user_features:
            self.hour_embedding = CatchUpEmbedding(24, 8, name="hour_embedding")
            self.day_embedding = CatchUpEmbedding(7, 4, name="day_of_week_embedding")
        use_mlp = cfg.use_history or cfg.use_user_features
        if not (cfg.use_user_id or use_mlp):
            raise ValueError("the query tower needs the user id, the history or user features")
        self.mlp = (
            _mlp(cfg, "query")
            if use_mlp
            else tf.keras.layers.Dense(cfg.embedding_dim, name="query_output")
        )

    def days(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """Query times in days relative to t0: `[batch]`."""
        return tf.cast(features[schema.TIMESTAMP] - self.reference_time, tf.float32) / DAY_SECONDS

    def call(
        self, features: dict[str, tf.Tensor], with_age: bool = True, training=None
    ) -> tf.Tensor:
        user, context = [], []
        if self.cfg.use_user_id:
            user.append(self.user_embedding(self.user_lookup(features[schema.USER_ID])))
        if self.cfg.use_user_features:
            for name in self.user_features:
                context.append(
                    self.feature_embedding[name](self.feature_hashing[name](features[name]))
                )
            # Hour and day of week come from the query time here, never from the records.
            ts = features[schema.TIMESTAMP]
            context.append(self.hour_embedding(ts // HOUR_SECONDS % 24))
            context.append(
                self.day_embedding((ts // DAY_SECONDS + 3) % 7)
            )  # 1970-01-01 was a Thursday
        history = []
        if self.cfg.use_history:
            # Attention queries come from the user id, or without it from features and context.
            source = user or context
            history.append(
                self.encode_history(
                    features, tf.concat(source, axis=-1) if source else None, training=training
                )
            )
        parts = user + history + context
        vectors = tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=-1)), axis=-1)
        out = [vectors]
        if self.cfg.item_bias:
            # The item tower's bias dimension is b_i: query . item / T = cos / T + b_i.
            out.append(tf.fill([tf.shape(vectors)[0], 1], self.cfg.temperature))
        if self.cfg.item_age_bias and with_age:
            # T * w_k * 2^((t0 - t) / h_k); the exponent is capped so early queries stay finite.
            half_lives = tf.constant(AGE_HALF_LIVES_DAYS, tf.float32)
            exponent = tf.minimum(-self.days(features)[:, None] / half_lives, 100.0)
            out.append(self.cfg.temperature * self.age_weights * tf.pow(2.0, exponent))
        return tf.concat(out, axis=-1) if len(out) > 1 else out[0]

    def encode_history(
        self, features: dict[str, tf.Tensor], context: tf.Tensor | None, training=None
    ) -> tf.Tensor:
        """Pool the history's item embeddings, recent items weighing more: `[batch, d_id]`.

        In training, `history_dropout` hides a random share of each history (the pooled
        vector then averages the rest), so the tower cannot lean on any single item.
        """
        ids = features[schema.HISTORY_ITEM_IDS]
        present = tf.not_equal(ids, "")
        if training and self.cfg.history_dropout > 0:
            kept = tf.random.uniform(tf.shape(ids)) >= self.cfg.history_dropout
            present &= kept
        # Recency weights 2^(-age / h), normalised in log space (a softmax). Ages are taken
        # from the newest history item, in exact int64 seconds: the shift cancels in the
        # softmax, so a user dormant for years keeps the same pooled history, where
        # 0.5 ** (age / h) from the query time underflows to zero after a few months.
        times = features[schema.HISTORY_TIMESTAMPS]
        newest = tf.reduce_max(tf.where(present, times, tf.zeros_like(times)), axis=1)
        age_days = tf.cast(tf.maximum(newest[:, None] - times, 0), tf.float32) / DAY_SECONDS
        log_recency = -age_days * (math.log(2.0) / self.cfg.recency_half_life_days)
        if self.cfg.history_pooling == "attention":
            vectors = self.item_tower.id_vectors(ids)
            if context is None:
                context = tf.ones([tf.shape(ids)[0], 1])
            log_recency += tf.einsum("bhd,bd->bh", vectors, self.attention_query(context))
            return tf.einsum("bh,bhd->bd", _masked_softmax(log_recency, present), vectors)
        # Mean pooling: the weights do not depend on the embeddings, so only the present slots
        # are looked up and summed (padding and dropped items never enter the pass or its
        # gradient: about a third of the 1,024 x 100 slots of a `medium` training batch).
        weights = _masked_softmax(log_recency, present)
        slots = tf.where(present)
        vectors = self.item_tower.id_vectors(tf.gather_nd(ids, slots))
        return tf.math.unsorted_segment_sum(
            vectors * tf.gather_nd(weights, slots)[:, None], slots[:, 0], tf.shape(ids)[0]
        )


def _masked_softmax(logits: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """Softmax over the present entries of each row `[batch, H]`; all-padding rows get zeros."""
    logits = tf.where(present, logits, tf.fill(tf.shape(logits), -1e30))
    logits -= tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    weights = tf.exp(logits) * tf.cast(present, tf.float32)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-30)


def _masked_mean(embedding: tf.keras.layers.Embedding, ids: tf.Tensor) -> tf.Tensor:
    """Mean of the embeddings of non-zero ids along the last axis (zeros are padding)."""
    mask = tf.cast(tf.not_equal(ids, 0), tf.float32)[..., None]
    total = tf.reduce_sum(embedding(ids) * mask, axis=-2)
    return total / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)
