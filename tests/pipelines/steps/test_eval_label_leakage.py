"""`saw_eval_labels`: whether a model's weights trained on a feature run's eval labels, decided
per user through its warm starts (`tfrs_models.lineage`), on hand-made model and feature dirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.layout import ModelLayout
from pipelines.schema import CUTS_FILE, USER_ID, UserCuts, epoch_seconds
from pipelines.steps.train import saw_eval_labels
from tfrs_models.lineage import model_cuts, write_model_cuts

DAY = 86_400
T0 = epoch_seconds("2026-01-01")


def cuts(default_day: int, **users: tuple[int, int]) -> UserCuts:
    """UserCuts with `default` at T0 + default_day days and users' (train_end, eval_cut) days."""
    index = pd.Index(sorted(users), dtype=object, name=USER_ID)
    days = np.array([users[u] for u in index], dtype=np.int64).reshape(-1, 2)
    table = pd.DataFrame(
        {"train_end": T0 + days[:, 0] * DAY, "eval_cut": T0 + days[:, 1] * DAY}, index=index
    )
    return UserCuts(T0 + default_day * DAY, table)


def iso(day: int) -> str:
    return pd.Timestamp(T0 + day * DAY, unit="s", tz="UTC").isoformat()


def features_dir(path: Path, design: str, eval_start: int, window_end: int, user_cuts=None):
    path.mkdir(parents=True)
    manifest = {
        "window": {"eval_start": iso(eval_start), "window_end": iso(window_end)},
        "split": {"design": design},
        "counts": {"train_examples": 100},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    if user_cuts is not None:
        (path / CUTS_FILE).write_bytes(user_cuts.to_bytes())
    return path


def model_dir(path: Path, trained_until: int, trained=None) -> Path:
    path.mkdir(parents=True)
    ModelLayout(path).train_manifest.write_text(json.dumps({"trained_until": iso(trained_until)}))
    if trained is not None:
        ModelLayout(path).trained_cuts.write_bytes(trained.to_bytes())
    return path


def test_latest_takes_each_users_later_training_end():
    """A user without a row in one split trained there up to its default."""
    a = cuts(20, alice=(5, 8), bob=(12, 12))
    b = cuts(25, alice=(9, 9), carol=(3, 4))
    both = a.latest(b)
    assert both.default == T0 + 25 * DAY
    ends, _ = both.lookup(["alice", "bob", "carol", "dave"])
    assert ((ends - T0) // DAY).tolist() == [9, 25, 20, 25]
    assert set(both.table.index) == {"alice", "carol"}  # bob is at the default
    assert (both.table["eval_cut"] == both.table["train_end"]).all()


def test_holdout_run_after_the_models_own_holdout_run_is_clean(tmp_path):
    """Yesterday's holdout model held out alice's and bob's latest interactions; today's cuts
    are at or after its ends, and carol (new, no row yesterday) is cut after its window."""
    yesterday = cuts(20, alice=(6, 10), bob=(12, 12))
    today = cuts(22, alice=(10, 10), bob=(8, 12), carol=(21, 21))
    model = model_dir(tmp_path / "model", 20, yesterday)
    feats = features_dir(tmp_path / "features", "holdout", 10, 22, today)
    assert saw_eval_labels(model, feats) is None


def test_holdout_cut_before_the_models_training_end_is_a_leak(tmp_path):
    """A run whose cuts moved earlier (a larger holdout fraction, a replay) holds out
    interactions the model trained on."""
    yesterday = cuts(20, alice=(6, 10), bob=(12, 12))
    today = cuts(22, alice=(5, 5), bob=(11, 11), carol=(13, 13))
    model = model_dir(tmp_path / "model", 20, yesterday)
    feats = features_dir(tmp_path / "features", "holdout", 5, 22, today)
    reason = saw_eval_labels(model, feats)
    assert reason is not None
    assert "held-out interactions of 3 of this run's 3 eval users" in reason
    assert "user 'alice': held out from 2026-01-06" in reason and "until 2026-01-07" in reason


def test_temporal_eval_period_compares_the_latest_training_end(tmp_path):
    model = model_dir(tmp_path / "model", 20, cuts(20, alice=(6, 10)))
    clean = features_dir(tmp_path / "later", "temporal", 20, 23)
    assert saw_eval_labels(model, clean) is None
    behind = features_dir(tmp_path / "behind", "temporal", 15, 23)
    assert "trained on interactions up to 2026-01-21" in saw_eval_labels(model, behind)
    assert "after this eval period starts (2026-01-16" in saw_eval_labels(model, behind)


def test_model_without_per_user_ends_counts_as_trained_to_its_trained_until(tmp_path):
    """Models from before the file (and final fits) count as trained on every user's
    interactions up to trained_until: today's holdout cuts before it are leaks."""
    model = model_dir(tmp_path / "model", 20)
    assert model_cuts(model).default == T0 + 20 * DAY and model_cuts(model).table.empty
    feats = features_dir(tmp_path / "features", "holdout", 10, 22, cuts(22, alice=(10, 10)))
    assert "held-out interactions of 1 of this run's 1 eval users" in saw_eval_labels(model, feats)


def test_warm_started_model_carries_its_start_weights_training(tmp_path):
    """A model warm-started from one that trained on alice up to day 14 has seen her up to day
    14 even though its own features held her out from day 10."""
    start = model_dir(tmp_path / "start", 20, cuts(20, alice=(14, 14)))
    feats = features_dir(tmp_path / "features", "holdout", 10, 22, cuts(22, alice=(9, 10)))
    out = tmp_path / "model"
    out.mkdir()
    manifest = json.loads((feats / "manifest.json").read_text())
    written = write_model_cuts(out, feats, manifest, start)
    assert (written.lookup(["alice", "bob"])[0] - T0).tolist() == [14 * DAY, 22 * DAY]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    alone = write_model_cuts(fresh, feats, manifest, None)
    assert (alone.lookup(["alice"])[0] - T0).tolist() == [9 * DAY]
    assert model_cuts(fresh).lookup(["alice"])[0].tolist() == alone.lookup(["alice"])[0].tolist()


def old_model(path: Path, feats: Path, trained_until: int, **manifest) -> Path:
    """Selected weights trained before `trained_cuts.parquet` existed: the manifest names its
    feature run and window."""
    window = json.loads((feats / "manifest.json").read_text())["window"]
    path.mkdir(parents=True)
    ModelLayout(path).train_manifest.write_text(json.dumps({
        "trained_until": iso(trained_until), "features_dir": str(feats),
        "features_window": window, "final_fit": None, "warm_start": None,
        "weighting": {"train_examples": 90, "train_examples_dropped": 10}, **manifest,
    }))  # fmt: skip
    return path


def test_older_selected_weights_are_rebuilt_from_the_feature_run_they_name(tmp_path):
    """A production bundle from before the file would otherwise stay "not comparable" under
    the holdout design, and every retrain after an upgrade would be rejected."""
    day1 = features_dir(tmp_path / "day1", "holdout", 6, 20, cuts(20, alice=(6, 10)))
    model = old_model(tmp_path / "model", day1, 20)
    assert (model_cuts(model).lookup(["alice", "bob"])[0] - T0).tolist() == [6 * DAY, 20 * DAY]
    today = features_dir(tmp_path / "today", "holdout", 10, 22, cuts(22, alice=(10, 10)))
    assert saw_eval_labels(model, today) is None

    # Through its warm start: the source trained alice up to day 12.
    source = old_model(tmp_path / "source", day1, 20)
    ModelLayout(source).trained_cuts.write_bytes(cuts(20, alice=(12, 12)).to_bytes())
    warm = old_model(tmp_path / "warm", day1, 20, warm_start={"from": str(source)})
    assert (model_cuts(warm).lookup(["alice"])[0] - T0).tolist() == [12 * DAY]
    assert "1 of this run's 1 eval users" in saw_eval_labels(warm, today)


def test_older_models_fall_back_to_trained_until_when_their_lineage_cannot_be_read(tmp_path):
    day1 = features_dir(tmp_path / "day1", "holdout", 6, 20, cuts(20, alice=(6, 10)))
    final = old_model(tmp_path / "final", day1, 20, final_fit={"epochs": 2})
    gone = old_model(tmp_path / "gone", day1, 20, warm_start={"from": str(tmp_path / "pruned")})
    # A resumed run's manifest does not say whether its first attempt warm-started.
    resumed = old_model(tmp_path / "resumed", day1, 20, resumed_from_epoch=2)
    other = old_model(tmp_path / "other", day1, 20, weighting={"train_examples": 80})
    rebuilt = old_model(tmp_path / "rebuilt", day1, 20)
    assert not model_cuts(rebuilt).table.empty  # this one can be rebuilt, until:
    # the run's features were rebuilt with another window since `rebuilt` trained.
    window = {"eval_start": iso(7), "window_end": iso(20)}
    (day1 / "manifest.json").write_text(json.dumps({"window": window, "split": {}}))
    for model in (final, gone, resumed, other, rebuilt):
        assert model_cuts(model).table.empty and model_cuts(model).default == T0 + 20 * DAY


def test_holdout_refuses_a_model_past_the_window_or_features_without_cuts(tmp_path):
    """A model trained after this run's window has seen its future, whatever the users' cuts;
    holdout features whose cuts file is gone cannot be checked."""
    model = model_dir(tmp_path / "model", 25, cuts(25, alice=(6, 6)))
    feats = features_dir(tmp_path / "features", "holdout", 10, 22, cuts(22, alice=(10, 10)))
    assert "after this run's window (2026-01-23" in saw_eval_labels(model, feats)
    earlier = model_dir(tmp_path / "earlier", 20, cuts(20, alice=(6, 6)))
    assert saw_eval_labels(earlier, feats) is None
    (feats / CUTS_FILE).unlink()
    assert f"no {CUTS_FILE}" in saw_eval_labels(earlier, feats)
