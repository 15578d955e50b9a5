"""`train.optimizer: lazy_adam`: Adam on the rows a batch touches, Adam itself elsewhere; and
`CatchUpAdam`: the same cost per step, Adam's result."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import TrainConfig
from pipelines.errors import ConfigError
from tfrs_models.optimizers import CatchUpAdam, CatchUpEmbedding, CatchUpFlush, LazyAdam
from tfrs_models.train import make_optimizer


def _embedding_steps(optimizer, batches, rows=6, dim=3, dense=False):
    tf.keras.utils.set_random_seed(1)
    embedding = tf.keras.layers.Embedding(rows, dim)
    embedding.build((None,))
    start = embedding.embeddings.numpy().copy()
    for ids in batches:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(tf.constant(ids)) ** 2)
        grads = tape.gradient(loss, embedding.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if dense:  # the same gradient as one dense tensor (repeated rows summed)
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply_gradients(zip(grads, embedding.trainable_variables, strict=True))
    return start, embedding.embeddings.numpy()


def test_first_sparse_step_equals_adam_on_the_dense_gradient():
    """Row 1 is looked up twice: its gradient is the sum (Keras's sparse Adam squares the two
    parts separately for the second moment, dense Adam and LazyAdam square the sum)."""
    ids = [[1, 4, 1]]
    _, adam = _embedding_steps(tf.keras.optimizers.Adam(0.1), ids, dense=True)
    start, lazy = _embedding_steps(LazyAdam(0.1), ids)
    # rtol: Adam's dense step is XLA-compiled (jit_compile), which rounds its division and
    # square root differently in float32 (about 1e-5 relative); the update itself is ~1e-1.
    np.testing.assert_allclose(lazy, adam, rtol=1e-4, atol=1e-6)
    assert not np.allclose(lazy[[1, 4]], start[[1, 4]])
    np.testing.assert_array_equal(lazy[[0, 2, 3, 5]], start[[0, 2, 3, 5]])


def test_later_steps_leave_rows_outside_the_batch_where_they_were():
    batches = [[1, 4], [2, 3], [2, 5]]
    start, lazy = _embedding_steps(LazyAdam(0.1), batches)
    _, after_first = _embedding_steps(LazyAdam(0.1), batches[:1])
    _, adam = _embedding_steps(tf.keras.optimizers.Adam(0.1), batches)
    # Rows 1 and 4 are not looked up after step 1: lazy keeps them, Adam's momentum moves them.
    np.testing.assert_array_equal(lazy[[1, 4]], after_first[[1, 4]])
    assert not np.allclose(adam[[1, 4]], after_first[[1, 4]])
    np.testing.assert_array_equal(lazy[0], start[0])  # never looked up
    # Row 2, in steps 2 and 3 only, gets exactly Adam's two-step update of its own gradients.
    assert not np.allclose(lazy[2], start[2])


def _dense_fit(optimizer) -> np.ndarray:
    """A dense 4-vector after 3 steps of `optimizer` on a sum of squares."""
    tf.keras.utils.set_random_seed(2)
    w = tf.Variable(np.arange(4, dtype=np.float32))
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum((w - 1.0) ** 2)
        optimizer.apply_gradients([(tape.gradient(loss, w), w)])
    return w.numpy()


def test_dense_gradients_get_adam_and_the_config_names_it():
    np.testing.assert_array_equal(
        _dense_fit(LazyAdam(0.05)), _dense_fit(tf.keras.optimizers.Adam(0.05))
    )
    assert isinstance(make_optimizer(TrainConfig(optimizer="lazy_adam")), LazyAdam)


# CatchUpAdam: a row's skipped steps paid when it is next touched or at flush.
# Rows of the 12 x 4 table: 0 in every batch, 1 every 7th, 2 once (step 3), 3-10 three of eight
# at random, 11 never. Gradient scales: rows 9 and 10 get 1e-9 and 1e-5 of the others', so their
# sqrt(v) is far below and near Adam's epsilon (1e-7): the closed form's two limits and its
# middle.
_STEPS = 40
_SCALE = np.array([1.0] * 9 + [1e-9, 1e-5, 1.0], np.float32)


def _catch_up_batches(steps=_STEPS):
    rng = np.random.default_rng(0)
    batches = []
    for step in range(steps):
        ids = [0] + [1] * (step % 7 == 3) + [2] * (step == 2)
        batches.append(ids + list(rng.choice(np.arange(3, 11), size=3, replace=False)))
    return batches


def _catch_up_steps(
    optimizer, batches, linear=True, before_forward=False, flush=True, embedding=None
):
    """Train a 12 x 4 embedding (or continue `embedding`) on `batches`; `linear`: the loss is
    linear in the weights (its gradient does not depend on them), else a sum of squares.

    Returns:
        (start, end, embedding): the weights before and after, `[12, 4]` each, and the layer.
    """
    if embedding is None:
        tf.keras.utils.set_random_seed(1)
        embedding = tf.keras.layers.Embedding(12, 4)
        embedding.build((None,))
    if before_forward:
        optimizer.build(embedding.trainable_variables)  # catch_up needs the slots
    start = embedding.embeddings.numpy().copy()
    target = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    for ids in batches:
        ids = tf.constant(ids)
        if before_forward:
            optimizer.catch_up(embedding.embeddings, ids)
        with tf.GradientTape() as tape:
            rows, scale = embedding(ids), tf.gather(_SCALE, ids)[:, None]
            fit = rows * tf.gather(target, ids) if linear else (rows - 0.3) ** 2
            loss = tf.reduce_sum(scale * fit)
        grads = tape.gradient(loss, embedding.trainable_variables)
        if not isinstance(optimizer, CatchUpAdam | LazyAdam):  # Adam's dense rule: the reference
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply_gradients(zip(grads, embedding.trainable_variables, strict=True))
    if flush and isinstance(optimizer, CatchUpAdam):
        optimizer.flush(embedding.trainable_variables)
    return start, embedding.embeddings.numpy(), embedding


def _slots(optimizer):
    """m, v and last_step of a one-variable CatchUpAdam, as arrays."""
    named = {s.name.split("/")[-2]: s.numpy() for s in optimizer.variables if "/" in s.name}
    return [named["m"], named["v"], named["last_step"]]


def test_catch_up_adam_after_flush_equals_adam():
    """The skipped steps' closed form is exact up to float32 rounding when the gradient does not
    depend on the weights. atol 1e-6: rows move up to 0.4 over 40 steps (lr 0.01) and float32
    rounding of 40 Adam steps is ~1e-7; the closed form's one approximation (at most 7e-6 of a
    catch-up's movement) stays below that. Rows 9 and 10 move ~1e-5 in all, so their movement
    is compared relative to Adam's (1e-3)."""
    batches = _catch_up_batches()
    start, adam, _ = _catch_up_steps(tf.keras.optimizers.Adam(0.01), batches)
    _, ours, _ = _catch_up_steps(CatchUpAdam(0.01), batches)
    _, lazy, _ = _catch_up_steps(LazyAdam(0.01), batches)
    np.testing.assert_allclose(ours, adam, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[9:11] - start[9:11], adam[9:11] - start[9:11], rtol=1e-3)
    np.testing.assert_array_equal(ours[11], start[11])
    assert np.abs(lazy - adam).max() > 0.05  # what LazyAdam loses, for scale


