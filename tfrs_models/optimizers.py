"""Optimizers whose cost per step does not grow with the catalog.

Keras's Adam applies a sparse gradient (an embedding lookup's `IndexedSlices`) by decaying its
whole first- and second-moment tables and then moving every row of the variable, so one step
touches 3 x rows x dim floats: 291 ms at 1M items x 64 against about 1 ms for Adagrad
(`bench/bench_optimizer.py`). With a million-item id embedding that is most of a training step.

- `LazyAdam` moves only the rows a batch touches and forgets the rest: a rare row loses the
  steps Adam would have moved it on its momentum (about 9x its own step), and quality drops.
- `CatchUpAdam` also touches only the batch's rows per step, but a row pays the steps it skipped,
  in closed form, before it is next read; `flush` pays every row's debt before the weights are
  read. With the tables built as `CatchUpEmbedding` (rows paid before the forward pass) and the
  `CatchUpFlush` callback first in `fit`, its weights are Adam's up to float32 rounding.
  Without `CatchUpEmbedding` rows are paid after the forward pass, so a rare row's gradient is
  taken at weights its skipped steps have not moved yet: Recall@100 0.402 on ML-100K (one run,
  noise ~0.005), against 0.457 for Adam and 0.389 for LazyAdam.
"""

from __future__ import annotations

import math
import weakref

import tensorflow as tf

from pipelines.errors import ConfigError


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


