"""Optimizer cost per step of a sparse embedding update, by catalog size: Adam, LazyAdam, Adagrad.

One `tf.keras` Embedding of `items` x 64, a batch of 1,024 random ids, the gradient of a sum of
squares (IndexedSlices, as for the towers' id embeddings), applied by each optimizer; median of
30 steps after 2 warm-up steps. Keras's Adam decays its whole moment tables on every step even
for sparse gradients, so its cost grows with the catalog; Adagrad's sparse update touches only
the batch's rows, and so does `tfrs_models.optimizers.LazyAdam` (`train.optimizer: lazy_adam`).

    python bench/bench_optimizer.py --items 20000 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # noqa: E402


def ms_per_step(items: int, optimizer: tf.keras.optimizers.Optimizer, steps: int = 30) -> float:
    embedding = tf.keras.layers.Embedding(items, 64)
    embedding.build((None,))
    ids = tf.random.uniform((1024,), 0, items, dtype=tf.int32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(ids) ** 2)
        grads = tape.gradient(loss, embedding.trainable_variables)
        optimizer.apply_gradients(zip(grads, embedding.trainable_variables, strict=True))

    step(), step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[20_000, 1_000_000])
    args = parser.parse_args()
    from tfrs_models.optimizers import LazyAdam

    print("| items | Adam ms/step | LazyAdam ms/step | Adagrad ms/step | Adam / LazyAdam |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for items in args.items:
        adam = ms_per_step(items, tf.keras.optimizers.Adam(1e-3))
        lazy = ms_per_step(items, LazyAdam(1e-3))
        adagrad = ms_per_step(items, tf.keras.optimizers.Adagrad(0.1))
        print(
            f"| {items:,} | {adam:.1f} | {lazy:.1f} | {adagrad:.1f} | {adam / lazy:.0f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
