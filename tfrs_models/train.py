"""Training: tf.data from TFRecords -> TwoTowerModel.fit with checkpoints, quick eval, export.

- a checkpoint (model + optimizer + epoch) after every epoch: a killed run resumes where it
  stopped;
- exact Recall@K on a sample of the *validation* queries (carved from the training window by the
  feature job) after every epoch, logged to TensorBoard, with early stopping on it and the best
  epoch's weights kept; nothing in training reads the eval split, so the evaluation step scores
  a model that never saw it. Features without validation queries (older runs) train every
  epoch and keep the last weights;
- optional warm start from a previous model directory;
- export of the query tower (SavedModel), catalog item embeddings and weights;
- `train_manifest.json` with the config, curves, throughput, and validation recall vs
  popularity.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from pipelines.config import TrainConfig  # noqa: E402
from tfrs_models.data import FeatureSet, train_dataset  # noqa: E402
from tfrs_models.export import export_model  # noqa: E402
from tfrs_models.model import TwoTowerModel  # noqa: E402
from tfrs_models.quick_eval import QuickEval  # noqa: E402
from tfrs_models.warm_start import warm_start  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    manifest: dict
    model: object


def make_optimizer(cfg: TrainConfig) -> tf.keras.optimizers.Optimizer:
    return {
        "adam": tf.keras.optimizers.Adam,
        "adagrad": tf.keras.optimizers.Adagrad,
        "sgd": tf.keras.optimizers.SGD,
    }[cfg.optimizer](learning_rate=cfg.learning_rate)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves model + optimizer + the finished epoch count after every epoch."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self.manager, self.epoch = manager, epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


class ValidationCallback(tf.keras.callbacks.Callback):
    """Validation Recall@K after each epoch; early stopping on it; keeps the best weights.

    Without validation queries it only records the loss curve: no early stopping, and the last
    epoch's weights stay (never a fallback to the eval split).
    """

    def __init__(self, validation: QuickEval | None, k: int, patience: int, log_dir: Path):
        super().__init__()
        self.validation, self.k, self.patience = validation, k, patience
        self.writer = tf.summary.create_file_writer(str(log_dir / "validation"))
        self.best, self.best_epoch, self.best_weights, self.curve = -1.0, None, None, []

    def on_epoch_end(self, epoch, logs=None):
        point = {"epoch": epoch + 1, "loss": (logs or {}).get("loss")}
        self.curve.append(point)
        if self.validation is None:
            self.best_epoch = epoch + 1
            return
        recall = self.validation.model_recall(self.model, self.k)
        point[f"validation_recall@{self.k}"] = recall
        with self.writer.as_default():
            tf.summary.scalar(f"validation_recall@{self.k}", recall, step=epoch + 1)
        log.info(
            "epoch %d: validation Recall@%d = %.4f (%d validation queries)",
            epoch + 1, self.k, recall, len(self.validation),
        )  # fmt: skip
        if recall > self.best:
            self.best, self.best_epoch = recall, epoch + 1
            self.best_weights = self.model.get_weights()
        elif self.patience and epoch + 1 - self.best_epoch >= self.patience:
            log.info(
                "early stopping: no validation gain for %d epochs (best epoch %d)",
                self.patience, self.best_epoch,
            )  # fmt: skip
            self.model.stop_training = True


class Throughput(tf.keras.callbacks.Callback):
    """Training examples per second, measured over the train batches only."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.examples, self.seconds = batch_size, 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds += time.perf_counter() - self._start
        self.examples += self.batch_size

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def validation_queries(features: FeatureSet, limit: int | None, seed: int) -> QuickEval | None:
    """The validation queries training selects on, or None (with a warning) when the features
    have none: training then runs every epoch. Never the eval split."""
    if features.has_queries("valid"):
        return QuickEval(features, limit, seed=seed, split="valid")
    log.warning(
        "%s has no validation queries (features from before the validation split, or none "
        "eligible): no early stopping, every epoch runs and the last weights are kept",
        features.directory,
    )
    return None


def trained_until(features_manifest: dict) -> str:
    """The latest moment the training examples may reach (ISO, exclusive).

    Temporal split: eval_start. Holdout: per-user cuts run up to window_end, so a model trained
    on these features has seen interactions after `eval_start` (the earliest held-out moment).
    """
    window = features_manifest["window"]
    holdout = features_manifest.get("split", {}).get("design") == "holdout"
    return window["window_end"] if holdout else window["eval_start"]


