"""Where a training step's time goes on a feature run: input, forward, gradient, optimizer.

For each model variant (`--variants`: the default model, the ID-only tutorial model, the default
without one component) and each optimizer, in one process on the same features: the model is
built (`tfrs_models.train.build_model`), `--batches` train batches are read once, and then, on those
same batches, the median time of the forward pass, of forward + gradient, and of a whole
`train_step` (gradient + optimizer update), each in a `tf.function`; plus the input pipeline's
time per batch (read, shuffle, parse). The optimizer's share is train_step - forward+gradient.
Then `model.fit` over the dataset for `--fit-steps` steps with `verbose=0` and `verbose=2`
(seconds per step after 20 warm-up steps): Keras's per-epoch log mode costs far more per step
than the step itself on a large catalog, which is why training without a terminal uses
`verbose=0` and logs its own progress.

    python bench/bench_train_step.py --features RUN/features --optimizers auto adam lazy_adam
    python bench/bench_train_step.py --features RUN/features --variants ours ID-only "no age bias"
    python bench/bench_train_step.py --features RUN/features --variants ours ID-only \
        --more-variants '{"hidden 256": {"hidden_units": 256}}'

Examples/s of a variant is batch_size / train_step; "ours / ID-only" is the throughput ratio the
performance issue asks to keep at or above 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402
from baselines import ID_ONLY_TRAIN  # noqa: E402

from pipelines.config import TrainConfig  # noqa: E402
from tfrs_models.data import FeatureSet, train_dataset  # noqa: E402
from tfrs_models.train import build_model  # noqa: E402


def median_seconds(fn, batches: list) -> float:
    fn(batches[0])  # trace
    times = []
    for batch in batches[1:]:
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(batch))  # wait for the result
        times.append(time.perf_counter() - start)
    return statistics.median(times)


VARIANTS = {
    "ours": {},
    "ID-only": ID_ONLY_TRAIN,
    "no age bias": {"item_age_bias": False},
    "no history": {"use_history": False},
    "no content": {"use_content": False},
    "no user id": {"use_user_id": False},
}


def profile(features: FeatureSet, cfg: TrainConfig, n: int) -> dict:
    model = build_model(features, cfg)
    batches = iter(train_dataset(features, cfg))
    next(batches)  # the shuffle buffer fills on the first batch
    start = time.perf_counter()
    data = [next(batches) for _ in range(n)]
    input_s = (time.perf_counter() - start) / n

    @tf.function
    def forward(batch):
        return model.compute_loss(batch, training=True)

    @tf.function
    def gradient(batch):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        # An embedding's gradient stays sparse (its rows' values), as the optimizer receives it.
        return loss, [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads]

    step = tf.function(model.train_step)
    return {
        "input": input_s,
        "forward": median_seconds(forward, data),
        "forward+gradient": median_seconds(gradient, data),
        "train_step": median_seconds(step, data),
    }


class _StepClock(tf.keras.callbacks.Callback):
    """Seconds per step of a `fit`, after `warmup` steps."""

    def __init__(self, warmup: int = 20):
        super().__init__()
        self.warmup, self.seconds = warmup, None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self.start, self.first = time.perf_counter(), batch
        elif batch + 1 > self.warmup:
            self.seconds = (time.perf_counter() - self.start) / (batch - self.first)


def fit_seconds(features: FeatureSet, cfg: TrainConfig, steps: int) -> dict:
    model = build_model(features, cfg)
    out = {}
    for verbose in (0, 2, 0):
        clock = _StepClock()
        model.fit(train_dataset(features, cfg), steps_per_epoch=steps, epochs=1,
                  verbose=verbose, callbacks=[clock])  # fmt: skip
        out.setdefault(verbose, []).append(clock.seconds)
    return {verbose: statistics.median(times) for verbose, times in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--optimizers", nargs="+", default=["auto", "adam"],
                        help="train.optimizer values; auto is the shipped default (catch_up_adam "
                        "in one process)")  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=["ours"], choices=list(VARIANTS))
    parser.add_argument(
        "--more-variants",
        type=json.loads,
        default={},
        help='JSON {"name": {train config overrides}}, run after --variants',
    )
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--fit-steps", type=int, default=80, help="0: skip the fit timing")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants} | args.more_variants
    features = FeatureSet.load(args.features)
    items = len(features.vocab["item_id"])
    print(f"{args.features}: {items:,} item ids, {len(features.vocab['user_id']):,} user ids, "
          f"batch {args.batch_size}, load average {os.getloadavg()[0]:.2f}\n")  # fmt: skip
    runs = [
        (f"{variant}, {optimizer}", TrainConfig(
            **overrides, optimizer=optimizer, batch_size=args.batch_size))
        for variant, overrides in variants.items() for optimizer in args.optimizers
    ]  # fmt: skip
    print("| variant, optimizer | input s/batch | forward s | forward+gradient s | train_step s | "
          "optimizer s (step - gradient) | examples/s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    steps = {}
    for label, cfg in runs:
        r = profile(features, cfg, args.batches)
        steps[label] = r["train_step"]
        print(f"| {label} | {r['input']:.4f} | {r['forward']:.4f} | "
              f"{r['forward+gradient']:.4f} | {r['train_step']:.4f} | "
              f"{r['train_step'] - r['forward+gradient']:.4f} | "
              f"{args.batch_size / r['train_step']:,.0f} |", flush=True)  # fmt: skip
    for optimizer in args.optimizers:
        ids = steps.get(f"ID-only, {optimizer}")
        for variant in variants:
            mine = steps.get(f"{variant}, {optimizer}")
            if ids and mine and variant != "ID-only":
                print(f"{variant} / ID-only examples/s with {optimizer}: {ids / mine:.2f}")
    if args.fit_steps:
        print("\n| variant, optimizer | fit s/step, verbose=0 (median of 2) | fit s/step, "
              "verbose=2 | ratio |")  # fmt: skip
        print("| --- | ---: | ---: | ---: |")
        for label, cfg in runs:
            r = fit_seconds(features, cfg, args.fit_steps)
            print(f"| {label} | {r[0]:.4f} | {r[2]:.4f} | {r[2] / r[0]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
