"""What a model's weights trained on, per user, through every warm start that led to them.

A model trained on a feature run saw, of each user, the interactions before that user's
`train_end` (`schema.UserCuts`). A warm start carries the start weights' training into the new
model, so the new model's end for a user is the later of the two. Training writes these ends
beside the model (`ModelLayout.trained_cuts`); the leakage test that decides whether a model may
warm-start a run, or be scored on its eval period, reads them
(`pipelines.steps.train.saw_eval_labels`). Selected weights trained before the file existed
are rebuilt from the feature run their manifest names, while it exists. Any other model
without the file counts as trained up to its manifest's `trained_until` for every user, an
upper bound: a final fit, which trains on every interaction of its window, or a model whose
feature run is gone.

No TensorFlow here: the evaluation step imports this to decide about the champion.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.formats import files
from pipelines.layout import ModelLayout
from pipelines.schema import CUTS_FILE, FEATURES_MANIFEST, UserCuts, epoch_seconds


def trained_until(features_manifest: dict) -> str:
    """The latest moment the train examples may reach (ISO, exclusive): an upper bound on the
    max over users of their train_end, capped at window_end.

    Temporal split: eval_start (every train_end is at or before it). Holdout: users without a
    cut train on all of their window (train_end = window_end), so a model trained on these
    features has seen interactions after `eval_start` (only the earliest held-out moment).
    A model must never be scored on an eval period that starts before this unless the per-user
    ends (`model_cuts`) show it never trained on that period's labels.
    """
    window = features_manifest["window"]
    holdout = features_manifest.get("split", {}).get("design") == "holdout"
    return window["window_end"] if holdout else window["eval_start"]


def features_cuts(features_dir: str | Path, manifest: dict) -> UserCuts:
    """The feature run's per-user cuts; features without a cuts file (a plain temporal split)
    cut everyone at `trained_until`."""
    path = files.join(str(features_dir), CUTS_FILE)
    if files.exists(path):
        return UserCuts.read(path)
    return UserCuts.uniform(epoch_seconds(trained_until(manifest)))


def model_cuts(model_dir: str | Path) -> UserCuts:
    """Per user, the end (exclusive, epoch seconds) of the interactions the model's weights
    trained on: its `trained_cuts.parquet`; for selected weights trained before the file
    existed, rebuilt from the feature run they name (and their warm-start source) while those
    still exist with the same window; else the manifest's `trained_until` for everyone."""
    layout = ModelLayout(model_dir)
    if layout.trained_cuts.is_file():
        return UserCuts.read(str(layout.trained_cuts))
    manifest = json.loads(layout.train_manifest.read_text())
    until = manifest.get("trained_until") or manifest["features_window"]["eval_start"]
    return _rebuilt_cuts(manifest) or UserCuts.uniform(epoch_seconds(until))


def _rebuilt_cuts(manifest: dict) -> UserCuts | None:
    """An older model's per-user ends from its feature run and warm-start source, or None
    when a final fit trained it (every interaction of its window) or a source is gone."""
    if manifest.get("final_fit") or not manifest.get("features_dir"):
        return None
    features_dir = manifest["features_dir"]
    path = files.join(str(features_dir), FEATURES_MANIFEST)
    if not files.exists(path):
        return None
    features = json.loads(files.read_bytes(path))
    weighting = manifest.get("weighting") or {}
    records = weighting.get("train_examples", -1) + weighting.get("train_examples_dropped", 0)
    if (
        features.get("window") != manifest.get("features_window")
        or features.get("counts", {}).get("train_examples") != records
    ):
        return None  # the run's features were rebuilt since: not what these weights read
    cuts = features_cuts(features_dir, features)
    start = (manifest.get("warm_start") or {}).get("from")
    if start is None:
        # A resumed run's manifest does not say whether its first attempt warm-started.
        return None if manifest.get("resumed_from_epoch") else cuts
    if not ModelLayout(start).is_trained():
        return None
    return cuts.latest(model_cuts(start))


def write_model_cuts(
    model_dir: str | Path,
    features_dir: str | Path,
    manifest: dict,
    warm_start_from: str | Path | None,
) -> UserCuts:
    """Write the per-user training ends of weights trained on these features, started from
    `warm_start_from`'s weights (None: fresh), beside the model; return them."""
    cuts = features_cuts(features_dir, manifest)
    if warm_start_from is not None:
        cuts = cuts.latest(model_cuts(warm_start_from))
    ModelLayout(model_dir).trained_cuts.write_bytes(cuts.to_bytes())
    return cuts
