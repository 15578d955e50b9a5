"""Offline evaluation through the serving path, on the run's eval period.

Every eval query (a user active in the eval period, with its point-in-time history at the eval
start) is answered the way production answers it: query tower SavedModel -> index search,
items the user already saw excluded. In the same run, on the same queries:

    challenger   the bundle this run trained and indexed
    champion     the production bundle, loaded and re-evaluated now (not its stored numbers)
    popularity   training-window interaction counts
    oracle       the generator's true model, when the source is synthetic

Outputs in `out_dir`: `metrics.json` (one section per model, keyed `recall@100`, `ndcg@10`, ...,
with slices; plus `ann` for the challenger's index), `report.md`, `recall_at_k.png`.

Uncertainty: the queries are a sample, so every headline metric (recall@K, NDCG@K, hit rate@K,
MRR) gets a percentile-bootstrap interval over the queries (`ci` in each model's section), and
`differences` holds challenger - popularity and challenger - champion with paired intervals
(one resampling of the queries for both models). Coverage is a property of the whole set of
recommendations and gets no interval.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipelines.config import EvalConfig
from pipelines.metrics import (
    bootstrap_means,
    per_query_metrics,
    percentile_interval,
    ranking_metrics,
    recall_curve,
)

log = logging.getLogger(__name__)

_ANN_SAMPLE = 5000
# Fixed so that re-evaluating the same queries reproduces the same intervals.
BOOTSTRAP_SEED = 0
# (model, baseline) pairs reported in `differences`, when both were evaluated.
_COMPARISONS = (("challenger", "popularity"), ("challenger", "champion"))
# Models whose primary-metric replicates are kept for the gate's own margins.
_GATED = ("challenger", "champion", "popularity")


class EvalSet:
    """The eval queries with targets, seen items and slice definitions, in one item space.

    Item indices refer to the feature run's catalog (`item_ids`). Targets are the eval-period
    items minus those seen before it. Slices: users warm (in the training vocabulary) or cold;
    target items in the head (most popular items taking `head_share` of training interactions),
    the tail (the rest with training interactions) or cold (no training interaction).
    """

    def __init__(self, features_dir: str | Path, cfg: EvalConfig, seed: int = 0):
        from tfrs_models.data import FeatureSet
        from tfrs_models.quick_eval import QuickEval

        self.features = FeatureSet.load(features_dir)
        self.quick = QuickEval(self.features, cfg.max_queries, seed)
        self.cfg = cfg
        self.item_ids = self.quick.item_ids
        self.targets = self.quick.targets
        self.queries = {
            k: v.numpy()
            for k, v in self.quick.queries.items()
            if k not in ("seen_item_ids", "label_item_ids")
        }
        self.seen_ids = [
            [x.decode() for x in row] for row in self.quick.queries["seen_item_ids"].to_list()
        ]
        self.users = [u.decode() for u in self.queries["user_id"]]
        train_users = set(self.features.vocab["user_id"])
        self.warm_user = np.array([u in train_users for u in self.users])
        counts = self.features.catalog["train_count"].to_numpy(np.float64)
        order = np.argsort(-counts, kind="stable")
        share = np.cumsum(counts[order]) / max(counts.sum(), 1.0)
        head = order[: int(np.searchsorted(share, cfg.head_share) + 1)]
        self.item_slice = np.full(len(counts), "tail", dtype=object)
        self.item_slice[head] = "head"
        self.item_slice[counts == 0] = "cold"

    def __len__(self) -> int:
        return len(self.targets)

    def metrics(self, ranked: np.ndarray) -> dict:
        """All metrics plus slices for ranked eval-catalog indices `[n, >= max(ks)]`."""
        ks, n = self.cfg.ks, len(self.item_ids)
        out = ranking_metrics(ranked, self.targets, ks, n)
        slices = {}
        for name, mask in (("warm_users", self.warm_user), ("cold_users", ~self.warm_user)):
            rows = np.flatnonzero(mask)
            slices[name] = ranking_metrics(ranked[rows], [self.targets[i] for i in rows], ks, n)
        for name in ("head", "tail", "cold"):
            targets = [t[self.item_slice[t] == name] for t in self.targets]
            slices[f"{name}_items"] = {
                key: value
                for key, value in ranking_metrics(ranked, targets, ks, n).items()
                if key.startswith(("recall", "queries"))
            }
        out["slices"] = slices
        return out

    def ranked_from_scores(self, blocks) -> np.ndarray:
        """Top max(K) eval-catalog indices from score blocks (seen items excluded)."""
        return self.quick.ranked(blocks, max(self.cfg.ks))


def evaluate_served(model, evalset: EvalSet) -> tuple[dict, np.ndarray, dict]:
    """Metrics of a `ServingModel` through its index, and the index's recall vs exact search.

    Returns:
        (metrics, ranked eval-catalog indices `[n, kmax]`, ann section).
    """
    kmax = max(evalset.cfg.ks)
    vectors = model.embed(evalset.queries)
    exclude = [model.rows(seen) for seen in evalset.seen_ids]
    found, _ = model.index.search(vectors, kmax, exclude=exclude)
    to_eval = {item: i for i, item in enumerate(evalset.item_ids)}
    mapping = np.array([to_eval.get(item, -1) for item in model.item_ids] + [-1], dtype=np.int64)
    ranked = mapping[found]  # -1 (no result) maps through the appended -1
    return evalset.metrics(ranked), ranked, ann_section(model, vectors)


def ann_section(model, vectors: np.ndarray) -> dict:
    """Index recall@k vs exact search over the same vectors, on (a sample of) eval queries."""
    from scann_index.index import ann_recall, exact_top_k

    embeddings = np.load(model.directory / "item_embeddings.npy")
    k = model.index.manifest["k"]
    sample = vectors[
        np.random.default_rng(0).choice(len(vectors), min(len(vectors), _ANN_SAMPLE), replace=False)
    ] if len(vectors) else vectors  # fmt: skip
    found, _ = model.index.search(sample, k)
    tuned = model.index.manifest.get("tuned") or {}
    return {
        "kind": model.index.kind,
        "k": k,
        f"recall@{k}": ann_recall(found, exact_top_k(embeddings, sample, k)),
        "queries": int(len(sample)),
        "latency_p50_ms": tuned.get("latency_p50_ms"),
        "latency_p99_ms": tuned.get("latency_p99_ms"),
        "qps_batched": tuned.get("qps_batched"),
        "size_mb": round(model.index.manifest.get("size_bytes", 0) / 2**20, 3),
        "build_seconds": model.index.manifest.get("build_seconds"),
    }


def evaluate(
    features_dir: str | Path,
    challenger_dir: str | Path,
    champion_dir: str | Path | None,
    out_dir: str | Path,
    cfg: EvalConfig,
    truth_dir: str | Path | None = None,
    champion_excluded: str | None = None,
    measured_weights: str | None = None,
    final_fit: dict | None = None,
    champion_weights: str | None = None,
) -> dict:
    """Evaluate challenger, champion, popularity and (synthetic data) the oracle; write reports.

    Args:
        features_dir: the feature run whose eval period is used.
        challenger_dir / champion_dir: served directories (`pipelines.serving`).
        truth_dir: a synthetic source with `_truth/` (None or real data: no oracle).
        champion_excluded: why the production model was not evaluated here (recorded for the
            gate and the report), if it was left out.
        measured_weights: which weights of the run `challenger_dir` holds (`eval.measured_weights`).
        final_fit: what the shipped model trained on after the measured weights
            (`eval.final_fit`: epochs, examples, trained_until, ...), or None without a final fit.
        champion_weights: which of the production bundle's weights `champion_dir` holds.

    Returns:
        The `metrics.json` content.
    """
    from pipelines.serving import ServingModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evalset = EvalSet(features_dir, cfg)
    log.info("evaluate: %d eval queries, %d catalog items", len(evalset), len(evalset.item_ids))
    metrics, curves = {}, {}
    challenger = ServingModel(challenger_dir)
    metrics["challenger"], ranked, metrics["ann"] = evaluate_served(challenger, evalset)
    curves["challenger"] = ranked
    if champion_dir is not None:
        champion = ServingModel(champion_dir)
        metrics["champion"], curves["champion"], _ = evaluate_served(champion, evalset)
    ranked = evalset.ranked_from_scores(evalset.quick.popularity_blocks())
    metrics["popularity"], curves["popularity"] = evalset.metrics(ranked), ranked
    truth = _truth(truth_dir)
    if truth is not None:
        ranked = evalset.ranked_from_scores(
            truth.score_blocks(evalset.item_ids, evalset.users, evalset.queries["timestamp"])
        )
        metrics["oracle"], curves["oracle"] = evalset.metrics(ranked), ranked
    warm = int(evalset.warm_user.sum())
    split = evalset.features.manifest.get("split")
    metrics["eval"] = {
        "queries": len(evalset),
        "warm_queries": warm,
        "cold_queries": len(evalset) - warm,
        "items": int(len(evalset.item_ids)),
        "window": evalset.features.manifest["window"],
        "ks": list(cfg.ks),
        "primary_metric": cfg.primary_metric,
        **({"split": split} if split else {}),
        **({"champion_excluded": champion_excluded} if champion_excluded else {}),
        **({"measured_weights": measured_weights} if measured_weights else {}),
        **({"final_fit": final_fit} if final_fit else {}),
        **({"champion_weights": champion_weights} if champion_weights else {}),
    }
    per_query = {
        name: per_query_metrics(ranked, evalset.targets, cfg.ks) for name, ranked in curves.items()
    }
    for name, section in compare_models(per_query, cfg).items():
        metrics[name] = {**metrics.get(name, {}), **section}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    kmax = max(cfg.ks)
    plot_recall(
        {name: recall_curve(r, evalset.targets, kmax) for name, r in curves.items()},
        out_dir / "recall_at_k.png",
    )
    (out_dir / "report.md").write_text(render_report(metrics))
    for name in ("challenger", "champion", "popularity", "oracle"):
        if name in metrics:
            log.info(
                "evaluate: %-10s %s = %.4f",
                name,
                cfg.primary_metric,
                metrics[name][cfg.primary_metric],
            )
    return metrics


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
        if model in _GATED and (model, cfg.primary_metric) in replicates:
            means = replicates[model, cfg.primary_metric].tolist()
            out[model]["bootstrap"] = {"metric": cfg.primary_metric, "means": means}
    out["differences"] = {
        f"{model}-{baseline}": {
            metric: _paired_difference(out, replicates, model, baseline, metric, confidence)
            for metric in per_query[model]
        }
        for model, baseline in _COMPARISONS
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


def _truth(truth_dir):
    if truth_dir is None or not (Path(truth_dir) / "_truth").is_dir():
        return None
    from pipelines.synthetic import GroundTruth

    return GroundTruth.load(truth_dir)


def plot_recall(curves: dict[str, np.ndarray], path: Path) -> None:
    """Recall@K for K = 1..kmax, one line per model, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for name, curve in curves.items():
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            label=name,
            linestyle="--" if name == "oracle" else "-",
        )
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title("Recall@K on the eval period (seen items excluded)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_report(metrics: dict) -> str:
    """Markdown: one row per model (with intervals), the differences, slices, the index."""
    ev = metrics["eval"]
    models = [m for m in ("challenger", "champion", "popularity", "oracle") if m in metrics]
    kmax = max(ev["ks"])
    columns = [f"recall@{k}" for k in ev["ks"]] + [f"ndcg@{k}" for k in ev["ks"] if k in (10, kmax)]
    columns += [f"hit_rate@{kmax}", f"mrr@{kmax}", f"coverage@{kmax}"]
    lines = [
        "# Evaluation",
        "",
        *_protocol_lines(ev),
        "| model | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_cell(metrics[m], c) for c in columns) + " |")
    lines += _differences_lines(metrics, columns)
    lines += [
        "",
        f"## Slices (challenger, recall@{kmax})",
        "",
        "| slice | queries | recall |",
        "| --- | ---: | ---: |",
    ]
    for name, s in metrics["challenger"]["slices"].items():
        lines.append(f"| {name} | {s['queries']:,} | {s[f'recall@{kmax}']:.4f} |")
    ann = metrics["ann"]
    ann_recall = ann[f"recall@{ann['k']}"]
    lines += [
        "",
        "## Index",
        "",
        f"{ann['kind']}: recall@{ann['k']} vs exact search {ann_recall:.4f} on "
        f"{ann['queries']:,} eval queries; p50 {ann['latency_p50_ms']} ms, p99 "
        f"{ann['latency_p99_ms']} ms per query; {ann['qps_batched']} queries/s batched; "
        f"{ann['size_mb']} MB; built in {ann['build_seconds']} s.",
        "",
        "![Recall@K](recall_at_k.png)",
        "",
    ]
    return "\n".join(lines)


def _protocol_lines(ev: dict) -> list[str]:
    """What was evaluated, how the queries split (warm / cold users) and the eval design."""
    lines = [
        f"{ev['queries']:,} eval queries, {ev['items']:,} catalog items, eval period "
        f"{ev['window']['eval_start']} .. {ev['window']['window_end']}; seen items excluded; "
        f"primary metric **{ev['primary_metric']}**.",
        "",
    ]
    if "warm_queries" in ev:
        lines += [
            f"Queries by user: {ev['warm_queries']:,} warm (in the training vocabulary), "
            f"{ev['cold_queries']:,} cold.",
            "",
        ]
    split = ev.get("split") or {}
    if split.get("design"):
        reason = f": {split['reason']}" if split.get("reason") else ""
        lines += [f"Eval design: **{split['design']}**{reason}.", ""]
    if "champion_excluded" in ev:
        lines += [f"The production model was not evaluated: {ev['champion_excluded']}.", ""]
    final = ev.get("final_fit")
    if final:
        lines += [
            "The challenger row (and the gate) measured the selected weights, before the final "
            f"fit. The shipped model additionally trained on the held-out interactions "
            f"(validation and eval, every user's most recent data) for {final['epochs']} "
            f"epoch(s), up to {final['trained_until']}: it cannot be scored on this eval "
            "period, whose labels it trained on.",
            "",
        ]
    if ev.get("champion_weights"):
        lines += [f"Champion measured on {ev['champion_weights']}.", ""]
    boot = ev.get("bootstrap")
    if boot:
        lines += [
            f"Brackets: {boot['confidence']:.0%} percentile-bootstrap intervals over the eval "
            f"queries ({boot['samples']:,} resamples, seed {boot['seed']}); coverage is a "
            "property of the whole set and has none.",
            "",
        ]
    return lines


def _cell(section: dict, metric: str) -> str:
    """`0.3120 [0.2950, 0.3290]` when the metric has an interval, else `0.3120`."""
    ci = section.get("ci", {}).get(metric)
    return f"{section[metric]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _differences_lines(metrics: dict, columns: list[str]) -> list[str]:
    """Paired differences with their intervals; significant = the interval excludes 0."""
    differences = metrics.get("differences")
    if not differences:
        return []
    confidence = metrics["eval"]["bootstrap"]["confidence"]
    lines = [
        "",
        "## Differences (paired, same queries)",
        "",
        f"| comparison | metric | difference | {confidence:.0%} interval | significant |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, by_metric in differences.items():
        for metric in (c for c in columns if c in by_metric):
            d, (low, high) = by_metric[metric]["diff"], by_metric[metric]["ci"]
            verdict = "yes" if low > 0 or high < 0 else "no: inside the noise"
            lines.append(
                f"| {name} | {metric} | {d:+.4f} | [{low:+.4f}, {high:+.4f}] | {verdict} |"
            )
    return lines
