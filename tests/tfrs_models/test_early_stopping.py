"""Early stopping and selection on validation recall (`ValidationCallback`), on scripted
recall curves: which epoch is selected and when training stops."""

from __future__ import annotations

import numpy as np
import pytest


class ScriptedValidation:
    """Stands in for `QuickEval`: returns the next recall of a scripted curve per epoch."""

    def __init__(self, curve):
        self.curve = iter(curve)

    def __len__(self) -> int:
        return 2000

    def model_recall(self, model, k):
        return next(self.curve)


class Weights:
    """The part of a Keras model the callback touches."""

    stop_training = False

    def get_weights(self):
        return [np.zeros(2)]


def run(curve, tmp_path, patience, min_delta=0.0):
    """Epochs run and the selected epoch for a recall curve."""
    epochs, best, _ = drive(None, curve, tmp_path, patience, min_delta)
    return epochs, best


def drive(start, curve, tmp_path, patience, min_delta, warmup_checks=0):
    """Epochs run, the selected epoch and the callback for a recall curve, the weights
    training starts from scored first (`validate_start`, a warm start) unless `start` is None."""
    from tfrs_models.train import ValidationCallback

    scripted = curve if start is None else [start, *curve]
    callback = ValidationCallback(
        ScriptedValidation(scripted), 100, patience, tmp_path / "logs", tmp_path,
        min_delta=min_delta, warmup_checks=warmup_checks,
    )  # fmt: skip
    model = Weights()
    if start is None:
        callback.set_model(model)
    else:
        callback.validate_start(model)
    epochs = 0
    for epoch in range(len(curve)):
        callback.on_epoch_end(epoch, {"loss": 1.0})
        epochs += 1
        if model.stop_training:
            break
    return epochs, callback.best_epoch, callback


# The curve `bench_loop.py` measured on synthetic medium: flat after the first epoch.
MEDIUM = [0.4052, 0.4057, 0.4045, 0.4044, 0.4040, 0.4041, 0.4039]


@pytest.mark.parametrize(
    ("curve", "patience", "min_delta", "expected"),
    [
        (MEDIUM, 3, 0.0, (5, 2)),  # a +0.0005 "gain" selects epoch 2 and buys 3 more epochs
        (MEDIUM, 3, 0.002, (4, 1)),  # below the margin: epoch 1 stays, patience counts from it
        (MEDIUM, 1, 0.002, (2, 1)),
        ([0.30, 0.33, 0.35, 0.36, 0.362, 0.361], 2, 0.002, (6, 4)),  # real gains still count
        ([0.30, 0.29, 0.31], 0, 0.5, (3, 1)),  # patience 0: no early stopping
    ],
)
def test_min_delta_decides_selection_and_stopping(tmp_path, curve, patience, min_delta, expected):
    assert run(curve, tmp_path, patience, min_delta) == expected


def run_warm(start, curve, tmp_path, patience=3, min_delta=0.005):
    return drive(start, curve, tmp_path, patience, min_delta)


def test_a_warm_start_that_no_check_beats_keeps_its_start_weights_and_stops(tmp_path):
    """The starting weights are check 0: selected unless beaten by more than min_delta, and
    patience counts from them (the medium day-2 case: validation only drifts)."""
    checks, best, callback = run_warm(0.4026, [0.3990, 0.4050, 0.4070, 0.4100], tmp_path)
    assert (checks, best) == (3, 0)
    assert callback.curve[0] == {"epoch": 0, "loss": None, "validation_recall@100": 0.4026}
    callback.prune()
    assert [p.name for p in tmp_path.glob("best-*.npz")] == ["best-0.npz"]
    model = Weights()
    model.set_weights = lambda weights: setattr(model, "restored", weights)
    callback.restore_best(model)
    assert len(model.restored) == 1  # the start weights, from best-0.npz


def test_a_warm_start_beaten_by_a_check_selects_the_check(tmp_path):
    checks, best, _ = run_warm(0.30, [0.33, 0.32, 0.331, 0.334, 0.336], tmp_path)
    assert (checks, best) == (4, 1)


def test_without_a_warm_start_nothing_is_selected_before_the_first_check(tmp_path):
    from tfrs_models.train import ValidationCallback

    callback = ValidationCallback(ScriptedValidation([0.1]), 100, 3, tmp_path / "l", tmp_path)
    assert callback.best_epoch is None
    callback.prune()  # nothing to keep, nothing to delete
    callback.restore_best(None)  # no-op: nothing selected


# ML-latest-small 2018, CatchUpAdam, seed 13 (bench/RESULTS.md): a dip after pass 2, and a climb
# that other seeds show from pass 5 or 6 on; the tail here is the climb of another seed.
DIP = [0.316, 0.342, 0.327, 0.331, 0.336, 0.3585, 0.3634, 0.3704, 0.3861, 0.385, 0.3802, 0.3825,
       0.384, 0.383]  # fmt: skip


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        (0, (5, 2)),  # patience 3 runs out on the dip
        (8, (12, 9)),  # no stop before check 8: the climb is found and patience runs out later
        (4, (5, 2)),  # a warm-up already passed when patience runs out changes nothing
        (5, (5, 2)),  # the check that completes the warm-up may stop
        (6, (12, 9)),  # ... the one before it may not
        (30, (14, 9)),  # a warm-up beyond the curve trains to the end; selection is the same
    ],
)
def test_no_early_stopping_before_the_warm_up_checks(tmp_path, warmup, expected):
    epochs, best, _ = drive(None, DIP, tmp_path, patience=3, min_delta=0.005, warmup_checks=warmup)
    assert (epochs, best) == expected


def test_warm_up_checks_cover_the_warm_up_examples_and_never_a_warm_start():
    from pipelines.config import TrainConfig
    from tfrs_models.train import warmup_checks

    cfg = TrainConfig(early_stopping_warmup_examples=600_000)
    assert warmup_checks(cfg, 80_000, None) == 8  # 7.5 passes of 80k examples -> 8 checks
    assert warmup_checks(cfg, 236_544, None) == 3  # synthetic medium's checks
    assert warmup_checks(cfg, 2_000_000, None) == 1
    assert warmup_checks(cfg, 80_000, "/runs/champion/model") == 0
    off = cfg.model_copy(update={"early_stopping_warmup_examples": 0})
    assert warmup_checks(off, 80_000, None) == 0
