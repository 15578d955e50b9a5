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

    def recall(self, scores: np.ndarray, k: int) -> float:
        """Recall@k of a score matrix `[n_queries, n_items]` after masking seen items."""
        scores = scores.astype(np.float64, copy=True)
        for row, seen in enumerate(self.seen):
            scores[row, seen] = -np.inf
        return recall_at_k(top_k(scores, k), self.targets)

    def model_recall(self, model, k: int) -> float:
        scores = self.query_embeddings(model.query_tower) @ self.item_embeddings(model.item_tower).T
        return self.recall(scores, k)

    def popularity_recall(self, k: int) -> float:
        return self.recall(np.broadcast_to(self.popularity, (len(self), len(self.popularity))), k)
