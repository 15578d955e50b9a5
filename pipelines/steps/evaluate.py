"""Evaluate: challenger vs champion vs popularity (vs oracle) through the serving path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.layout import EVALUATED, ModelLayout, RunLayout, evaluated_weights_dir

log = logging.getLogger(__name__)


def evaluate(cfg: PipelineConfig, layout: RunLayout, champion_dir: str | Path | None) -> dict:
    """Measure the run's model, the champion and the baselines on the eval period.

    The challenger is `layout.model`, the selected weights (a final fit trains on the eval
    labels: it cannot be measured on them). The champion is re-evaluated from its bundle's
    `evaluated/` weights when it has them, for the same reason, and not at all when it trained
    on this eval period's labels (`saw_eval_labels`).

    Returns:
        `metrics` and `report` paths and the primary metric of each model measured.
    """
    from pipelines.evaluation import evaluate as run_evaluation
    from pipelines.steps.train import saw_eval_labels

    champion_weights = None
    if champion_dir:
        champion_dir = evaluated_weights_dir(champion_dir)
        champion_weights = (
            f"{EVALUATED}/: the production bundle's selected weights (before its final fit)"
            if champion_dir.name == EVALUATED
            else "the production bundle's served weights"
        )
    excluded = champion_dir and saw_eval_labels(champion_dir, layout.features)
    if excluded:
        log.warning("champion %s not evaluated: %s", champion_dir, excluded)
    final_fit = final_fit_summary(layout)
    metrics = run_evaluation(
        layout.features, layout.model, None if excluded else champion_dir,
        layout.evaluation, cfg.eval, truth_dir=cfg.data.source, champion_excluded=excluded,
        measured_weights="selected weights (before the final fit)" if final_fit
        else "selected weights (the shipped model)",
        final_fit=final_fit, champion_weights=None if excluded else champion_weights,
    )  # fmt: skip
    primary = cfg.eval.primary_metric
    return {
        "metrics": str(layout.metrics),
        "report": str(layout.report),
        **{
            name: metrics[name][primary]
            for name in ("challenger", "champion", "popularity", "oracle")
            if name in metrics
        },
    }


def final_fit_summary(layout: RunLayout) -> dict | None:
    """What the shipped model added to the measured one (for metrics.json), or None without a
    final fit: its directory, the final fit's epochs / examples / trained_until, and its own
    index's recall vs exact search on the tuning queries."""
    if layout.shipped_model() != layout.model_final:
        return None
    final = ModelLayout(layout.model_final)
    trained = json.loads(final.train_manifest.read_text())
    summary = {"model_dir": str(final.root), **{
        key: trained["final_fit"][key]
        for key in ("from_epoch", "epochs", "examples", "trained_until", "splits")
    }}  # fmt: skip
    if final.index_manifest.is_file():
        manifest = json.loads(final.index_manifest.read_text())
        tuned = manifest.get("tuned") or {}
        summary["index"] = {
            "kind": manifest.get("kind"),
            f"recall@{manifest.get('k')}": tuned.get("recall"),
            "reached_target": tuned.get("reached_target"),
        }
    return summary
