"""`evaluate`: every model on the same eval queries, through the serving path; then the reports.

In the same run, on the same queries:

    challenger   the bundle this run trained and indexed
    champion     the production bundle, loaded and re-evaluated now (not its stored numbers)
    popularity   training-window interaction counts
    oracle       the generator's true model, when the source is synthetic
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipelines.config import EvalConfig
from pipelines.evaluation.ann import ann_section
from pipelines.evaluation.compare import compare_models
from pipelines.evaluation.evalset import EvalSet, slice_metrics
from pipelines.evaluation.report import MODELS, PLOT_FILE, plot_recall, render_report
from pipelines.evaluation.served import ServedRows, served_ranking
from pipelines.layout import METRICS_FILE, REPORT_FILE
from pipelines.metrics import per_query_metrics, recall_curve
from pipelines.schema import TIMESTAMP

log = logging.getLogger(__name__)


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

    Writes `metrics.json` (one section per model, keyed `recall@100`, `ndcg@10`, ..., with
    slices, intervals and `differences`; plus `ann` for the challenger's index and `eval` for
    the protocol), `report.md` and `recall_at_k.png` into `out_dir`.

    Args:
        features_dir: the feature run whose eval period is used.
        challenger_dir / champion_dir: served directories (`pipelines.serving`).
        out_dir: where the three files go (created if missing).
        cfg: the evaluation settings (`ks`, `max_queries`, `primary_metric`, bootstrap, ...).
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    streamed = _stream(features_dir, challenger_dir, champion_dir, cfg, _truth(truth_dir))
    evalset, curves = streamed.last, streamed.ranked
    log.info("evaluate: %d eval queries, %d catalog items", streamed.n, len(evalset.item_ids))
    per_query = {
        name: per_query_metrics(ranked, streamed.targets, cfg.ks) for name, ranked in curves.items()
    }
    metrics = {
        name: slice_metrics(
            ranked,
            streamed.targets,
            streamed.warm_user,
            evalset.item_slice,
            cfg.ks,
            per_query[name],
        )
        for name, ranked in curves.items()
    }
    metrics["ann"] = ann_section(streamed.challenger, streamed.vectors)
    metrics = {name: metrics[name] for name in ("challenger", "ann", *curves) if name in metrics}
    warm = int(streamed.warm_user.sum())
    split = evalset.features.manifest.get("split")
    metrics["eval"] = {
        "queries": streamed.n,
        "warm_queries": warm,
        "cold_queries": streamed.n - warm,
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
    for name, section in compare_models(per_query, cfg).items():
        metrics[name] = {**metrics.get(name, {}), **section}
    (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float))
    kmax = max(cfg.ks)
    plot_recall(
        {name: recall_curve(r, streamed.targets, kmax) for name, r in curves.items()},
        out_dir / PLOT_FILE,
    )
    (out_dir / REPORT_FILE).write_text(render_report(metrics))
    for name in MODELS:
        if name in metrics:
            log.info(
                "evaluate: %-10s %s = %.4f",
                name,
                cfg.primary_metric,
                metrics[name][cfg.primary_metric],
            )
    return metrics


class _Streamed:
    """What evaluation keeps of the eval queries streamed chunk by chunk: per query its
    targets, user slice, challenger query vector and each model's top max(K), nothing of the
    size of the catalog."""

    def __init__(self):
        self.n, self.last = 0, None
        self.targets, self.warm_user, self.vectors = [], [], []
        self.ranked: dict[str, list | np.ndarray] = {}
        self.challenger = None

    def add(self, name: str, ranked: np.ndarray):
        # int32 halves what the top-K of ~400k queries x 4 models holds (catalog indices fit).
        self.ranked.setdefault(name, []).append(np.asarray(ranked, dtype=np.int32))

    def close(self):
        self.ranked = {name: np.concatenate(parts) for name, parts in self.ranked.items()}
        self.warm_user = np.concatenate(self.warm_user)
        self.vectors = np.concatenate(self.vectors)


def _stream(features_dir, challenger_dir, champion_dir, cfg: EvalConfig, truth) -> _Streamed:
    """Every model's top max(K) for the eval queries, one chunk of queries at a time.

    Each chunk is read and parsed once and answered by every model: the challenger and the
    champion through their index, popularity from the catalog's one popularity order, the
    oracle by exact scoring in byte-bounded blocks.
    """
    from pipelines.serving import ServingModel

    out = _Streamed()
    models = {"challenger": ServingModel(challenger_dir)}
    if champion_dir is not None:
        models["champion"] = ServingModel(champion_dir)
    out.challenger = models["challenger"]
    mappings, seconds = {}, {}

    def answer(name: str, rank) -> None:
        started = time.perf_counter()
        out.add(name, rank())
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    def served(name: str, model, evalset: EvalSet) -> np.ndarray:
        if name not in mappings:
            mappings[name] = ServedRows(model, evalset.item_ids)
        ranked, vectors = served_ranking(model, evalset, mappings[name])
        if name == "challenger":
            out.vectors.append(vectors)
        return ranked

    for evalset in EvalSet.chunks(features_dir, cfg):
        for name, model in models.items():
            answer(name, functools.partial(served, name, model, evalset))
        answer("popularity", evalset.popularity_ranked)
        if truth is not None:
            times = evalset.queries[TIMESTAMP]
            blocks = truth.score_blocks(evalset.item_ids, evalset.users, times)
            answer("oracle", functools.partial(evalset.ranked_from_scores, blocks))
        out.n += len(evalset)
        out.targets.extend(evalset.targets)
        out.warm_user.append(evalset.warm_user)
        out.last = evalset
        log.info(
            "evaluate: %d eval queries answered (%s)",
            out.n,
            ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()),
        )
    out.close()
    return out


def _truth(truth_dir):
    """The synthetic generator's true model, or None (no source, or not a synthetic one)."""
    from pipelines.synthetic import TRUTH_DIR, GroundTruth

    if truth_dir is None or not (Path(truth_dir) / TRUTH_DIR).is_dir():
        return None
    return GroundTruth.load(truth_dir)