class CatchUpAdam(tf.keras.optimizers.Adam):
    """Adam whose sparse step costs O(rows the batch touches) yet tracks Keras's Adam: each row
    owes the steps since it was last touched and pays them, in closed form, when it is next
    touched or when `flush` is called.

    Keras's Adam moves a row on every step, also when the batch does not touch it: its moments
    decay (m *= beta_1, v *= beta_2) and the weight moves by alpha_j m_j / (sqrt(v_j) + eps).
    A row last brought up to date at step s (moments m_s, v_s) and touched again at step t
    first gets the k = t - 1 - s steps it skipped: m and v decay by beta_1^k and beta_2^k and
    the weight moves by

        sum_{i=1..k} lr b_{s+i} beta_1^i m_s / (beta_2^(i/2) sqrt(v_s) + eps)
          ~ lr m_s / (sqrt(v_s) / R + eps / E)

    with b_j = sqrt(1 - beta_2^j) / (1 - beta_1^j) Adam's bias correction, r = beta_1 /
    sqrt(beta_2), R = sum_i b_{s+i} r^i and E = sum_i b_{s+i} beta_1^i (with `adaptive_epsilon`,
    E = sum_i beta_1^i / (1 - beta_1^(s+i))). R and E are summed term by term over the first
    `window` skipped steps (r^window < 1e-7), so the bias correction's growth early in training
    is exact; the rest is a geometric tail at the window's end. The one approximation is the
    fraction: it is exact when eps is negligible (eps << sqrt(v)) and when it dominates, and
    within 7e-6 relative of the exact sum in between (beta_1=0.9, beta_2=0.999; measured for
    eps / sqrt(v) from 1e-4 to 1e4 and s from 0 to 1e5). Then step t is Adam's own update.

    Adam takes step t's gradient at weights its skipped steps already moved, so the rows must
    be paid before the forward pass reads them: `catch_up(variable, rows)`, which
    `CatchUpEmbedding` calls in training. Rows a batch's gradient reaches but that were not
    paid first get their skipped steps in `update_step`, after the forward pass: still O(rows),
    but their gradient is a few steps stale (on ML-100K that lost most of the gain).

    Before weights are read (validation, checkpoint, export), call `flush` (the `CatchUpFlush`
    callback does, at the end of every epoch, before evaluation and at the end of training):
    it pays every row's debt in one dense pass. Dense gradients get Adam's update.

    Limits: the learning rate of the skipped steps is taken as the current one (exact for a
    constant rate; a schedule is approximated); the per-row step count is a float32 slot, exact
    up to 2^24 steps; Keras deduplicates a sparse gradient's rows before `update_step`, which
    relies on it. `amsgrad`, `weight_decay` and `use_ema` are refused (each touches every row
    every step). The slots `m`, `v` and `last_step` (one per row) are optimizer variables, so a
    checkpoint holds them and a resumed run continues where it stopped.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str = "CatchUpAdam",
        **kwargs,
    ):
        refused = [key for key in ("amsgrad", "weight_decay", "use_ema") if kwargs.get(key)]
        if refused:
            raise ConfigError(
                f"CatchUpAdam does not support {', '.join(refused)}: each changes every row on "
                "every step, which is what CatchUpAdam avoids; use Adam for them."
            )
        ratio = beta_1 / math.sqrt(beta_2)
        if not 0 < ratio < 1:
            raise ConfigError(
                f"CatchUpAdam needs 0 < beta_1 < sqrt(beta_2) (got beta_1={beta_1}, "
                f"beta_2={beta_2}): otherwise a skipped row's momentum never fades."
            )
        # XLA would compile the sparse step for every batch's row count; it pays off on dense
        # GPU steps only, which is not what this optimizer is for.
        kwargs.setdefault("jit_compile", False)
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name=name, **kwargs)
        self.window = math.ceil(math.log(1e-7) / math.log(ratio))

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_last_steps", None) is not None:
            return
        # The step each row of a variable is up to date with ([rows]; [] for a scalar).
        self._last_steps = [
            self.add_variable_from_reference(var, "last_step", shape=var.shape[:1])
            for var in var_list
        ]

    def update_step(self, gradient, variable):
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        last = self._last_steps[self._index_dict[key]]
        step = tf.cast(self.iterations + 1, variable.dtype)
        if not isinstance(gradient, tf.IndexedSlices):
            # A variable gets dense or sparse gradients for a whole run; should one trained
            # sparsely get a dense gradient, its rows are brought up to date first.
            tf.cond(
                tf.reduce_min(last) < step - 1,
                lambda: self._catch_up_all(variable, step - 1),
                lambda: None,
            )
            super().update_step(gradient, variable)
            last.assign(tf.fill(tf.shape(last), step))
            return
        rows = gradient.indices  # unique: Keras sums a row's repeated lookups before this
        m_rows, v_rows, owed = self._caught_up(
            tf.gather(m, rows), tf.gather(v, rows), tf.gather(last, rows), step - 1
        )
        beta_1, beta_2 = self._betas(variable.dtype)
        # 1 - beta in double precision, as Adam has it (1 - 0.999 in float32 is 1.3e-5 off).
        m_rows = beta_1 * m_rows + (1 - self.beta_1) * gradient.values
        v_rows = beta_2 * v_rows + (1 - self.beta_2) * tf.square(gradient.values)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        alpha = self._lr(variable.dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = (
            self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
        )
        moved = owed + alpha * m_rows / (tf.sqrt(v_rows) + epsilon)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        variable.scatter_sub(tf.IndexedSlices(moved, rows))

    def flush(self, variables) -> None:
        """Bring every row of `variables` up to the current step, as Adam would have it.

        Args:
            variables: the model's trainable variables (those this optimizer updates; others
                are skipped). Rows already up to date do not move, so a second call is a no-op.
        """
        if getattr(self, "_last_steps", None) is None:
            return
        step = tf.cast(self.iterations, tf.float32)
        for variable in variables:
            if self._var_key(variable) in self._index_dict:
                last = self._last_steps[self._index_dict[self._var_key(variable)]]
                if bool(tf.reduce_min(last) < tf.cast(step, last.dtype)):
                    self._catch_up_all(variable, tf.cast(step, variable.dtype))

    def catch_up(self, variable, rows) -> None:
        """Bring `rows` of `variable` up to the current step, before a forward pass reads them.

        The gradient of a step is computed at the weights the forward pass reads; Adam has
        already moved a skipped row there, `update_step` moves it only afterwards. Calling this
        on a batch's rows before its forward pass (in training only) makes the two agree.

        Args:
            variable: a variable this optimizer updates, `[rows, ...]`.
            rows: `[n]` int row ids (repeats allowed).

        Raises:
            ConfigError: the optimizer has no slots yet. Inside a `tf.function` (Keras's train
                step) a call before the first `apply_gradients` would be traced as a no-op.
        """
        if getattr(self, "_last_steps", None) is None:
            raise ConfigError(
                "CatchUpAdam.catch_up before the optimizer has its slots: call "
                "optimizer.build(model.trainable_variables) once the model is built."
            )
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        last = self._last_steps[self._index_dict[key]]
        rows, _ = tf.unique(tf.reshape(rows, [-1]))
        step = tf.cast(self.iterations, variable.dtype)
        m_rows, v_rows, owed = self._caught_up(
            tf.gather(m, rows), tf.gather(v, rows), tf.gather(last, rows), step
        )
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        variable.scatter_sub(tf.IndexedSlices(owed, rows))

    def _catch_up_all(self, variable, step):
        """Dense pass: every row of `variable` is brought up to `step` (scalar)."""
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        last = self._last_steps[self._index_dict[key]]
        if variable.shape.rank == 0:  # a scalar is one row
            m_new, v_new, owed = self._caught_up(m[None], v[None], last[None], step)
            m_new, v_new, owed = m_new[0], v_new[0], owed[0]
        else:
            m_new, v_new, owed = self._caught_up(m, v, last, step)
        m.assign(m_new)
        v.assign(v_new)
        last.assign(tf.fill(tf.shape(last), step))
        variable.assign_sub(owed)

    def _caught_up(self, m, v, last, step):
        """Rows' moments after the steps `last + 1 .. step` without a gradient, and how far
        those steps move them.

        Args:
            m, v: the rows' moments, `[n, ...]`, as of step `last`.
            last: `[n]` the step each row is up to date with.
            step: scalar, the step to bring them to (>= every `last`).

        Returns:
            `(m, v, owed)`, each `[n, ...]`: the moments at `step` and the amount Adam's steps
            subtract from the rows' weights.
        """
        dtype = m.dtype
        skipped = step - last
        # Rows up to date with the same step share R and E: one computation per distinct step.
        since, position = tf.unique(last)
        fast, slow = self._skipped_sums(since, step - since, dtype)
        per_row = tf.concat([tf.shape(last), tf.ones([tf.rank(m) - 1], tf.int32)], 0)
        fast = tf.reshape(tf.gather(fast, position), per_row)
        slow = tf.reshape(tf.gather(slow, position), per_row)
        denominator = tf.sqrt(v) * tf.math.divide_no_nan(1.0, fast) + self.epsilon * (
            tf.math.divide_no_nan(1.0, slow)
        )
        owed = self._lr(dtype) * tf.math.divide_no_nan(m, denominator)
        beta_1, beta_2 = self._betas(dtype)
        skipped = tf.reshape(skipped, per_row)
        return m * tf.pow(beta_1, skipped), v * tf.pow(beta_2, skipped), owed

    def _skipped_sums(self, since, skipped, dtype):
        """R and E of the class docstring for rows last updated at `since` ([u]) that skipped
        `skipped` ([u]) steps; 0 where nothing was skipped.

        Returns:
            `(R, E)`, each `[u]`.
        """
        beta_1, beta_2 = self._betas(dtype)
        ratio = beta_1 / tf.sqrt(beta_2)
        i = tf.range(1, self.window + 1, dtype=dtype)  # [window]
        j = since[:, None] + i  # [u, window]: the skipped steps
        correction_1, correction_2 = 1 - tf.pow(beta_1, j), tf.sqrt(1 - tf.pow(beta_2, j))
        paid = i <= skipped[:, None]
        zero = tf.zeros_like(j)
        fast = tf.reduce_sum(tf.where(paid, correction_2 / correction_1 * ratio**i, zero), 1)
        eps_weight = 1 / correction_1 if self.adaptive_epsilon else correction_2 / correction_1
        slow = tf.reduce_sum(tf.where(paid, eps_weight * beta_1**i, zero), 1)
        # Beyond the window the terms are < 1e-7 of the sum: a geometric tail with the bias
        # correction of the window's last step.
        tail = tf.maximum(skipped - self.window, 0)
        first = float(self.window + 1)
        fast += correction_2[:, -1] / correction_1[:, -1] * _geometric(ratio, first, tail)
        slow += eps_weight[:, -1] * _geometric(beta_1, first, tail)
        return fast, slow

    def _betas(self, dtype):
        return tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)

    def _lr(self, dtype):
        return tf.cast(self.learning_rate, dtype)


def _geometric(ratio, first, count):
    """sum_{i=first}^{first+count-1} ratio^i, elementwise over `count`."""
    return ratio**first * (1 - ratio**count) / (1 - ratio)


class CatchUpEmbedding(tf.keras.layers.Embedding):
    """An `Embedding` whose looked-up rows a `CatchUpAdam` pays up before a training forward
    pass reads them, so the gradient is taken where Adam would take it; otherwise (inference,
    export, any other optimizer) exactly an `Embedding`, with the same variables.

    `CatchUpFlush` attaches the model's `CatchUpAdam` for the length of `fit` only (under the
    default strategy: a replica cannot assign to mirrored slots), so functions traced outside
    it (validation, SavedModel export) never capture the optimizer.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.paid_by = None  # a weakref to the CatchUpAdam; not tracked, not saved

    def call(self, inputs, training=None):
        optimizer = None if self.paid_by is None else self.paid_by()
        if training and optimizer is not None:
            optimizer.catch_up(self.embeddings, inputs)
        return super().call(inputs)


