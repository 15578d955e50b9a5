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


def ranking_metrics(
    ranked: np.ndarray, targets: list[np.ndarray], ks: list[int], n_items: int
) -> dict[str, float]:
    """Recall@K, NDCG@K, hit rate@K for each K, MRR@max(K) and catalog coverage@K.

    Conventions (the usual ones, stated because papers differ):
    - queries without targets are skipped (they cannot be scored); `queries` counts the rest;
    - recall@K = hits in the top K / |targets| (a query with more targets than K cannot
      reach 1);
    - NDCG@K uses binary gains, log2(rank + 1) discounts and an ideal list of
      min(K, |targets|) hits, so it can reach 1 whatever |targets| is;
    - MRR is the mean reciprocal rank of the first hit within the top max(K), 0 if none;
    - coverage@K = distinct items recommended in any top K / catalog size (over all queries);
    - rows may be padded with -1 (fewer results than K); padding never counts as a hit.

    Args:
        ranked: int `[n, >= max(ks)]` item indices, best first.
        targets: n arrays of relevant item indices.
        ks: cutoffs.
        n_items: catalog size for coverage.
    """
    kmax = max(ks)
    ranked = np.asarray(ranked)[:, :kmax]
    out: dict[str, float] = {}
    scored = [i for i, t in enumerate(targets) if len(t)]
    out["queries"] = len(scored)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    hits = np.zeros((len(scored), kmax), dtype=bool)
    sizes = np.zeros(len(scored))
    for j, i in enumerate(scored):
        target = np.unique(targets[i])
        row = ranked[i]
        hits[j, : len(row)] = np.isin(row, target) & (row >= 0)
        sizes[j] = len(target)
    for k in ks:
        h = hits[:, :k]
        found = h.sum(axis=1)
        ideal = np.array([discounts[: int(min(k, s))].sum() for s in sizes])
        out[f"recall@{k}"] = float(np.mean(found / sizes)) if len(scored) else 0.0
        out[f"ndcg@{k}"] = (
            float(np.mean((h * discounts[:k]).sum(axis=1) / ideal)) if len(scored) else 0.0
        )
        out[f"hit_rate@{k}"] = float(np.mean(found > 0)) if len(scored) else 0.0
        top = ranked[:, :k]
        out[f"coverage@{k}"] = float(len(np.unique(top[top >= 0])) / n_items) if n_items else 0.0
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    out[f"mrr@{kmax}"] = float(np.mean(1.0 / first)) if len(scored) else 0.0
    return out


def recall_curve(ranked: np.ndarray, targets: list[np.ndarray], kmax: int) -> np.ndarray:
    """Recall@K for K = 1..kmax (same conventions as `ranking_metrics`): float `[kmax]`."""
    curves = []
    for row, target in zip(np.asarray(ranked)[:, :kmax], targets, strict=True):
        if len(target):
            target = np.unique(target)
            hits = np.zeros(kmax)
            hits[: len(row)] = np.isin(row, target) & (row >= 0)
            curves.append(np.cumsum(hits) / len(target))
    return np.mean(curves, axis=0) if curves else np.zeros(kmax)
