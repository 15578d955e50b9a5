"""Exact (brute-force) Recall@K on the queries of one split.

Training scores the validation queries ("valid", carved from the training window) after every
epoch; the evaluation step scores the eval queries ("eval"). Items the user saw before the
query's moment are excluded from the ranking and from the targets, the same protocol in both.

Items created after a query's moment did not exist yet when it was asked: they are excluded
from its ranking too (they stay targets, unreachable for every model alike), as training masks
them out as candidates. Validation queries sit inside the training window, where without that
the exported age bonus (factored around the end of the training data) hands not-yet-created
items a huge novelty bonus, and validation recall *falls* while the model improves (on the
small world: 0.64 -> 0.56 over five epochs while eval recall rose 0.68 -> 0.74). Eval queries
are asked at the eval start: items created during the eval period would otherwise take the
top slots the same way, more of them the more of the period a model's catalog covers, so a
challenger trained a day later scored below the same weights served from yesterday's catalog
(synthetic `medium`: 0.285 vs 0.303 Recall@100).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from pipelines import schema
from pipelines.metrics import recall_at_k, score_block_rows, top_k
from tfrs_models.data import FeatureSet, catalog_created_at, read_queries

# Rows per tower call (the outputs are [rows, d]: small whatever the catalog size).
_TOWER_BATCH = 4096
# Queries per chunk when a split is streamed (`QuickEval.chunks`): their features, seen items
# and top-K are held at once, never the whole split's.
QUERY_CHUNK = 8192


class _Catalog:
    """What every chunk of one split shares: the catalog's ids, popularity and creation times."""

    def __init__(self, features: FeatureSet):
        self.item_ids = features.catalog[schema.ITEM_ID].to_numpy(str)
        self.positions = pd.Index([item.encode() for item in self.item_ids])
        self.popularity = features.catalog["train_count"].to_numpy(np.float64)
        # Popularity ranks every query alike: one stable order (ties: lower index first, as
        # `top_k`) on the float32 scores `ranked` would compare.
        self.popularity_order = np.argsort(-self.popularity.astype(np.float32), kind="stable")
        self.created_at = catalog_created_at(features)
        known = np.flatnonzero(~np.isnan(self.created_at))
        # Known creation times in order, with their catalog rows: the items a query at time t
        # may not be shown are `created_rows[searchsorted(created_sorted, t, "right"):]`.
        order = known[np.argsort(self.created_at[known], kind="stable")]
        self.created_sorted, self.created_rows = self.created_at[order], order

    def created_after(self, time: float) -> np.ndarray:
        """Catalog rows of the items created after `time` (epoch seconds), oldest first."""
        return self.created_rows[np.searchsorted(self.created_sorted, time, side="right") :]

    def rows_of(self, ragged: tf.RaggedTensor) -> list[np.ndarray]:
        """Catalog indices of ragged item ids `[n, None]`, unknown ids dropped: n int64 arrays."""
        flat = self.positions.get_indexer(ragged.flat_values.numpy()).astype(np.int64)
        splits = ragged.row_splits.numpy()
        if len(splits) < 2:  # no rows (np.split would hand back one)
            return []
        return [row[row >= 0] for row in np.split(flat, splits[1:-1])]