def test_a_step_moves_only_the_batch_rows_until_flush():
    optimizer = CatchUpAdam(0.01)
    _, before, embedding = _catch_up_steps(optimizer, _catch_up_batches(10), flush=False)
    slots = _slots(optimizer)
    gradient = tf.IndexedSlices(tf.ones([1, 4]), tf.constant([5]), tf.constant([12, 4]))
    optimizer.apply_gradients([(gradient, embedding.embeddings)])
    after, others = embedding.embeddings.numpy(), np.arange(12) != 5
    np.testing.assert_array_equal(after[others], before[others])
    for slot, old in zip(_slots(optimizer), slots, strict=True):
        np.testing.assert_array_equal(slot[others], old[others])
    assert not np.allclose(after[5], before[5])
    optimizer.flush(embedding.trainable_variables)
    assert (_slots(optimizer)[2] == 11).all()  # every row is up to date with step 11


def test_catch_up_before_the_forward_pass_equals_adam_on_any_loss():
    """With a sum of squares the gradient is taken at the weights the forward pass reads, which
    Adam has already moved on the skipped steps. `catch_up(rows)` before the forward pass gives
    Adam's result (atol as above); without it a rarely touched row's gradient is taken before
    its skipped steps are paid: not Adam's, but far closer to it than LazyAdam."""
    batches = _catch_up_batches()
    _, adam, _ = _catch_up_steps(tf.keras.optimizers.Adam(0.01), batches, linear=False)
    _, early, _ = _catch_up_steps(CatchUpAdam(0.01), batches, linear=False, before_forward=True)
    _, late, _ = _catch_up_steps(CatchUpAdam(0.01), batches, linear=False)
    _, lazy, _ = _catch_up_steps(LazyAdam(0.01), batches, linear=False)
    np.testing.assert_allclose(early, adam, rtol=0, atol=1e-6)
    assert 1e-4 < np.abs(late - adam).max() < np.abs(lazy - adam).max() / 10


