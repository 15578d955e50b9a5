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
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipelines.config import EvalConfig
from pipelines.metrics import ranking_metrics, recall_curve

log = logging.getLogger(__name__)

_ANN_SAMPLE = 5000


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
) -> dict:
    """Evaluate challenger, champion, popularity and (synthetic data) the oracle; write reports.

    Args:
        features_dir: the feature run whose eval period is used.
        challenger_dir / champion_dir: served directories (`pipelines.serving`).
        truth_dir: a synthetic source with `_truth/` (None or real data: no oracle).
        champion_excluded: why the production model was not evaluated here (recorded for the
            gate and the report), if it was left out.

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
    metrics["eval"] = {
        "queries": len(evalset),
        "items": int(len(evalset.item_ids)),
        "window": evalset.features.manifest["window"],
        "ks": list(cfg.ks),
        "primary_metric": cfg.primary_metric,
        **({"champion_excluded": champion_excluded} if champion_excluded else {}),
    }
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
    """Markdown: one row per model, slices of the challenger, the index."""
    ev = metrics["eval"]
    models = [m for m in ("challenger", "champion", "popularity", "oracle") if m in metrics]
    kmax = max(ev["ks"])
    columns = [f"recall@{k}" for k in ev["ks"]] + [f"ndcg@{k}" for k in ev["ks"] if k in (10, kmax)]
    columns += [f"hit_rate@{kmax}", f"mrr@{kmax}", f"coverage@{kmax}"]
    lines = [
        "# Evaluation",
        "",
        f"{ev['queries']:,} eval queries, {ev['items']:,} catalog items, eval period "
        f"{ev['window']['eval_start']} .. {ev['window']['window_end']}; seen items excluded; "
        f"primary metric **{ev['primary_metric']}**.",
        "",
        *(
            [f"The production model was not evaluated: {ev['champion_excluded']}.", ""]
            if "champion_excluded" in ev
            else []
        ),
        "| model | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(f"{metrics[m][c]:.4f}" for c in columns) + " |")
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
