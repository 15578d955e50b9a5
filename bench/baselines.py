"""Baselines for the benchmarks only: EASE (Steck 2019), ItemKNN, the ID-only two-tower.

EASE is the bar a two-tower model must clear on MovieLens-style data: a closed-form item-item
model, B = I - P / diag(P) with P = (X'X + lambda I)^-1, zero diagonal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The TFRS tutorial's two-tower model as TrainConfig overrides: id embeddings only, no logQ.
ID_ONLY_TRAIN = {
    "use_user_id": True,
    "use_history": False,
    "use_content": False,
    "use_user_features": False,
    "logq_correction": False,
    "item_id_dropout": 0.0,
    "item_age_bias": False,
}


def _interactions(train: pd.DataFrame, item_ids: np.ndarray):
    """Binary user x item matrix of `train` over `item_ids` (CSR) and its user index."""
    from scipy import sparse

    index = pd.Index(item_ids)
    users_index = pd.Index(sorted(set(train["user_id"])))
    pairs = train[["user_id", "item_id"]].drop_duplicates()
    rows = users_index.get_indexer(pairs["user_id"])
    cols = index.get_indexer(pairs["item_id"])
    keep = cols >= 0
    x = sparse.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep])),
        shape=(len(users_index), len(index)),
    )
    return x, users_index


def _score_users(x, users_index: pd.Index, users: list[str], weights: np.ndarray, batch: int):
    """Yield `history @ weights` blocks for `users` (unknown users: zero history), with a
    popularity tie-break for users without history."""
    popularity = np.asarray(x.sum(axis=0)).ravel() * 1e-6
    position = users_index.get_indexer(users)
    for start in range(0, len(users), batch):
        block = position[start : start + batch]
        history = x[np.maximum(block, 0)].multiply((block >= 0)[:, None].astype(np.float32)).tocsr()
        yield np.asarray(history @ weights) + popularity


def ease_scores(
    train: pd.DataFrame,
    item_ids: np.ndarray,
    users: list[str],
    lam: float = 500.0,
    batch: int = 2048,
):
    """EASE scores of `users` over `item_ids`, yielded in batches of rows.

    Args:
        train: training interactions (`user_id`, `item_id`).
        item_ids: the catalog, defining the score columns.
        users: the query users, in order.

    Yields:
        float32 `[rows, n_items]` score blocks, in `users` order.
    """
    x, users_index = _interactions(train, item_ids)
    n = x.shape[1]
    # float32 is plenty for X'X + lambda I with lambda >= 1, and twice as fast to invert.
    gram = (x.T @ x).toarray().astype(np.float32)
    gram[np.diag_indices(n)] += lam
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))
    b[np.diag_indices(n)] = 0.0
    yield from _score_users(x, users_index, users, b, batch)


def item_knn_scores(
    train: pd.DataFrame,
    item_ids: np.ndarray,
    users: list[str],
    neighbours: int = 100,
    batch: int = 2048,
):
    """ItemKNN scores: cosine item-item similarity on binary interactions, each item keeping
    its `neighbours` most similar items; a user's score for an item sums the similarities to
    the items in their history. Yields float32 `[rows, n_items]` blocks in `users` order."""
    x, users_index = _interactions(train, item_ids)
    n = x.shape[1]
    gram = (x.T @ x).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(gram)).clip(min=1e-9)
    sim = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(sim, 0.0)
    if neighbours < n:
        # Keep each item's top neighbours (per column: the items that vote for it).
        drop = np.argpartition(-sim, neighbours, axis=0)[neighbours:]
        np.put_along_axis(sim, drop, 0.0, axis=0)
    yield from _score_users(x, users_index, users, sim, batch)
