"""Means, bootstrap intervals and paired differences of models scored on the same queries.

The queries are a sample, so every headline metric (recall@K, NDCG@K, hit rate@K, MRR) gets a
percentile-bootstrap interval over the queries, and challenger - popularity and challenger -
champion get paired intervals (one resampling of the queries for both models). Coverage is a
property of the whole set of recommendations and gets no interval.
"""

from __future__ import annotations

import numpy as np

from pipelines.config import EvalConfig
from pipelines.metrics import bootstrap_means, percentile_interval

# Fixed so that re-evaluating the same queries reproduces the same intervals.
BOOTSTRAP_SEED = 0
# (model, baseline) pairs reported in `differences`, when both were evaluated.
COMPARISONS = (("challenger", "popularity"), ("challenger", "champion"))
# Models whose primary-metric replicates are kept for the gate's own margins.
GATED = ("challenger", "champion", "popularity")


def compare_models(per_query: dict[str, dict[str, np.ndarray]], cfg: EvalConfig) -> dict:
    """Means, bootstrap intervals and paired differences of models scored on the same queries.

    One resampling of the queries serves every model and metric, so each difference's interval
    is paired and the gate can bootstrap its own margins from the kept replicates.

    Args:
        per_query: model name -> `per_query_metrics` output (float `[n]` per metric; the same n
            queries in the same order for every model).
        cfg: `ks`, `primary_metric`, `bootstrap_samples` (0 = means only) and `confidence`.

    Returns:
        Sections to merge into `metrics.json`:
        - per model: `queries` (n) and the mean of each metric; when bootstrapping also `ci`
          `{metric: [low, high]}` and, for challenger / champion / popularity, `bootstrap`
          `{"metric": primary, "means": [B]}`, the primary metric's mean in each resample (the
          same resamples for every model);
        - `differences` (when bootstrapping): `{"challenger-popularity": {metric: {"diff": d,
          "ci": [low, high]}}, "challenger-champion": ...}` for the pairs both evaluated;
        - `eval` (when bootstrapping): `{"bootstrap": {"samples", "confidence", "seed"}}`.

    Raises:
        ValueError: the models' per-query arrays do not cover the same number of queries.
    """
    columns = [(model, metric) for model, values in per_query.items() for metric in values]
    lengths = {model: len(next(iter(values.values()))) for model, values in per_query.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"models were scored on different queries {lengths}: a paired comparison needs the "
            "same eval queries (the same EvalSet) for every model"
        )
    out: dict[str, dict] = {
        model: {
            "queries": lengths[model],
            **{metric: float(np.mean(v)) if len(v) else 0.0 for metric, v in values.items()},
        }
        for model, values in per_query.items()
    }
    samples, confidence = cfg.bootstrap_samples, cfg.confidence
    if not samples or not columns:
        return out
    matrix = np.stack([per_query[model][metric] for model, metric in columns], axis=1)
    replicates = dict(zip(columns, bootstrap_means(matrix, samples, BOOTSTRAP_SEED).T, strict=True))
    for model, values in per_query.items():
        out[model]["ci"] = {
            metric: list(percentile_interval(replicates[model, metric], confidence))
            for metric in values
        }
        if model in GATED and (model, cfg.primary_metric) in replicates:
            means = replicates[model, cfg.primary_metric].tolist()
            out[model]["bootstrap"] = {"metric": cfg.primary_metric, "means": means}
    out["differences"] = {
        f"{model}-{baseline}": {
            metric: _paired_difference(out, replicates, model, baseline, metric, confidence)
            for metric in per_query[model]
        }
        for model, baseline in COMPARISONS
        if model in per_query and baseline in per_query
    }
    out["eval"] = {
        "bootstrap": {"samples": samples, "confidence": confidence, "seed": BOOTSTRAP_SEED}
    }
    return out


def _paired_difference(
    means: dict, replicates: dict, model: str, baseline: str, metric: str, confidence: float
) -> dict:
    """`{"diff": mean difference, "ci": [low, high]}` from replicates on the same resamples."""
    diff = replicates[model, metric] - replicates[baseline, metric]
    return {
        "diff": means[model][metric] - means[baseline][metric],
        "ci": list(percentile_interval(diff, confidence)),
    }
