"""`ProgressLog`: where an epoch is, logged while it runs when there is no progress bar."""

from __future__ import annotations

import logging
import re

import numpy as np
import tensorflow as tf

from tfrs_models.train import ProgressLog


def test_progress_lines_name_the_step_the_rate_and_the_time_left(caplog):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((64, 3), np.float32), np.ones((64, 1), np.float32)
    with caplog.at_level(logging.INFO, logger="tfrs_models.train"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                  callbacks=[ProgressLog(4, 16, interval=0.0, label="final fit ")])  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if r.name == "tfrs_models.train"]
    assert len(lines) == 10, lines  # every step of both epochs (interval 0), and each epoch's end
    assert re.fullmatch(
        r"final fit epoch 1: step 1 of 4 \(25%\), ~\d+ min left, \d+ examples/s", lines[0]
    ), lines[0]
    assert re.fullmatch(r"final fit epoch 1 done in \d+ s, loss [\d.e+-]+", lines[4]), lines[4]
    assert lines[8].startswith("final fit epoch 2: step 4 of 4 (100%), ~0 min left")


def test_without_a_step_count_only_the_step_and_rate(caplog):
    log = ProgressLog(None, 8, interval=0.0)
    log.on_epoch_begin(0)
    with caplog.at_level(logging.INFO, logger="tfrs_models.train"):
        log.on_train_batch_end(2)
    assert re.fullmatch(r"epoch 1: step 3, \d+ examples/s", caplog.records[-1].getMessage())


def test_checks_are_named_as_checks_with_the_part_of_the_pass(caplog):
    """An epoch cut into validation checks: each Keras epoch is a check, not a pass."""
    log = ProgressLog(10, 8, interval=0.0, checks=4)
    with caplog.at_level(logging.INFO, logger="tfrs_models.train"):
        log.on_epoch_begin(2)
        log.on_train_batch_end(4)
        log.on_epoch_end(2, {"loss": 0.5})
    first, done = (r.getMessage() for r in caplog.records[-2:])
    assert first.startswith("check 3 (epoch 0.75): step 5 of 10 (50%)"), first
    assert re.fullmatch(r"check 3 \(epoch 0\.75\) done in \d+ s, loss 0\.5", done), done
