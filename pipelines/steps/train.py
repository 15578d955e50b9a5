"""Train: the two-tower model on a run's features, never warm-started from a model that saw
the eval period."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.layout import RunLayout, evaluated_weights_dir, features_manifest

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
    scratch) when those trained on these features' eval labels (`saw_eval_labels`).
    An earlier attempt's final fit is removed first: it would ship stale weights. With
    `train.workers` above 1, local worker processes train (`train_on_local_workers`).
    """
    from tfrs_models.train import final_dir_for, train_model

    if warm_start_from:
        warm_start_from = evaluated_weights_dir(warm_start_from)
    refused = warm_start_from and saw_eval_labels(warm_start_from, features_dir)
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


def saw_eval_labels(model_dir: str | Path, features_dir: str | Path) -> str | None:
    """Why a trained model must not warm-start or be compared on these features, else None.

    A model whose weights trained on an interaction these features hold out as an eval label
    has seen the answers: warm-starting from it leaks them into training, and scoring it there
    flatters it (a backfill or a replay behind production does this). Decided per user, on
    what the weights trained on through every warm start (`tfrs_models.lineage.model_cuts`):
    every eval user's labels must start at or after the end of the model's training on that
    user. With a temporal eval period the labels start at eval_start, so the model's latest
    training end must not pass it. With the holdout design each eval user's labels start at
    their own cut; a model trained on the previous day's holdout features held those users'
    latest interactions out too, so tomorrow's run may warm-start from it and compare with it.
    A model that trained past this run's window has seen its future and is refused whatever
    the cuts, and so is a holdout run whose cuts file is gone.
    """
    import numpy as np
    import pandas as pd

    from pipelines.formats import files
    from pipelines.schema import CUTS_FILE, UserCuts, epoch_seconds
    from tfrs_models.lineage import model_cuts

    def day(seconds) -> str:
        return pd.Timestamp(int(seconds), unit="s", tz="UTC").isoformat()

    trained = model_cuts(model_dir)
    manifest = json.loads(features_manifest(features_dir).read_text())
    eval_start = manifest["window"]["eval_start"]
    latest = int(trained.table["train_end"].to_numpy().max(initial=trained.default))
    if latest <= epoch_seconds(eval_start):
        return None
    if manifest.get("split", {}).get("design") != "holdout":
        return (
            f"trained on interactions up to {day(latest)}, after this eval period starts "
            f"({eval_start})"
        )
    window_end = manifest["window"]["window_end"]
    if latest > epoch_seconds(window_end):
        return (
            f"trained on interactions up to {day(latest)}, after this run's window ({window_end})"
        )
    path = files.join(str(features_dir), CUTS_FILE)
    if not files.exists(path):
        return f"{features_dir} has the holdout design but no {CUTS_FILE} to check its cuts"
    cuts = UserCuts.read(path).table
    held = cuts[cuts["eval_cut"] < epoch_seconds(window_end)]
    ends, _ = trained.lookup(held.index)
    starts = held["eval_cut"].to_numpy(np.int64)
    leaked = np.flatnonzero(ends > starts)
    if len(leaked) == 0:
        return None
    first = leaked[0]
    return (
        f"trained on the held-out interactions of {len(leaked):,} of this run's {len(held):,} "
        f"eval users (user {held.index[first]!r}: held out from {day(starts[first])}, trained "
        f"on until {day(ends[first])})"
    )
