"""Eval queries answered the way production answers them: query tower -> index search, items
the user already saw excluded."""

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
    model, evalset: EvalSet, mapping: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The eval queries (or a chunk of them) answered by a `ServingModel`, seen items excluded.

    Args:
        mapping: `eval_catalog_rows(model.item_ids, evalset.item_ids)`, when the caller keeps
            it across chunks.

    Returns:
        (ranked eval-catalog indices int `[n, kmax]` (-1: no result), query vectors `[n, d]`).
    """
    vectors = model.embed(evalset.queries)
    exclude = [model.rows(seen) for seen in evalset.seen_ids]
    found, _ = model.index.search(vectors, max(evalset.cfg.ks), exclude=exclude)
    if mapping is None:
        mapping = eval_catalog_rows(model.item_ids, evalset.item_ids)
    return mapping[found], vectors


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
