"""`train.optimizer: lazy_adam`: Adam on the rows a batch touches, Adam itself elsewhere."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines.config import TrainConfig
from tfrs_models.optimizers import LazyAdam
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


def test_dense_gradients_get_adam_and_the_config_names_it():
    def fit(optimizer):
        tf.keras.utils.set_random_seed(2)
        w = tf.Variable(np.arange(4, dtype=np.float32))
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum((w - 1.0) ** 2)
            optimizer.apply_gradients([(tape.gradient(loss, w), w)])
        return w.numpy()

    np.testing.assert_array_equal(fit(LazyAdam(0.05)), fit(tf.keras.optimizers.Adam(0.05)))
    assert isinstance(make_optimizer(TrainConfig(optimizer="lazy_adam")), LazyAdam)
