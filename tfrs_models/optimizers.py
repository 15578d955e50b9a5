"""Optimizers whose cost per step does not grow with the catalog.

Keras's Adam applies a sparse gradient (an embedding lookup's `IndexedSlices`) by decaying its
whole first- and second-moment tables and then moving every row of the variable, so one step
touches 3 x rows x dim floats: 291 ms at 1M items x 64 against about 1 ms for Adagrad
(`bench/bench_optimizer.py`). With a million-item id embedding that is most of a training step.
"""

from __future__ import annotations

import tensorflow as tf


class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that, for sparse gradients, updates the moments and the weights of the rows the
    batch touches only (the rule of TensorFlow Addons' LazyAdam); dense gradients get Adam.

    A row's moments decay only on the steps it appears in, so rare items keep their momentum
    between appearances instead of drifting on it every step. On the first step, and for every
    dense variable, the result equals Adam's. The slot variables are Adam's (`m`, `v`), so
    checkpoints move between the two.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = (
            self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
        )
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        # A row looked up twice in the batch has one gradient: their sum (what Adam adds too).
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
