"""Train: the two-tower model on a run's features, never warm-started from a model that saw
the eval period."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.layout import ModelLayout, RunLayout, evaluated_weights_dir, features_manifest

log = logging.getLogger(__name__)


def train(
    cfg: PipelineConfig,
    layout: RunLayout,
    warm_start_from: str | Path | None,
    *,
    resume: bool = True,
) -> dict:
    """Train (resuming from this run's checkpoints) and export into `layout.model`; with
    `train.final_fit`, then the final fit into `layout.model_final`.

    Args:
        warm_start_from: a served directory (the production bundle), or None (`fit`).
        resume: continue from `layout.model`'s checkpoints when they were made from these
            features and this config (training checks); False always starts fresh.

    Returns:
        `model_dir`, `final_model_dir`, `best_epoch`, `epochs_run`, the validation recall,
        `warm_start` (the directory used, or None) and `warm_start_refused` when refused.
    """
    fitted = fit(
        cfg, layout.features, layout.model, warm_start_from,
        final_dir=layout.model_final, resume=resume,
    )  # fmt: skip
    m, k = fitted.result.manifest, cfg.train.eval_k
    return {
        "model_dir": fitted.result.model_dir,
        "final_model_dir": fitted.result.final_dir,
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
        f"validation_recall@{k}": m[f"validation_recall@{k}"],
        "warm_start": str(fitted.warm_start) if fitted.warm_start else None,
        **({"warm_start_refused": fitted.warm_start_refused} if fitted.warm_start_refused else {}),
    }


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A finished training: the `tfrs_models.train.TrainResult`, the directory it warm-started
    from (None: from scratch), and why a requested warm start was refused (else None)."""

    result: object
    warm_start: Path | None
    warm_start_refused: str | None


def fit(
    cfg: PipelineConfig,
    features_dir: str | Path,
    model_dir: str | Path,
    warm_start_from: str | Path | None = None,
    *,
    final_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = False,
) -> Fitted:
    """Train on `features_dir` into `model_dir` (the final fit into `final_dir`, default
    `<model_dir>_final`): `train` and the `train` command both come here.

    A requested warm start uses the served directory's evaluated weights
    (`evaluated_weights_dir`), and is refused (logged as a warning; training starts from
    scratch) when those trained past these features' eval start (`trained_past_eval_start`).
    An earlier attempt's final fit is removed first: it would ship stale weights. With
    `train.workers` above 1, local worker processes train (`train_on_local_workers`).
    """
    from tfrs_models.train import final_dir_for, train_model

    if warm_start_from:
        warm_start_from = evaluated_weights_dir(warm_start_from)
    refused = warm_start_from and trained_past_eval_start(warm_start_from, features_dir)
    if refused:
        log.warning(
            "not warm-starting from %s: %s; training from scratch", warm_start_from, refused
        )
        warm_start_from = None
    final_dir = Path(final_dir) if final_dir is not None else final_dir_for(model_dir)
    shutil.rmtree(final_dir, ignore_errors=True)
    if cfg.train.workers > 1:
        from tfrs_models.distributed import train_on_local_workers

        result = train_on_local_workers(
            features_dir, model_dir, cfg.train, warm_start_from=warm_start_from,
            final_dir=final_dir, resume=resume,
        )  # fmt: skip
    else:
        result = train_model(
            features_dir, model_dir, cfg.train, warm_start_from=warm_start_from,
            progress=progress, final_dir=final_dir, resume=resume,
        )  # fmt: skip
    return Fitted(result, Path(warm_start_from) if warm_start_from else None, refused or None)


def trained_past_eval_start(model_dir: str | Path, features_dir: str | Path) -> str | None:
    """Why a trained model must not warm-start or be compared on these features, else None.

    A model trained on interactions at or after the features' eval start has seen the eval
    period (a backfill or a replay behind production does this, and so does a final fit on
    the previous run's most recent data): warm-starting from it leaks the answers into
    training, and scoring it there flatters it. How far a model trained is its manifest's
    `trained_until` (older manifests: its features' eval_start).
    """
    import pandas as pd

    trained = json.loads(ModelLayout(model_dir).train_manifest.read_text())
    features = json.loads(features_manifest(features_dir).read_text())
    until = trained.get("trained_until") or trained["features_window"]["eval_start"]
    eval_start = features["window"]["eval_start"]
    if pd.Timestamp(until) <= pd.Timestamp(eval_start):
        return None
    return f"trained on interactions up to {until}, after this eval period starts ({eval_start})"
