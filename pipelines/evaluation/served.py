"""Eval queries answered the way production answers them: query tower -> index search, items
the user already saw excluded."""

from __future__ import annotations

import numpy as np

from pipelines.evaluation.ann import ann_section
from pipelines.evaluation.evalset import EvalSet


def evaluate_served(model, evalset: EvalSet) -> tuple[dict, np.ndarray, dict]:
    """Metrics of a `ServingModel` through its index, and the index's recall vs exact search.

    Returns:
        (metrics, ranked eval-catalog indices `[n, kmax]` (-1: no result), ann section).
    """
    kmax = max(evalset.cfg.ks)
    vectors = model.embed(evalset.queries)
    exclude = [model.rows(seen) for seen in evalset.seen_ids]
    found, _ = model.index.search(vectors, kmax, exclude=exclude)
    ranked = to_eval_catalog(found, model.item_ids, evalset.item_ids)
    return evalset.metrics(ranked), ranked, ann_section(model, vectors)


def to_eval_catalog(found: np.ndarray, index_items, eval_items) -> np.ndarray:
    """Index rows `[n, k]` (-1: no result) as eval-catalog indices (-1: not in that catalog).

    A served model's index and the eval catalog may hold different items (a champion trained
    on an older window), so results are mapped by item id.
    """
    to_eval = {item: i for i, item in enumerate(eval_items)}
    mapping = np.array([to_eval.get(item, -1) for item in index_items] + [-1], dtype=np.int64)
    return mapping[found]  # -1 (no result) maps through the appended -1
