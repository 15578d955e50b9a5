"""Promote: stage the run's bundle, publish it and swap the production pointer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.layout import TRAINING_ONLY, ModelLayout, RunLayout


def promote(
    cfg: PipelineConfig,
    layout: RunLayout,
    decision: dict,
    run_id: str,
    champion_id: str | None,
    *,
    actor: str | None = None,
    airflow_run_id: str | None = None,
) -> dict:
    """Publish the staged bundle and swap the production pointer, if the gate said so.

    Args:
        decision: the gate's decision (`gate`).
        champion_id: the production bundle the run was gated against: the swap happens only if
            production still names it.
        actor: who promotes (an approver, or the user running the CLI), kept in the history.
        airflow_run_id: the Airflow run promoting, as Airflow names it, kept in the history.

    Returns:
        `promoted`, `decision`, `bundle_id` (None when not promoted) and the `pruned` bundles.

    Raises:
        PromotionConflict: production changed after the run was gated (production untouched).
    """
    from pipelines.registry import Registry, code_version

    if not decision["promote"]:
        return {"promoted": False, "decision": decision["decision"], "bundle_id": None}
    staging = stage_bundle(layout)
    metrics = json.loads(layout.metrics.read_text())
    primary = cfg.eval.primary_metric
    features = json.loads(layout.features_manifest.read_text())
    manifest = {
        "created_at": _now(),
        "run_id": run_id,
        "source": cfg.data.source,
        "snapshot_sha256": _snapshot_sha256(layout),
        "data_window": features["window_epoch_s"],
        "data_window_iso": features["window"],
        "config": cfg.model_dump(mode="json"),
        "metrics": {
            # Bootstrap replicates stay in the bundle's evaluation/metrics.json.
            name: {k: v for k, v in section.items() if k not in ("slices", "bootstrap")}
            for name, section in metrics.items()
        },  # fmt: skip
        "primary_metric": primary,
        "primary_value": metrics["challenger"][primary],
        # "final fit": the served weights trained on after the measured ones (in evaluated/).
        "weights": "final fit" if ModelLayout(staging).evaluated.is_dir() else "selected",
        "gate": decision,
        "code_version": code_version(),
        "parent_bundle": champion_id,
    }
    registry = Registry(cfg.data.artifact_root)
    bundle_id = registry.publish(staging, manifest)
    # Compare-and-swap: the bundle replaces production only if production is still the
    # champion this run was evaluated and gated against (else PromotionConflict).
    registry.promote(
        bundle_id, reason=f"run {run_id}: {decision['decision']}", expected=champion_id,
        actor=actor, airflow_run_id=airflow_run_id,
    )  # fmt: skip
    pruned = registry.prune(cfg.registry.keep_bundles)
    return {
        "promoted": True,
        "decision": decision["decision"],
        "bundle_id": bundle_id,
        "pruned": pruned,
    }


def stage_bundle(layout: RunLayout) -> Path:
    """Copy what serving needs (and the evaluation) into `layout.bundle`.

    The shipped model (`model_final/` after a final fit, else `model/`) is the bundle's top
    level; after a final fit `model/` also goes to `evaluated/`, so later runs re-evaluate the
    weights this run's evaluation measured.
    """
    staging = layout.bundle
    if staging.exists():
        shutil.rmtree(staging)
    ignore = shutil.ignore_patterns(*TRAINING_ONLY)
    shipped = layout.shipped_model()
    shutil.copytree(shipped, staging, ignore=ignore)
    shutil.copytree(layout.evaluation, ModelLayout(staging).evaluation)
    if shipped == layout.model_final:
        shutil.copytree(layout.model, ModelLayout(staging).evaluated, ignore=ignore)
    return staging


def _snapshot_sha256(layout: RunLayout) -> str | None:
    """sha256 of the validated snapshot's metadata (it lists every file's sha256), if any."""
    import hashlib

    from pipelines.features.snapshot import META

    path = layout.snapshot / META
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