class QuickEval:
    """Queries of one split; scores any model (or popularity) against the catalog.

    `QuickEval(...)` holds the split's (or the subset's) queries at once; `QuickEval.chunks`
    streams the same queries as consecutive `QuickEval`s of `QUERY_CHUNK` queries each.

    Args:
        features: the feature run.
        limit: a random subset of this many queries (None = all).
        seed: seed of that subset.
        split: "eval" (default: the evaluation step) or "valid" (training's validation). In
            both, items created after a query's timestamp are left out of its ranking.
    """

    def __init__(self, features: FeatureSet, limit: int | None, seed: int = 0, split: str = "eval"):
        queries = next(read_queries(features, limit, seed, split, None))
        self._attach(features, split, _Catalog(features), queries)

    @classmethod
    def chunks(
        cls,
        features: FeatureSet,
        limit: int | None,
        seed: int = 0,
        split: str = "eval",
        rows: int = QUERY_CHUNK,
    ):
        """The queries of `QuickEval(features, limit, seed, split)` as consecutive `QuickEval`s
        of `rows` queries each (the last one fewer; one empty chunk for no query)."""
        catalog = _Catalog(features)
        for queries in read_queries(features, limit, seed, split, rows):
            chunk = cls.__new__(cls)
            chunk._attach(features, split, catalog, queries)
            yield chunk

    def _attach(self, features: FeatureSet, split: str, catalog: _Catalog, queries: dict):
        self.features, self.split, self.catalog, self.queries = features, split, catalog, queries
        self.item_ids, self.popularity = catalog.item_ids, catalog.popularity
        self.seen = catalog.rows_of(queries[schema.SEEN_ITEM_IDS])
        labels = catalog.rows_of(queries[schema.LABEL_ITEM_IDS])
        self.targets = [
            np.setdiff1d(label, seen) for label, seen in zip(labels, self.seen, strict=True)
        ]
        self.created_at = catalog.created_at
        self.query_times = queries[schema.TIMESTAMP].numpy().astype(np.float64)

    def __len__(self) -> int:
        return len(self.targets)

    def query_embeddings(self, query_tower) -> np.ndarray:
        inputs = {
            k: v
            for k, v in self.queries.items()
            if k not in (schema.SEEN_ITEM_IDS, schema.LABEL_ITEM_IDS)
        }
        n = len(self)
        return np.concatenate([
            query_tower({k: v[i : i + _TOWER_BATCH] for k, v in inputs.items()}).numpy()
            for i in range(0, n, _TOWER_BATCH)
        ]) if n else np.zeros((0, 1), np.float32)  # fmt: skip

    def item_embeddings(self, item_tower) -> np.ndarray:
        ids = tf.constant(self.item_ids)
        return np.concatenate(
            [
                item_tower(ids[i : i + _TOWER_BATCH]).numpy()
                for i in range(0, len(ids), _TOWER_BATCH)
            ]
        )

    def ranked(self, blocks, k: int, start: int = 0) -> np.ndarray:
        """Top-k catalog indices per query, seen and not yet created items excluded: int
        `[n_queries, k]`.

        Each block is ranked in pieces of at most `score_block_rows` rows, so the float32 copy
        and `top_k`'s temporaries stay bounded whatever size the caller's blocks have.

        Args:
            blocks: score matrices `[rows, n_items]` for consecutive queries.
            start: query of the first block's first row.
        """
        tops = []
        rows = score_block_rows(len(self.item_ids))
        for block in blocks:
            for offset in range(0, len(block), rows):
                tops.append(self._ranked_piece(block[offset : offset + rows], k, start + offset))
            start += len(block)
        return np.concatenate(tops) if tops else np.zeros((0, k), np.int64)

    def _ranked_piece(self, block, k: int, start: int) -> np.ndarray:
        block = np.array(block, dtype=np.float32)
        for row, seen in enumerate(self.seen[start : start + len(block)]):
            block[row, seen] = -np.inf
        # Not created yet at the query's moment (NaN: unknown, never excluded).
        times = self.query_times[start : start + len(block), None]
        block[self.created_at[None, :] > times] = -np.inf
        return top_k(block, k)

    def model_blocks(self, model):
        """Score blocks of the model, query vectors x catalog item vectors: float32
        `[rows, n_items]`, `score_block_rows` rows each (the last one fewer)."""
        # [d, items] row-major: BLAS multiplies it several times faster than `items.T`.
        items = np.ascontiguousarray(self.item_embeddings(model.item_tower).T)
        queries = self.query_embeddings(model.query_tower)
        rows = score_block_rows(items.shape[1])
        for start in range(0, len(queries), rows):
            yield queries[start : start + rows] @ items

    def popularity_blocks(self):
        """Score blocks of popularity (training interactions), `score_block_rows` rows each:
        read-only broadcast views `[rows, n_items]`, no memory per row."""
        step = score_block_rows(len(self.popularity))
        for start in range(0, len(self), step):
            rows = min(step, len(self) - start)
            yield np.broadcast_to(self.popularity, (rows, len(self.popularity)))

    def model_recall(self, model, k: int) -> float:
        return recall_at_k(self.ranked(self.model_blocks(model), k), self.targets)

    def popularity_recall(self, k: int) -> float:
        return recall_at_k(self.popularity_ranked(k), self.targets)

    def popularity_ranked(self, k: int) -> np.ndarray:
        """`ranked(popularity_blocks(), k)` without scoring the catalog once per query.

        Every query shares the catalog's popularity order: its top k are the first k items of
        that order it may be shown (not seen, created by its moment), found in a
        prefix of k + the number of items it may not be shown. A query left with fewer than k
        such items is ranked the long way (`ranked` then fills up with excluded items).

        Returns:
            int `[n_queries, k]`, identical to `ranked(popularity_blocks(), k)`.
        """
        catalog, n_items = self.catalog, len(self.item_ids)
        k = min(k, n_items)
        out = np.zeros((len(self), k), np.int64)
        for row, seen in enumerate(self.seen):
            hidden = len(seen) + len(catalog.created_after(self.query_times[row]))
            prefix = catalog.popularity_order[: k + hidden]
            allowed = ~np.isin(prefix, seen) & ~(self.created_at[prefix] > self.query_times[row])
            top = prefix[allowed][:k]
            if len(top) < k:  # the catalog minus this query's exclusions is smaller than k
                block = np.broadcast_to(self.popularity, (1, n_items))
                top = self.ranked([block], k, start=row)[0]
            out[row] = top
        return out
