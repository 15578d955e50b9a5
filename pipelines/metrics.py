"""Retrieval metrics on ranked lists, with seen items already excluded by the caller.

Means over queries (`ranking_metrics`), the per-query values behind them
(`per_query_metrics`) and percentile-bootstrap confidence intervals over queries for a mean
(`bootstrap_ci`) and for the difference of two models on the same queries
(`paired_bootstrap_ci`).
"""

from __future__ import annotations

import numpy as np

# Bytes of one block of exact scores (queries x catalog items) held at once. Every exact
# scoring of queries against the catalog (evaluation, validation recall, the oracle, the index
# tuning's ground truth) goes in blocks of `score_block_rows` queries, so its peak memory stays
# a small multiple of this whatever the catalog size: with 1M items, 32 float32 rows a block.
SCORE_BLOCK_BYTES = 128 << 20


def score_block_rows(n_items: int, cell_bytes: int = 4) -> int:
    """Query rows per block of exact scores: as many as fit `SCORE_BLOCK_BYTES`, at least one.

    Args:
        n_items: catalog items scored per query (the block's columns).
        cell_bytes: bytes of one score (4 for float32, 8 for float64).
    """
    return max(1, SCORE_BLOCK_BYTES // (cell_bytes * max(1, n_items)))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first: int `[n, k]`.

    Ties go to the lower index, also at the cut: of several items scoring the k-th highest
    score, the lowest indices make the top k, so a ranking does not depend on what else the
    row holds.

    Wide rows (a catalog) are cut down first: the k-th highest score of every 16th column is
    at most the row's k-th highest, so the items scoring at least that hold the whole top k
    (and every tie at its cut), about 16 k of them; only those are partitioned and sorted.
    That is several times faster than partitioning the whole row.
    """
    k = min(k, scores.shape[1])
    stride = min(_SAMPLE_STRIDE, scores.shape[1] // max(1, 4 * k))
    if k == 0 or stride < 2:
        return _top_k_rows(scores, k)
    sample = scores[:, ::stride]
    floor = -np.partition(-sample, k - 1, axis=1)[:, k - 1]
    out = np.empty((len(scores), k), np.int64)
    for row, (values, least) in enumerate(zip(scores, floor, strict=True)):
        candidates = np.flatnonzero(values >= least)
        if len(candidates) < k:  # NaN scores: no usable floor, rank the whole row
            out[row] = _top_k_rows(values[None], k)[0]
        else:
            out[row] = candidates[_top_k_rows(values[candidates][None], k)[0]]
    return out


_SAMPLE_STRIDE = 16


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """`top_k` by partitioning whole rows."""
    if k == 0:
        return np.zeros((len(scores), 0), np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    kth = values.min(axis=1)
    # Rows where items outside the partition tie with the k-th score: take the lowest indices.
    tied_part = (values == kth[:, None]).sum(axis=1)
    for row in np.flatnonzero((scores == kth[:, None]).sum(axis=1) > tied_part):
        above = part[row][scores[row, part[row]] > kth[row]]
        ties = np.flatnonzero(scores[row] == kth[row])[: k - len(above)]
        part[row] = np.concatenate([above, ties])
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def recall_at_k(ranked: np.ndarray, targets: list[np.ndarray]) -> float:
    """Mean over queries of |top-k ∩ targets| / |targets|, skipping queries without targets.

    Args:
        ranked: int `[n, k]` item indices, best first.
        targets: n arrays of target item indices.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    lengths, owner, target_keys, width = _target_keys(ranked, targets)
    if not lengths.any():
        return 0.0
    row_keys = np.where(ranked >= 0, np.arange(len(ranked))[:, None] * width + ranked, -1)
    found = _members(target_keys, _sorted_unique(row_keys.ravel()))  # each target, repeats too
    per_query = np.bincount(owner, found, minlength=len(targets))[lengths > 0]
    return float(np.mean(per_query / lengths[lengths > 0]))


def _target_keys(ranked: np.ndarray, targets: list[np.ndarray]):
    """Every target as one int key `query * width + item`, with `width` above every item index
    in `ranked` and `targets`: (per-query target counts, each key's query, the keys, width)."""
    lengths = np.fromiter((len(t) for t in targets), np.int64, len(targets))
    owner = np.repeat(np.arange(len(targets), dtype=np.int64), lengths)
    flat = (
        np.concatenate([np.asarray(t, np.int64) for t in targets])
        if lengths.any()
        else np.zeros(0, np.int64)
    )
    width = int(max(flat.max(initial=0), ranked.max(initial=0))) + 1
    return lengths, owner, owner * width + flat, width


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (`np.unique`'s hash path is slower here)."""
    values = np.sort(values, kind="stable")
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _members(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """`np.isin(values, sorted_keys)` for sorted unique int keys, by binary search (isin's
    own choice for keys spanning queries x catalog can be a lookup table that size)."""
    if not len(sorted_keys):
        return np.zeros(values.shape, bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


def _keyed_members(rows: np.ndarray, owners: np.ndarray, keys: np.ndarray, width: int):
    """bool, `rows`' shape: whether `owner * width + item` is in the sorted `keys`, for each
    item of `rows` (int `[m, k]`, -1 = padding, never a member) and its row's owner `[m]`."""
    return _members(owners[:, None] * width + rows, keys) & (rows >= 0)


def row_members(ranked: np.ndarray, sets: list[np.ndarray]) -> np.ndarray:
    """bool `[n, k]`: whether `ranked[i, j]` is in `sets[i]`, for all rows at once (one
    `np.isin` per row was most of an excluding search's Python time on 41k queries).

    Args:
        ranked: int `[n, k]` item indices (-1 = padding, never a member).
        sets: n arrays of item indices (empty ones allowed).
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    _, _, keys, width = _target_keys(ranked, sets)
    owners = np.arange(len(ranked), dtype=np.int64)
    return _keyed_members(ranked, owners, _sorted_unique(keys), width)


def hit_matrix(ranked: np.ndarray, targets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Which ranked items are targets, for the queries that have targets.

    One vectorised membership test over (query, item) keys instead of one `np.isin` per query
    (which made metrics most of the evaluation step's time on 43k eval queries).

    Args:
        ranked: int `[n, k]` item indices, best first (-1 = padding, never a hit).
        targets: n arrays of target item indices (repeats count once).

    Returns:
        bool `[n_scored, k]` hits and float `[n_scored]` distinct-target counts, for the
        queries with at least one target, in the order of `targets`.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    lengths, _, target_keys, width = _target_keys(ranked, targets)
    scored = np.flatnonzero(lengths)
    if not len(scored):
        return np.zeros((0, ranked.shape[1]), bool), np.zeros(0)
    keys = _sorted_unique(target_keys)
    sizes = np.bincount(keys // width, minlength=len(targets))[scored].astype(np.float64)
    return _keyed_members(ranked[scored], scored, keys, width), sizes


def per_query_metrics(
    ranked: np.ndarray, targets: list[np.ndarray], ks: list[int]
) -> dict[str, np.ndarray]:
    """Recall@K, NDCG@K and hit rate@K for each K and MRR@max(K), one value per scored query.

    The conventions are those of `ranking_metrics` (whose means these are); queries without
    targets are left out, so every array has one entry per query that has targets, in the
    order of `targets`. Models ranked for the same queries therefore give aligned arrays,
    which is what a paired comparison needs.

    Args:
        ranked: int `[n, >= max(ks)]` item indices, best first (-1 = padding).
        targets: n arrays of relevant item indices.
        ks: cutoffs.

    Returns:
        `{"recall@K": float [n_scored], "ndcg@K": ..., "hit_rate@K": ..., "mrr@max(K)": ...}`.
    """
    kmax = max(ks)
    ranked = np.asarray(ranked)[:, :kmax]
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    found_hits, sizes = hit_matrix(ranked, targets)
    hits = np.zeros((len(sizes), kmax), dtype=bool)
    hits[:, : found_hits.shape[1]] = found_hits
    ideal_sums = np.concatenate([[0.0], np.cumsum(discounts)])
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        found = h.sum(axis=1)
        ideal = ideal_sums[np.minimum(k, sizes).astype(np.int64)]
        out[f"recall@{k}"] = found / sizes
        out[f"ndcg@{k}"] = (h * discounts[:k]).sum(axis=1) / ideal
        out[f"hit_rate@{k}"] = (found > 0).astype(np.float64)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    out[f"mrr@{kmax}"] = 1.0 / first
    return out


def ranking_metrics(
    ranked: np.ndarray,
    targets: list[np.ndarray],
    ks: list[int],
    n_items: int,
    values: dict[str, np.ndarray] | None = None,
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
    - rows may be padded with -1 (fewer results than K); padding never counts as a hit;
    - with no scored query every mean is 0.0.

    Args:
        ranked: int `[n, >= max(ks)]` item indices, best first.
        targets: n arrays of relevant item indices.
        ks: cutoffs.
        n_items: catalog size for coverage.
        values: `per_query_metrics(ranked, targets, ks)` when the caller has it already.
    """
    kmax = max(ks)
    ranked = np.asarray(ranked)[:, :kmax]
    if values is None:
        values = per_query_metrics(ranked, targets, ks)
    n = len(values[f"mrr@{kmax}"])

    def mean(key: str) -> float:
        return float(np.mean(values[key])) if n else 0.0

    out: dict[str, float] = {"queries": n}
    for k in ks:
        out[f"recall@{k}"] = mean(f"recall@{k}")
        out[f"ndcg@{k}"] = mean(f"ndcg@{k}")
        out[f"hit_rate@{k}"] = mean(f"hit_rate@{k}")
        top = ranked[:, :k]
        out[f"coverage@{k}"] = float(len(np.unique(top[top >= 0])) / n_items) if n_items else 0.0
    out[f"mrr@{kmax}"] = mean(f"mrr@{kmax}")
    return out


def recall_curve(ranked: np.ndarray, targets: list[np.ndarray], kmax: int) -> np.ndarray:
    """Recall@K for K = 1..kmax (same conventions as `ranking_metrics`): float `[kmax]`."""
    found, sizes = hit_matrix(np.asarray(ranked)[:, :kmax], targets)
    if not len(sizes):
        return np.zeros(kmax)
    hits = np.zeros((len(sizes), kmax))
    hits[:, : found.shape[1]] = found
    return np.mean(np.cumsum(hits, axis=1) / sizes[:, None], axis=0)


# Resampled query indices held in memory at once (int64): bounds a bootstrap's peak memory.
_BOOTSTRAP_CHUNK = 1 << 22


def bootstrap_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of `samples` resamples, with replacement, of the rows (queries) of `values`.

    Every column is resampled with the same row indices, so the replicates of two columns
    (two models, or two metrics, on the same queries) stay paired: the replicates of any
    linear combination of columns are that combination of the columns' replicates.

    Args:
        values: float `[n]` or `[n, m]`, one row per query.
        samples: number of resamples B (>= 1).
        seed: seed of the resampling; the same (n, samples, seed) draws the same indices.

    Returns:
        float `[samples]` (for `[n]` input) or `[samples, m]`. With n = 0 every replicate is
        0.0, the convention `ranking_metrics` uses for a mean over no query.
    """
    values = np.asarray(values, dtype=np.float64)
    matrix = values[:, None] if values.ndim == 1 else values
    n = len(matrix)
    out = np.zeros((samples, matrix.shape[1]))
    if n:
        rng = np.random.default_rng(seed)
        step = max(1, _BOOTSTRAP_CHUNK // n)
        for start in range(0, samples, step):
            b = min(step, samples - start)
            rows = rng.integers(0, n, size=(b, n))
            # How often each query was drawn in each resample: [b, n]; the mean is then one
            # matrix product for every column at once.
            counts = np.bincount(
                (rows + n * np.arange(b)[:, None]).ravel(), minlength=b * n
            ).reshape(b, n)
            out[start : start + b] = counts @ matrix / n
    return out[:, 0] if values.ndim == 1 else out


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` percentile interval of bootstrap replicates `[B]`."""
    low, high = np.quantile(replicates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_ci(
    values: np.ndarray, samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of per-query values.

    Args:
        values: float `[n]`, one value per query (e.g. `per_query_metrics(...)["recall@100"]`).
        samples: resamples of the queries.
        confidence: e.g. 0.95 for the 2.5th..97.5th percentiles of the resampled means.
        seed: resampling seed.

    Returns:
        (low, high).
    """
    return percentile_interval(bootstrap_means(values, samples, seed), confidence)


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of mean(a) - mean(b) on the same queries.

    Each resample draws one set of query indices for both models, so what the queries have
    in common (easy or hard users) cancels out of the difference.

    Args:
        a, b: float `[n]`, the per-query values of two models, aligned query by query.
        samples, confidence, seed: as in `bootstrap_ci`.

    Returns:
        (low, high) of the difference.

    Raises:
        ValueError: `a` and `b` do not hold the same number of queries.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"a paired bootstrap needs the same queries for both models: got {a.shape[0]} and "
            f"{b.shape[0]} values; compute both with the same targets"
        )
    means = bootstrap_means(np.stack([a, b], axis=1), samples, seed)
    return percentile_interval(means[:, 0] - means[:, 1], confidence)
