"""tf.data input from the feature job's output: train batches (optionally with the held-out
examples of the final fit), validation and eval queries, the item catalog.

Records are read with parallel reads, shuffled, batched *before* parsing (one vectorized
`parse_example` per batch) and prefetched, so the input pipeline keeps up with the model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import schema
from pipelines.config import TrainConfig

MAX_TITLE_TOKENS = 16
MAX_GENRES = 8
# Splits in the train-example format: "heldout" holds the validation and eval interactions the
# final fit adds (features version 3).
EXAMPLE_SPLITS = ("train", "heldout")


@dataclasses.dataclass
class FeatureSet:
    """Everything training needs from one feature run.

    Attributes:
        manifest: the features manifest.
        catalog: the item catalog (`item_id`, `title_tokens`, `genre_list`, `popularity_bucket`,
            `sampling_probability`, `train_count`, ...), sorted by item_id.
        vocab: name -> list of values (most frequent first) for user_id, item_id, genre,
            title_token.
        user_features: names of the `user_<column>` features in the records.
        history_length: H.
    """

    directory: str
    manifest: dict
    catalog: pd.DataFrame
    vocab: dict[str, list[str]]
    user_features: list[str]
    history_length: int

    @classmethod
    def load(cls, directory: str | Path) -> FeatureSet:
        directory = Path(directory)
        manifest = json.loads((directory / schema.FEATURES_MANIFEST).read_text())
        vocab = {}
        for name in schema.VOCABULARIES:
            path = directory / schema.vocabulary_file(name)
            lines = path.read_text(encoding="utf-8").splitlines()
            vocab[name] = [line.split("\t", 1)[0] for line in lines]
        return cls(
            directory=str(directory),
            manifest=manifest,
            catalog=pd.read_parquet(directory / "catalog.parquet"),
            vocab=vocab,
            user_features=list(manifest.get("user_features", [])),
            history_length=int(manifest["config"]["history_length"]),
        )

    @property
    def oov_buckets(self) -> int:
        return int(self.manifest[schema.OOV_BUCKETS])

    def files(self, split: str) -> list[str]:
        return list(self.manifest["splits"][split]["files"])

    def has_split(self, split: str) -> bool:
        """Whether the manifest lists `split` (features older than version 3 have no "heldout")."""
        return split in self.manifest["splits"]

    def records(self, split: str) -> int:
        """Records written to `split` (0 when the features do not have it)."""
        return int(self.manifest["splits"].get(split, {}).get("records", 0))

    def has_queries(self, split: str) -> bool:
        """Whether the features hold a non-empty query split (older runs have no "valid")."""
        return int(self.manifest["splits"].get(split, {}).get("records", 0)) > 0


def _spec(features: FeatureSet, split: str) -> dict:
    spec = {
        schema.USER_ID: tf.io.FixedLenFeature([], tf.string),
        schema.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
        schema.HISTORY_ITEM_IDS: tf.io.RaggedFeature(tf.string),
        schema.HISTORY_TIMESTAMPS: tf.io.RaggedFeature(tf.int64),
    }
    for name in features.user_features:
        spec[name] = tf.io.FixedLenFeature([], tf.string, default_value="")
    if split in EXAMPLE_SPLITS:
        spec[schema.ITEM_ID] = tf.io.FixedLenFeature([], tf.string)
        spec[schema.WEIGHT] = tf.io.FixedLenFeature([], tf.float32, default_value=1.0)
    else:
        spec[schema.SEEN_ITEM_IDS] = tf.io.RaggedFeature(tf.string)
        spec[schema.LABEL_ITEM_IDS] = tf.io.RaggedFeature(tf.string)
    return spec


def parse_batch(serialized: tf.Tensor, features: FeatureSet, split: str) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized records; histories padded to `[batch, H]` ("" / 0)."""
    parsed = tf.io.parse_example(serialized, _spec(features, split))
    h = features.history_length
    parsed[schema.HISTORY_ITEM_IDS] = parsed[schema.HISTORY_ITEM_IDS].to_tensor(
        default_value="", shape=[None, h]
    )
    parsed[schema.HISTORY_TIMESTAMPS] = parsed[schema.HISTORY_TIMESTAMPS].to_tensor(
        default_value=0, shape=[None, h]
    )
    return parsed


