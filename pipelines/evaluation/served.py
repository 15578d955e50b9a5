"""Eval queries answered the way production answers them: query tower -> index search, items
the user already saw excluded (and items not created yet at the query's moment, as every model
of the evaluation is scored: `tfrs_models.quick_eval`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.evaluation.ann import ann_section
from pipelines.evaluation.evalset import EvalSet


def evaluate_served(model, evalset: EvalSet) -> tuple[dict, np.ndarray, dict]:
    """Metrics of a `ServingModel` through its index, and the index's recall vs exact search.

    Returns:
        (metrics, ranked eval-catalog indices `[n, kmax]` (-1: no result), ann section).
    """
    ranked, vectors = served_ranking(model, evalset)
    return evalset.metrics(ranked), ranked, ann_section(model, vectors)


def served_ranking(
    model, evalset: EvalSet, rows: ServedRows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The eval queries (or a chunk of them) answered by a `ServingModel`, seen items and items
    created after the query's moment excluded.

    Args:
        rows: `ServedRows(model, evalset.item_ids)`, when the caller keeps it across chunks.

    Returns:
        (ranked eval-catalog indices int `[n, kmax]` (-1: no result), query vectors `[n, d]`).
    """
    rows = rows or ServedRows(model, evalset.item_ids)
    vectors = model.embed(evalset.queries)
    found, _ = model.index.search(vectors, max(evalset.cfg.ks), exclude=rows.excluded(evalset))
    return rows.to_eval[found], vectors


class ServedRows:
    """A served model's index rows and the eval catalog, mapped both ways by item id once.

    Attributes:
        to_eval: `eval_catalog_rows(model.item_ids, eval_items)`.
    """

    def __init__(self, model, eval_items):
        self.model = model
        self.to_eval = eval_catalog_rows(model.item_ids, eval_items)
        self.by_id = pd.Index([str(item).encode() for item in model.item_ids])
        self._created = None  # (creation times in order, this index's rows of those items)

    def excluded(self, evalset) -> list[np.ndarray]:
        """Per query, the index rows it may not be shown: its seen items, then the items of
        the eval catalog created after its moment (`evalset.query_times`) that this index
        holds."""
        seen = self.seen(evalset)
        if self._created is None:  # the eval catalog is every chunk's: map it once
            rows = self.by_id.get_indexer([str(item).encode() for item in evalset.created_ids])
            held = rows >= 0
            self._created = (evalset.created_times[held], rows[held].astype(np.int64))
        times, rows = self._created
        starts = np.searchsorted(times, evalset.query_times, side="right")
        return [
            np.concatenate([own, rows[start:]]) if start < len(rows) else own
            for own, start in zip(seen, starts, strict=True)
        ]

    def seen(self, evalset) -> list[np.ndarray]:
        """Per query, the index rows of its seen items (ids the index lacks dropped), as
        `model.rows` gives them, from the eval set's flat seen ids when it has them."""
        if not hasattr(evalset, "seen_flat"):
            return [self.model.rows(seen) for seen in evalset.seen_ids]
        flat = self.by_id.get_indexer(evalset.seen_flat).astype(np.int64)
        splits = evalset.seen_splits
        return [r[r >= 0] for r in np.split(flat, splits[1:-1])] if len(splits) > 1 else []


def to_eval_catalog(found: np.ndarray, index_items, eval_items) -> np.ndarray:
    """Index rows `[n, k]` (-1: no result) as eval-catalog indices (-1: not in that catalog).

    A served model's index and the eval catalog may hold different items (a champion trained
    on an older window), so results are mapped by item id.
    """
    return eval_catalog_rows(index_items, eval_items)[found]


def eval_catalog_rows(index_items, eval_items) -> np.ndarray:
    """int `[len(index_items) + 1]`: the eval-catalog index of each index row (-1: not in the
    eval catalog), then -1, so that `mapping[found]` maps "no result" (-1) to -1."""
    rows = pd.Index(np.asarray(eval_items)).get_indexer(np.asarray(index_items))
    return np.append(rows.astype(np.int64), -1)