class CatchUpFlush(tf.keras.callbacks.Callback):
    """Calls `CatchUpAdam.flush` on the model's weights whenever they are about to be read: at
    the end of every epoch (put it first in `fit`'s callbacks, so validation and checkpoints see
    flushed weights), before an evaluation (`fit`'s validation_data) or a prediction, and at the
    end of training. During `fit` it attaches the optimizer to the model's `CatchUpEmbedding`
    layers. With any other optimizer it does nothing.
    """

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        strategy = self.model.distribute_strategy
        if not isinstance(optimizer, CatchUpAdam) or strategy is not tf.distribute.get_strategy():
            return
        # catch_up's operations are traced into the first step, before Keras builds the slots.
        optimizer.build(self.model.trainable_variables)
        for layer in self._embeddings():
            layer.paid_by = weakref.ref(optimizer)

    def on_epoch_end(self, epoch, logs=None):
        self._flush()

    def on_test_begin(self, logs=None):
        self._flush()

    def on_predict_begin(self, logs=None):
        self._flush()

    def on_train_end(self, logs=None):
        self._flush()
        for layer in self._embeddings():
            layer.paid_by = None

    def _embeddings(self) -> list[CatchUpEmbedding]:
        return [m for m in self.model.submodules if isinstance(m, CatchUpEmbedding)]

    def _flush(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if isinstance(optimizer, CatchUpAdam):
            optimizer.flush(self.model.trainable_variables)
