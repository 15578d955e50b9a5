"""Optimizer cost per step of a sparse embedding update, by catalog size: Adam, LazyAdam,
CatchUpAdam, Adagrad; and how far LazyAdam and CatchUpAdam end from Adam.

One `tf.keras` Embedding of `items` x 64, a batch of 1,024 random ids, the gradient of a sum of
squares (IndexedSlices, as for the towers' id embeddings), applied by each optimizer; median of
30 steps after 2 warm-up steps. Keras's Adam decays its whole moment tables on every step even
for sparse gradients, so its cost grows with the catalog; Adagrad's sparse update touches only
the batch's rows, and so do `tfrs_models.optimizers.LazyAdam` (`train.optimizer: lazy_adam`) and
`CatchUpAdam`, which pays a row's skipped steps when it is next touched or flushed (the flush,
one dense pass at the end of an epoch, is timed on its own, after the 30 steps, with every row
owing steps).

The deviation columns train three copies of one embedding for 30 steps of new random ids each
(learning rate 0.01), flush CatchUpAdam, and give the largest absolute difference of a weight
from Adam's. The loss's gradient (2 w) depends on the weights, so CatchUpAdam matches Adam only
when a batch's rows are brought up to date before the forward pass reads them (`catch_up`, last
column); paid after it, a row's gradient is taken at weights its skipped steps have not moved.

    python bench/bench_optimizer.py --items 20000 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _embedding(items: int, seed: int = 0) -> tf.keras.layers.Embedding:
    tf.keras.utils.set_random_seed(seed)
    embedding = tf.keras.layers.Embedding(items, 64)
    embedding.build((None,))
    return embedding


def _step_fn(embedding, optimizer, catch_up_first: bool = False):
    if catch_up_first:
        optimizer.build(embedding.trainable_variables)

    @tf.function
    def step(ids):
        if catch_up_first:  # pay the batch rows' skipped steps before the forward pass reads them
            optimizer.catch_up(embedding.embeddings, ids)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(ids) ** 2)
        grads = tape.gradient(loss, embedding.trainable_variables)
        optimizer.apply_gradients(zip(grads, embedding.trainable_variables, strict=True))

    return step


def ms_per_step(
    items: int, optimizer, steps: int = 30, catch_up_first: bool = False
) -> tuple[float, float | None]:
    """Median milliseconds of a step, and of the flush after them (None: no flush)."""
    embedding = _embedding(items)
    step = _step_fn(embedding, optimizer, catch_up_first)
    ids = tf.random.uniform((1024,), 0, items, dtype=tf.int32)
    step(ids), step(ids)
    flushes = hasattr(optimizer, "flush")
    if flushes:  # the first call creates its kernels: not what an epoch's flush costs
        optimizer.flush(embedding.trainable_variables)
        step(ids)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(ids)
        times.append(time.perf_counter() - start)
    flush = None
    if flushes:
        start = time.perf_counter()
        optimizer.flush(embedding.trainable_variables)
        flush = 1000 * (time.perf_counter() - start)
    return 1000 * statistics.median(times), flush


def weights_after(items: int, optimizer, steps: int = 30, catch_up_first=False) -> np.ndarray:
    """The embedding after `steps` steps of 1,024 new random ids each (flushed if it can be)."""
    embedding = _embedding(items)
    step = _step_fn(embedding, optimizer, catch_up_first)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        step(tf.constant(rng.integers(0, items, 1024), tf.int32))
    if hasattr(optimizer, "flush"):
        optimizer.flush(embedding.trainable_variables)
    return embedding.embeddings.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[20_000, 1_000_000])
    args = parser.parse_args()
    from tfrs_models.optimizers import CatchUpAdam, LazyAdam

    print(
        "| items | Adam ms/step | LazyAdam ms/step | CatchUpAdam ms/step (catch_up before forward) "
        "| CatchUpAdam flush ms "
        "| Adagrad ms/step | Adam / CatchUpAdam | max abs dev from Adam: LazyAdam | CatchUpAdam "
        "| CatchUpAdam, catch_up before forward |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for items in args.items:
        adam, _ = ms_per_step(items, tf.keras.optimizers.Adam(1e-3))
        lazy, _ = ms_per_step(items, LazyAdam(1e-3))
        ours, flush = ms_per_step(items, CatchUpAdam(1e-3))
        ours_early, _ = ms_per_step(items, CatchUpAdam(1e-3), catch_up_first=True)
        adagrad, _ = ms_per_step(items, tf.keras.optimizers.Adagrad(0.1))
        reference = weights_after(items, tf.keras.optimizers.Adam(0.01))
        lazy_dev = np.abs(weights_after(items, LazyAdam(0.01)) - reference).max()
        ours_dev = np.abs(weights_after(items, CatchUpAdam(0.01)) - reference).max()
        early = weights_after(items, CatchUpAdam(0.01), catch_up_first=True)
        early_dev = np.abs(early - reference).max()
        print(
            f"| {items:,} | {adam:.1f} | {lazy:.1f} | {ours:.1f} ({ours_early:.1f}) | {flush:.0f} | {adagrad:.1f} | "
            f"{adam / ours:.0f}x | {lazy_dev:.2g} | {ours_dev:.2g} | {early_dev:.2g} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