def build_model(features: FeatureSet, cfg: TrainConfig) -> TwoTowerModel:
    """A compiled model whose variables exist (built on one small batch)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    model = TwoTowerModel(features, cfg)
    model.compile(optimizer=make_optimizer(cfg))
    probe = next(
        iter(train_dataset(features, cfg.model_copy(update={"batch_size": 2}), shuffle=False))
    )
    model.query_tower(probe)
    model.item_tower(probe["item_id"])
    return model


def train_model(
    features_dir: str | Path,
    model_dir: str | Path,
    cfg: TrainConfig,
    *,
    warm_start_from: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
) -> TrainResult:
    """Train, evaluate and export a two-tower model.

    Args:
        features_dir: the feature job's output directory.
        model_dir: where checkpoints, TensorBoard logs and the export go.
        cfg: training config.
        warm_start_from: a previous model directory to initialise from (ignored when resuming).
        resume: continue from the latest checkpoint in `model_dir` if there is one.
        progress: show a progress bar (default: when stderr is a terminal).

    Returns:
        `TrainResult` with the training manifest (also written to `train_manifest.json`).
    """
    features = FeatureSet.load(features_dir)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(features, cfg)

    epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, str(model_dir / "checkpoints"), max_to_keep=2)
    warm = None
    if resume and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resuming from %s (epoch %d done)", manager.latest_checkpoint, int(epoch.numpy()))
    elif warm_start_from is not None:
        previous = json.loads((Path(warm_start_from) / "train_manifest.json").read_text())
        warm = warm_start(
            model,
            Path(features.directory) / "vocab",
            features.oov_buckets,
            warm_start_from,
            previous["oov_buckets"],
        )

    validation = validation_queries(features, cfg.eval_sample, cfg.seed)
    valid_cb = ValidationCallback(
        validation, cfg.eval_k, cfg.early_stopping_patience, model_dir / "logs"
    )
    speed = Throughput(cfg.batch_size)
    callbacks = [
        speed, valid_cb, EpochCheckpoint(manager, epoch),
        tf.keras.callbacks.TensorBoard(str(model_dir / "logs"), update_freq="epoch", profile_batch=0),
    ]  # fmt: skip
    interactive = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    initial_epoch = int(epoch.numpy())
    history = model.fit(
        train_dataset(features, cfg), epochs=cfg.epochs, initial_epoch=initial_epoch,
        callbacks=callbacks, verbose=1 if interactive else 2,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if valid_cb.best_weights is not None:
        model.set_weights(valid_cb.best_weights)

    full = validation_queries(features, None, cfg.seed)
    k = cfg.eval_k
    found = full is not None
    scores = {
        "validation_queries": len(full) if found else 0,
        f"validation_recall@{k}": full.model_recall(model, k) if found else None,
        f"validation_popularity_recall@{k}": full.popularity_recall(k) if found else None,
    }
    manifest = {
        "features_dir": str(features.directory),
        "features_window": features.manifest["window"],
        "trained_until": trained_until(features.manifest),
        "config": cfg.model_dump(),
        "oov_buckets": features.oov_buckets,
        "user_features": features.user_features,
        "epochs_run": initial_epoch + len(history.history.get("loss", [])),
        "resumed_from_epoch": initial_epoch,
        "best_epoch": valid_cb.best_epoch,
        "selected_on": "valid" if found else None,
        "curve": valid_cb.curve,
        "warm_start": {"from": str(warm_start_from), **warm} if warm else None,
        "train_seconds": seconds,
        "train_examples_per_second": speed.examples_per_second,
        **scores,
        # Deprecated aliases of the validation numbers, for readers not yet moved to the
        # validation_* keys (pipelines/run.py, pipelines/cli.py). They are NOT eval-period
        # numbers: the evaluation step is the only place the eval split is scored.
        "eval_queries": scores["validation_queries"],
        f"recall@{k}": scores[f"validation_recall@{k}"],
        f"popularity_recall@{k}": scores[f"validation_popularity_recall@{k}"],
        "export": export_model(model, features, model_dir),
    }
    (model_dir / "train_manifest.json").write_text(
        json.dumps(manifest, indent=2, default=str) + "\n"
    )
    return TrainResult(str(model_dir), manifest, model)