def train_dataset(
    features: FeatureSet,
    cfg: TrainConfig,
    *,
    shuffle: bool = True,
    splits: tuple[str, ...] = ("train",),
    shard: tuple[int, int] | None = None,
    batches: int | None = None,
) -> tf.data.Dataset:
    """Batches of parsed train examples (drop_remainder, so every batch has `batch_size` rows).

    The feature job writes train records in a pseudo-random order, so records are moved and
    shuffled in chunks of 32 consecutive records: the same mixing as a per-record shuffle of
    that buffer size, with 32x fewer tf.data elements to handle per batch.

    Args:
        splits: the train-format splits read: ("train",), or ("train", "heldout") for the
            final fit (their files are shuffled together).
        shard: `(count, index)`: keep every count-th record from the index-th (one input
            pipeline of a multi-worker run, `tfrs_models.distributed`); records are then read
            in the same seeded order on every worker, so the shards are disjoint.
        batches: passes of this many batches each, repeated without end (a synchronous run's
            workers must feed the same number of steps per epoch; `fit` then takes
            `steps_per_epoch`, as Keras requires for distributed datasets).

    Raises:
        ValueError: a split that is not train-format.
    """
    unknown = [s for s in splits if s not in EXAMPLE_SPLITS]
    if unknown:
        raise ValueError(f"train-format splits are {EXAMPLE_SPLITS}, got {unknown}")
    chunk = 32 if cfg.batch_size % 32 == 0 else 1
    paths = [path for split in splits for path in features.files(split)]
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        files = files.shuffle(len(paths), seed=cfg.seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=4,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle or shard is not None,
    )
    if cfg.min_weight is not None:
        records = records.filter(lambda record: weight_at_least(record, cfg.min_weight))
    if shard is not None:
        records = records.shard(*shard)
    chunks = records.batch(chunk, drop_remainder=True)
    if shuffle:
        chunks = chunks.shuffle(
            max(1, cfg.shuffle_buffer // chunk), seed=cfg.seed, reshuffle_each_iteration=True
        )
    batched = chunks.batch(cfg.batch_size // chunk, drop_remainder=True)
    if batches is not None:
        batched = batched.take(batches).repeat()
    return batched.map(
        lambda x: parse_batch(tf.reshape(x, [-1]), features, "train"),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def weight_at_least(record: tf.Tensor, min_weight: float) -> tf.Tensor:
    """Whether one serialized train-format record's `weight` is at least `min_weight`: bool `[]`.

    Records without a weight (unweighted events) weigh 1.0, as in `parse_batch`.
    """
    spec = {schema.WEIGHT: tf.io.FixedLenFeature([], tf.float32, default_value=1.0)}
    return tf.io.parse_single_example(record, spec)[schema.WEIGHT] >= min_weight


def kept_examples(
    features: FeatureSet, cfg: TrainConfig, splits: tuple[str, ...] = ("train",)
) -> int:
    """Train-format records of `splits` that training reads: all of them, or those at or above
    `cfg.min_weight` (one pass over the records to count them)."""
    total = sum(features.records(split) for split in splits)
    if cfg.min_weight is None:
        return total
    paths = [path for split in splits for path in features.files(split)]
    kept = tf.data.TFRecordDataset(paths, num_parallel_reads=4).filter(
        lambda record: weight_at_least(record, cfg.min_weight)
    )
    return int(kept.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())


def loss_weights(weight: tf.Tensor) -> tf.Tensor:
    """Per-example loss weights from interaction weights: negatives count 0, and the batch's
    weights are scaled to a mean of 1 (the loss keeps its scale, so the learning rate keeps its
    meaning); a batch whose weights are all 0 contributes nothing.

    Args:
        weight: `[batch]` float32 interaction weights.

    Returns:
        `[batch]` float32 sample weights.
    """
    weight = tf.maximum(weight, 0.0)
    return tf.math.divide_no_nan(weight, tf.reduce_mean(weight))


QUERY_SPLITS = ("valid", "eval")


def load_eval_queries(
    features: FeatureSet, limit: int | None = None, seed: int = 0, split: str = "eval"
) -> dict[str, tf.Tensor]:
    """Queries of one split as one batch of tensors (`read_queries` in one chunk).

    Args:
        split: "eval" (the eval period: evaluation only) or "valid" (validation queries carved
            from the training window: early stopping and model selection).
    """
    return next(read_queries(features, limit, seed, split, None))


_READ_BATCH = 4096  # records read from the TFRecord files at a time


def read_queries(features: FeatureSet, limit: int | None, seed: int, split: str, rows: int | None):
    """The queries of a split, parsed, in chunks of `rows` (None: all in one); at least one.

    A seeded subset of `limit` records when given (`np.random.default_rng(seed)`), chosen
    without holding the split's records at once.

    Yields:
        Parsed features of consecutive queries (`seen_item_ids` / `label_item_ids` ragged).

    Raises:
        ValueError: an unknown split, or one the features do not have.
    """
    if split not in QUERY_SPLITS:
        raise ValueError(f"query split must be one of {QUERY_SPLITS}, got {split!r}")
    if split not in features.manifest["splits"]:
        raise ValueError(
            f"{features.directory} has no {split!r} split (features older than version 2): "
            "rerun the feature step"
        )
    dataset = tf.data.TFRecordDataset(features.files(split))
    keep = None
    if limit is not None:
        n = sum(len(batch) for batch in dataset.batch(_READ_BATCH).as_numpy_iterator())
        if n > limit:
            keep = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    rows = rows or np.iinfo(np.int64).max
    pending, offset, sent = [], 0, False
    for batch in dataset.batch(min(rows, _READ_BATCH)).as_numpy_iterator():
        if keep is None:
            pending.extend(batch)
        else:
            chosen = keep[
                np.searchsorted(keep, offset) : np.searchsorted(keep, offset + len(batch))
            ]
            pending.extend(batch[chosen - offset])
        offset += len(batch)
        while len(pending) >= rows:
            yield parse_batch(tf.constant(pending[:rows], dtype=tf.string), features, split)
            pending, sent = pending[rows:], True
    if pending or not sent:
        yield parse_batch(tf.constant(pending, dtype=tf.string), features, split)


def catalog_arrays(features: FeatureSet) -> dict[str, np.ndarray]:
    """Item content as fixed-size arrays aligned with the catalog rows.

    Returns:
        `item_id` [N] str, `title_tokens` [N, 16] int32 (vocab position + 1, 0 = none),
        `genres` [N, 8] int32 (same encoding), `popularity_bucket` [N] int32,
        `sampling_probability` [N] float32, `created_at` [N] float64 epoch seconds (NaN when
        unknown).
    """
    catalog = features.catalog
    token_index = {t: i + 1 for i, t in enumerate(features.vocab[schema.TITLE_TOKEN])}
    genre_index = {g: i + 1 for i, g in enumerate(features.vocab[schema.GENRE])}

    def padded(lists, index, width):
        out = np.zeros((len(lists), width), dtype=np.int32)
        for row, values in enumerate(lists):
            ids = [index[v] for v in values if v in index][:width]
            out[row, : len(ids)] = ids
        return out

    return {
        schema.ITEM_ID: catalog[schema.ITEM_ID].to_numpy(str),
        "title_tokens": padded(catalog["title_tokens"], token_index, MAX_TITLE_TOKENS),
        "genres": padded(catalog["genre_list"], genre_index, MAX_GENRES),
        "popularity_bucket": catalog["popularity_bucket"].to_numpy(np.int32),
        "sampling_probability": catalog["sampling_probability"].to_numpy(np.float32),
        "created_at": catalog_created_at(features),
    }


def catalog_created_at(features: FeatureSet) -> np.ndarray:
    """Creation time of every catalog row: float64 epoch seconds `[N]`, NaN when unknown."""
    catalog = features.catalog
    return pd.to_numeric(
        catalog["created_at"] if "created_at" in catalog else pd.Series(np.nan, catalog.index),
        errors="coerce",
    ).to_numpy(np.float64)
