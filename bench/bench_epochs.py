"""Per-epoch Recall@100 on the eval period and on the validation queries, cold or warm-started.

Early stopping selects epochs on the validation queries (users' latest interactions inside the
train window); the gate measures the eval period. This prints both after every epoch of
`model.fit` on the product's model and data, so one can see whether they agree:

    cold   the default model from scratch
    warm   initialised from a previous model directory (`tfrs_models.warm_start`, fresh
           optimizer state), as a scheduled retrain does

    python bench/bench_epochs.py --features RUN/features --epochs 4
    python bench/bench_epochs.py --features RUN/features --warm-from PREVIOUS/model --epochs 3
    python bench/bench_epochs.py --features RUN/features --epochs 2 --checks-per-epoch 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402

from pipelines.config import TrainConfig  # noqa: E402
from tfrs_models.data import FeatureSet, train_dataset  # noqa: E402
from tfrs_models.quick_eval import QuickEval  # noqa: E402
from tfrs_models.train import build_model  # noqa: E402
from tfrs_models.warm_start import warm_start  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--warm-from", help="a previous model directory (default: cold)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--eval-queries", type=int, default=10_000)
    parser.add_argument("--learning-rate", type=float, help="default: the train config's")
    parser.add_argument(
        "--checks-per-epoch", type=int, default=1,
        help="report this many times per pass over the train examples (sub-epoch curve)",
    )  # fmt: skip
    args = parser.parse_args()
    features = FeatureSet.load(args.features)
    cfg = TrainConfig()
    if args.learning_rate:
        cfg = cfg.model_copy(update={"learning_rate": args.learning_rate})
    evaluation = QuickEval(features, args.eval_queries, seed=0, split="eval")
    validation = QuickEval(features, cfg.eval_sample, seed=cfg.seed, split="valid")
    model = build_model(features, cfg)
    mode = "cold"
    if args.warm_from:
        mode = "warm"
        previous = json.loads((Path(args.warm_from) / "train_manifest.json").read_text())
        stats = warm_start(
            model, Path(features.directory) / "vocab", features.oov_buckets, args.warm_from,
            previous["oov_buckets"],
        )  # fmt: skip
        print(f"warm start: {stats}", flush=True)

    checks = args.checks_per_epoch

    def report(check: int, loss: str = "") -> None:
        epoch = f"{check / checks:.2f}" if checks > 1 else str(check)
        print(f"| {mode} | {epoch} | {evaluation.model_recall(model, 100):.4f} | "
              f"{validation.model_recall(model, 100):.4f} | {loss} |", flush=True)  # fmt: skip

    class Curve(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            report(epoch + 1, f"{logs['loss']:.0f}")

    print(f"\n| run | epoch | eval R@100 ({len(evaluation):,} queries) | validation R@100 "
          f"({len(validation):,}) | loss |\n| --- | ---: | ---: | ---: | ---: |")  # fmt: skip
    report(0)
    model.fit(
        train_dataset(features, cfg).repeat(), epochs=args.epochs * checks,
        steps_per_epoch=features.records("train") // cfg.batch_size // checks, verbose=0,
        callbacks=[Curve()],
    )  # fmt: skip


if __name__ == "__main__":
    main()