def test_catch_up_adam_checkpoint_resumes_identically(tmp_path):
    """Saved while rows owe steps (no flush): the restored optimizer pays them alike."""
    batches = _catch_up_batches()
    _, whole, _ = _catch_up_steps(CatchUpAdam(0.01), batches)
    optimizer = CatchUpAdam(0.01)
    _, _, embedding = _catch_up_steps(optimizer, batches[:25], flush=False)
    path = tf.train.Checkpoint(embedding=embedding, optimizer=optimizer).save(tmp_path / "ck")
    restored = CatchUpAdam(0.01)
    tf.keras.utils.set_random_seed(3)  # other initial weights: the checkpoint must replace them
    copy = tf.keras.layers.Embedding(12, 4)
    copy.build((None,))
    # Restored before the optimizer has slots, as train.py does: they are filled when created.
    tf.train.Checkpoint(embedding=copy, optimizer=restored).restore(path)
    assert int(restored.iterations.numpy()) == 25
    _, resumed, _ = _catch_up_steps(restored, batches[25:], embedding=copy)
    np.testing.assert_array_equal(resumed, whole)


def test_catch_up_adam_gives_dense_variables_adam_and_flushes_in_fit():
    np.testing.assert_array_equal(
        _dense_fit(CatchUpAdam(0.05)), _dense_fit(tf.keras.optimizers.Adam(0.05))
    )

    class Seen(tf.keras.callbacks.Callback):  # what a later callback (validation) would read
        def on_epoch_end(self, epoch, logs=None):
            steps.append(int(self.model.optimizer.iterations.numpy()))
            slots = self.model.optimizer.variables
            lasts.append(min(s.numpy().min() for s in slots if "last_step" in s.name))

    tf.keras.utils.set_random_seed(4)
    model = tf.keras.Sequential([tf.keras.layers.Embedding(50, 4), tf.keras.layers.Dense(1)])
    model.compile(optimizer=CatchUpAdam(0.01), loss="mse")
    ids, labels = np.arange(40).reshape(20, 2) % 7, np.ones((20, 2, 1), np.float32)
    steps, lasts = [], []
    model.fit(ids, labels, batch_size=5, epochs=2, verbose=0, callbacks=[CatchUpFlush(), Seen()])
    assert steps == [4, 8] and lasts == [4, 8]  # rows 7-49 never looked up, yet up to date


def test_catch_up_embedding_in_fit_equals_adam_and_exports(tmp_path):
    """Rows paid before the forward pass, during fit only: Adam's weights on a loss whose
    gradient depends on them (atol as above), and a SavedModel afterwards holds no optimizer."""

    def fit(optimizer):
        tf.keras.utils.set_random_seed(5)
        model = tf.keras.Sequential(
            [
                tf.keras.Input((2,), dtype="int64"),
                CatchUpEmbedding(30, 4),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(1),
            ]
        )
        model.compile(optimizer=optimizer, loss="mse")
        ids = np.random.default_rng(5).zipf(1.5, (40, 2)) % 30  # rows 0-2 often, most rarely
        labels = np.random.default_rng(6).normal(size=(40, 1)).astype(np.float32)
        model.fit(ids, labels, batch_size=4, epochs=3, shuffle=False, verbose=0,
                  callbacks=[CatchUpFlush()])  # fmt: skip
        return model

    adam, ours = fit(tf.keras.optimizers.Adam(0.01)), fit(CatchUpAdam(0.01))
    for mine, reference in zip(ours.get_weights(), adam.get_weights(), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-6)
    assert ours.layers[0].paid_by is None
    tf.saved_model.save(ours, str(tmp_path / "export"))


def test_catch_up_adam_refuses_what_touches_every_row():
    with pytest.raises(ConfigError, match="amsgrad"):
        CatchUpAdam(amsgrad=True)
