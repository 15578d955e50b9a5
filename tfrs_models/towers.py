"""The two towers. Both take raw features (string ids, int64 timestamps) and return
L2-normalised vectors, so serving needs no Python preprocessing.

ItemTower:  item id embedding (+ hashed OOV buckets)  ⊕ title-token bag ⊕ genres ⊕ popularity
            -> MLP -> [batch, d], unit norm. Content comes from the catalog the tower carries,
            so an item never seen in training still gets a vector from its title and genres.
QueryTower: user id embedding (+ OOV buckets) ⊕ history (recency-weighted mean, or attention,
            over the shared item-id embeddings) ⊕ hashed user features ⊕ hour / day of week
            -> MLP -> [batch, d], unit norm.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines.config import TrainConfig

DAY_SECONDS = 86_400
_POPULARITY_BUCKETS = 64


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
        **kwargs,
    ):
        super().__init__(name="item_tower", **kwargs)
        self.cfg = cfg
        self.id_lookup = tf.keras.layers.StringLookup(
            vocabulary=item_vocab, num_oov_indices=oov_buckets, name="item_id_lookup"
        )
        self.id_embedding = tf.keras.layers.Embedding(
            self.id_lookup.vocabulary_size(), cfg.id_embedding_dim, name="item_id_embedding"
        )
        if cfg.use_content:
            self.catalog_row = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(catalog["item_id"]),
                    tf.range(len(catalog["item_id"]), dtype=tf.int64),
                ),
                default_value=len(catalog["item_id"]),
            )  # unknown ids -> the empty row appended below
            pad = lambda a: np.concatenate([a, np.zeros((1,) + a.shape[1:], a.dtype)])  # noqa: E731
            self.tokens = tf.constant(pad(catalog["title_tokens"]))
            self.genres = tf.constant(pad(catalog["genres"]))
            self.popularity = tf.constant(
                np.minimum(pad(catalog["popularity_bucket"]), _POPULARITY_BUCKETS - 1)
            )
            self.token_embedding = tf.keras.layers.Embedding(
                n_tokens + 1, 32, mask_zero=True, name="title_token_embedding"
            )
            self.genre_embedding = tf.keras.layers.Embedding(
                n_genres + 1, 16, mask_zero=True, name="genre_embedding"
            )
            self.popularity_embedding = tf.keras.layers.Embedding(
                _POPULARITY_BUCKETS, 8, name="popularity_embedding"
            )
            self.mlp = _mlp(cfg, "item")
        else:
            self.mlp = tf.keras.layers.Dense(cfg.embedding_dim, name="item_output")

    def id_vectors(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Id embeddings of any-shaped string ids (shared with the query tower's history)."""
        return self.id_embedding(self.id_lookup(item_ids))

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        parts = [self.id_vectors(item_ids)]
        if self.cfg.use_content:
            row = self.catalog_row.lookup(item_ids)
            parts.append(_masked_mean(self.token_embedding, tf.gather(self.tokens, row)))
            parts.append(_masked_mean(self.genre_embedding, tf.gather(self.genres, row)))
            parts.append(self.popularity_embedding(tf.gather(self.popularity, row)))
        return tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=-1)), axis=-1)


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
        **kwargs,
    ):
        super().__init__(name="query_tower", **kwargs)
        self.cfg = cfg
        self.item_tower = item_tower
        self.user_features = list(user_features) if cfg.use_user_features else []
        self.user_lookup = tf.keras.layers.StringLookup(
            vocabulary=user_vocab, num_oov_indices=oov_buckets, name="user_id_lookup"
        )
        self.user_embedding = tf.keras.layers.Embedding(
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
            name: tf.keras.layers.Embedding(cfg.user_feature_buckets, 16, name=f"{name}_embedding")
            for name in self.user_features
        }
        if cfg.use_user_features:
            self.hour_embedding = tf.keras.layers.Embedding(24, 8, name="hour_embedding")
            self.day_embedding = tf.keras.layers.Embedding(7, 4, name="day_of_week_embedding")
        use_mlp = cfg.use_history or cfg.use_user_features
        self.mlp = (
            _mlp(cfg, "query")
            if use_mlp
            else tf.keras.layers.Dense(cfg.embedding_dim, name="query_output")
        )

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        user = self.user_embedding(self.user_lookup(features["user_id"]))
        parts = [user]
        if self.cfg.use_history:
            parts.append(self.encode_history(features, user))
        if self.cfg.use_user_features:
            for name in self.user_features:
                parts.append(
                    self.feature_embedding[name](self.feature_hashing[name](features[name]))
                )
            ts = features["timestamp"]
            parts.append(self.hour_embedding(ts // 3600 % 24))
            parts.append(
                self.day_embedding((ts // DAY_SECONDS + 3) % 7)
            )  # 1970-01-01 was a Thursday
        return tf.math.l2_normalize(self.mlp(tf.concat(parts, axis=-1)), axis=-1)

    def encode_history(self, features: dict[str, tf.Tensor], user: tf.Tensor) -> tf.Tensor:
        """Pool the history's item embeddings, recent items weighing more: `[batch, d_id]`."""
        ids = features["history_item_ids"]
        present = tf.cast(tf.not_equal(ids, ""), tf.float32)
        age_days = tf.cast(
            features["timestamp"][:, None] - features["history_timestamps"], tf.float32
        )
        age_days = tf.maximum(age_days / DAY_SECONDS, 0.0)
        recency = tf.pow(0.5, age_days / self.cfg.recency_half_life_days) * present
        vectors = self.item_tower.id_vectors(ids)
        if self.cfg.history_pooling == "attention":
            logits = tf.einsum("bhd,bd->bh", vectors, self.attention_query(user))
            logits += tf.math.log(recency + 1e-9)
            weights = tf.nn.softmax(logits + (present - 1.0) * 1e9) * present
        else:
            weights = recency / tf.maximum(tf.reduce_sum(recency, axis=1, keepdims=True), 1e-9)
        return tf.einsum("bh,bhd->bd", weights, vectors)


def _masked_mean(embedding: tf.keras.layers.Embedding, ids: tf.Tensor) -> tf.Tensor:
    """Mean of the embeddings of non-zero ids along the last axis (zeros are padding)."""
    mask = tf.cast(tf.not_equal(ids, 0), tf.float32)[..., None]
    total = tf.reduce_sum(embedding(ids) * mask, axis=-2)
    return total / tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0)
