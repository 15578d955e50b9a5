"""Retrieval metrics on ranked lists, with seen items already excluded by the caller."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first: int `[n, k]` (ties: lower index first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(ranked: np.ndarray, targets: list[np.ndarray]) -> float:
    """Mean over queries of |top-k ∩ targets| / |targets|, skipping queries without targets.

    Args:
        ranked: int `[n, k]` item indices, best first.
        targets: n arrays of target item indices.
    """
    recalls = [
        np.isin(target, row).mean()
        for row, target in zip(ranked, targets, strict=True)
        if len(target)
    ]
    return float(np.mean(recalls)) if recalls else 0.0
