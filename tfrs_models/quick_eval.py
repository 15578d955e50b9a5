"""Exact (brute-force) Recall@K on eval queries: the per-epoch signal and the train-time check.

Items the user already saw before the eval period are excluded from the ranking and from the
targets, the same protocol the evaluation step uses.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines.metrics import recall_at_k, top_k
from tfrs_models.data import FeatureSet, load_eval_queries

_BATCH = 4096


class QuickEval:
    """Eval queries loaded once; scores any model (or popularity) against the whole catalog."""

    def __init__(self, features: FeatureSet, limit: int | None, seed: int = 0):
        self.features = features
        self.queries = load_eval_queries(features, limit, seed)
        self.item_ids = features.catalog["item_id"].to_numpy(str)
        index = {item: i for i, item in enumerate(self.item_ids)}

        def to_index(ragged):
            return [
                np.array([index[x.decode()] for x in row if x.decode() in index], dtype=np.int64)
                for row in ragged.to_list()
            ]

        self.seen = to_index(self.queries["seen_item_ids"])
        labels = to_index(self.queries["label_item_ids"])
        self.targets = [
            np.setdiff1d(label, seen) for label, seen in zip(labels, self.seen, strict=True)
        ]
        self.popularity = features.catalog["train_count"].to_numpy(np.float64)

    def __len__(self) -> int:
        return len(self.targets)

    def query_embeddings(self, query_tower) -> np.ndarray:
        inputs = {
            k: v for k, v in self.queries.items() if k not in ("seen_item_ids", "label_item_ids")
        }
        n = len(self)
        return np.concatenate([
            query_tower({k: v[i : i + _BATCH] for k, v in inputs.items()}).numpy()
            for i in range(0, n, _BATCH)
        ]) if n else np.zeros((0, 1), np.float32)  # fmt: skip

    def item_embeddings(self, item_tower) -> np.ndarray:
        ids = tf.constant(self.item_ids)
        return np.concatenate(
            [item_tower(ids[i : i + _BATCH]).numpy() for i in range(0, len(ids), _BATCH)]
        )

    def ranked(self, blocks, k: int, start: int = 0) -> np.ndarray:
        """Top-k catalog indices per query, seen items excluded: int `[n_queries, k]`.

        Args:
            blocks: score matrices `[rows, n_items]` for consecutive queries (bounded memory).
            start: eval query of the first block's first row.
        """
        tops = []
        for block in blocks:
            block = np.array(block, dtype=np.float32)
            for row, seen in enumerate(self.seen[start : start + len(block)]):
                block[row, seen] = -np.inf
            tops.append(top_k(block, k))
            start += len(block)
        return np.concatenate(tops) if tops else np.zeros((0, k), np.int64)

    def model_blocks(self, model):
        """Score blocks of the model: query vectors x catalog item vectors."""
        items = self.item_embeddings(model.item_tower)
        queries = self.query_embeddings(model.query_tower)
        for start in range(0, len(queries), _BATCH):
            yield queries[start : start + _BATCH] @ items.T

    def popularity_blocks(self):
        for start in range(0, len(self), _BATCH):
            rows = min(_BATCH, len(self) - start)
            yield np.broadcast_to(self.popularity, (rows, len(self.popularity)))

    def model_recall(self, model, k: int) -> float:
        return recall_at_k(self.ranked(self.model_blocks(model), k), self.targets)

    def popularity_recall(self, k: int) -> float:
        return recall_at_k(self.ranked(self.popularity_blocks(), k), self.targets)
