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
    from tfrs_models.train import ValidationCallback

    callback = ValidationCallback(
        ScriptedValidation(curve), 100, patience, tmp_path / "logs", tmp_path, min_delta=min_delta
    )
    model = Weights()
    callback.set_model(model)
    epochs = 0
    for epoch in range(len(curve)):
        callback.on_epoch_end(epoch, {"loss": 1.0})
        epochs += 1
        if model.stop_training:
            break
    return epochs, callback.best_epoch


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
