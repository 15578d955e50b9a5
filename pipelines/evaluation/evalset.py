"""The eval queries of a feature run, with targets, seen items and slices, in one item space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import EvalConfig
from pipelines.metrics import per_query_metrics, ranking_metrics
from pipelines.schema import LABEL_ITEM_IDS, SEEN_ITEM_IDS, USER_ID


class EvalSet:
    """The eval queries with targets, seen items and slice definitions, in one item space.

    Every eval query is a user active in the eval period, with its point-in-time history at the
    eval start. Item indices refer to the feature run's catalog (`item_ids`). Targets are the
    eval-period items minus those seen before it. Slices: users warm (in the training
    vocabulary) or cold; target items in the head (most popular items taking `head_share` of
    training interactions), the tail (the rest with training interactions) or cold (no
    training interaction).

    `EvalSet(...)` holds all its queries; `EvalSet.chunks(...)` streams the same queries as
    consecutive `EvalSet`s of a bounded number of queries (the evaluation step's way).

    Attributes:
        features: the feature run (`tfrs_models.data.FeatureSet`).
        item_ids: the eval catalog, `[n_items]`.
        targets: per query, the eval-catalog indices of its target items.
        queries: the query tower's raw inputs as numpy arrays `[n, ...]`, keyed by input name.
        seen_ids: per query, the item ids seen before the eval start (excluded from results).
        query_times: float `[n]`, each query's moment (epoch seconds): items created after it
            are excluded from its results.
        created_ids, created_times: the catalog items with a known creation time, oldest
            first, and those times.
        users: per query, the user id.
        warm_user: bool `[n]`: the user is in the training vocabulary.
        item_slice: `[n_items]` of "head", "tail" or "cold".
    """

    def __init__(self, features_dir: str | Path, cfg: EvalConfig, seed: int = 0):
        from tfrs_models.data import FeatureSet
        from tfrs_models.quick_eval import QuickEval

        features = FeatureSet.load(features_dir)
        shared = _Shared(features, cfg)
        self._attach(QuickEval(features, cfg.max_queries, seed), cfg, shared)

    @classmethod
    def chunks(cls, features_dir: str | Path, cfg: EvalConfig, seed: int = 0, rows: int = 0):
        """The queries of `EvalSet(features_dir, cfg, seed)` as consecutive `EvalSet`s of `rows`
        queries each (0: `tfrs_models.quick_eval.QUERY_CHUNK`); one empty chunk for no query.
        """
        from tfrs_models.data import FeatureSet
        from tfrs_models.quick_eval import QUERY_CHUNK, QuickEval

        features = FeatureSet.load(features_dir)
        shared = _Shared(features, cfg)
        for quick in QuickEval.chunks(features, cfg.max_queries, seed, rows=rows or QUERY_CHUNK):
            chunk = cls.__new__(cls)
            chunk._attach(quick, cfg, shared)
            yield chunk

    def _attach(self, quick, cfg: EvalConfig, shared: _Shared):
        self.quick, self.cfg, self.features = quick, cfg, quick.features
        self.item_ids = quick.item_ids
        self.targets = quick.targets
        self.queries = {
            k: v.numpy()
            for k, v in quick.queries.items()
            if k not in (SEEN_ITEM_IDS, LABEL_ITEM_IDS)
        }
        seen = quick.queries[SEEN_ITEM_IDS]
        # Flat (bytes) with row splits: a served model maps them to its rows in one lookup.
        self.seen_flat, self.seen_splits = seen.flat_values.numpy(), seen.row_splits.numpy()
        self.users = [u.decode() for u in self.queries[USER_ID]]
        self.warm_user = np.array([u in shared.train_users for u in self.users], dtype=bool)
        self.item_slice = shared.item_slice
        # When each query was asked, and the catalog's items with a known creation time, oldest
        # first: a query is not shown items created after its moment (`quick_eval`).
        self.query_times = quick.query_times
        self.created_ids = quick.item_ids[quick.catalog.created_rows]
        self.created_times = quick.catalog.created_sorted

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def seen_ids(self) -> list[list[str]]:
        """Per query, the item ids seen before the eval start."""
        flat = [x.decode() for x in self.seen_flat]
        return [flat[a:b] for a, b in zip(self.seen_splits[:-1], self.seen_splits[1:], strict=True)]

    def metrics(self, ranked: np.ndarray) -> dict:
        """All metrics plus slices for ranked eval-catalog indices `[n, >= max(ks)]`."""
        return slice_metrics(ranked, self.targets, self.warm_user, self.item_slice, self.cfg.ks)

    def ranked_from_scores(self, blocks) -> np.ndarray:
        """Top max(K) eval-catalog indices from score blocks (seen items excluded)."""
        return self.quick.ranked(blocks, max(self.cfg.ks))

    def popularity_ranked(self) -> np.ndarray:
        """Top max(K) eval-catalog indices by training popularity (seen items excluded): the
        same as `ranked_from_scores` of popularity blocks, without a catalog pass per query."""
        return self.quick.popularity_ranked(max(self.cfg.ks))


class _Shared:
    """What every chunk of an eval set shares: the training users and the items' slices."""

    def __init__(self, features, cfg: EvalConfig):
        self.train_users = set(features.vocab[USER_ID])
        counts = features.catalog["train_count"].to_numpy(np.float64)
        self.item_slice = item_slices(counts, cfg.head_share)


def slice_metrics(
    ranked: np.ndarray,
    targets: list[np.ndarray],
    warm_user: np.ndarray,
    item_slice: np.ndarray,
    ks: list[int],
    values: dict[str, np.ndarray] | None = None,
) -> dict:
    """`ranking_metrics` of ranked eval-catalog indices, plus the user and item slices.

    Args:
        ranked: int `[n, >= max(ks)]`, best first (-1 = padding).
        targets: n arrays of target eval-catalog indices.
        warm_user: bool `[n]`, the query's user is in the training vocabulary.
        item_slice: `[n_items]` of "head", "tail" or "cold" (`item_slices`).
        ks: cutoffs.
        values: `per_query_metrics(ranked, targets, ks)` when the caller has it already.

    Returns:
        The metrics, with `slices`: `warm_users` / `cold_users` (all metrics on those queries)
        and `head_items` / `tail_items` / `cold_items` (recall and queries on those targets).
    """
    n = len(item_slice)
    if values is None:
        values = per_query_metrics(ranked, targets, ks)
    out = ranking_metrics(ranked, targets, ks, n, values)
    # A query's values do not depend on the other queries: a user slice takes its rows' values.
    scored = np.array([len(t) > 0 for t in targets], dtype=bool)
    position = np.cumsum(scored) - 1
    slices = {}
    for name, mask in (("warm_users", warm_user), ("cold_users", ~warm_user)):
        rows = np.flatnonzero(mask)
        kept = position[rows[scored[rows]]]
        sub = {key: value[kept] for key, value in values.items()}
        slices[name] = ranking_metrics(ranked[rows], [targets[i] for i in rows], ks, n, sub)
    for name in ("head", "tail", "cold"):
        kept = [t[item_slice[t] == name] for t in targets]
        slices[f"{name}_items"] = {
            key: value
            for key, value in ranking_metrics(ranked, kept, ks, n).items()
            if key.startswith(("recall", "queries"))
        }
    out["slices"] = slices
    return out


def item_slices(train_counts: np.ndarray, head_share: float) -> np.ndarray:
    """Each item's popularity slice from its training interaction count.

    Args:
        train_counts: float `[n_items]`, training interactions per item.
        head_share: the share of training interactions the head items take together.

    Returns:
        object `[n_items]`: "head" for the most popular items up to and including the one that
        reaches `head_share` of the interactions (ties broken by catalog order), "cold" for
        items without training interactions, "tail" for the rest.
    """
    order = np.argsort(-train_counts, kind="stable")
    share = np.cumsum(train_counts[order]) / max(train_counts.sum(), 1.0)
    head = order[: int(np.searchsorted(share, head_share) + 1)]
    out = np.full(len(train_counts), "tail", dtype=object)
    out[head] = "head"
    out[train_counts == 0] = "cold"
    return out
