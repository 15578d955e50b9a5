"""Training: tf.data from TFRecords -> TwoTowerModel.fit with checkpoints, quick eval, export.

- a checkpoint (model + optimizer + epoch) after every epoch: a killed run resumes where it
  stopped, but only when its inputs are the same (`checkpoint_inputs`: the features manifest's
  hash, the vocabulary sizes, the training config, the warm-start source); otherwise the stale
  checkpoints are deleted and training starts fresh, with a log line saying why;
- exact Recall@K on a sample of the *validation* queries (carved from the training window by the
  feature job) after every epoch, logged to TensorBoard, with early stopping on it and the best
  epoch's weights kept; an epoch longer than `train.validation_every_examples` is cut into
  equal *checks* (Keras epochs of part of a pass), each validated, checkpointed and counted
  by the patience as an epoch is; nothing in training reads the eval split, so the evaluation step scores
  a model that never saw it. Features without validation queries (older runs) train every
  epoch and keep the last weights;
- optional warm start from a previous model directory;
- export of the query tower (SavedModel), catalog item embeddings and weights;
- `train_manifest.json` with the config, curves, throughput, and validation recall vs
  popularity;
- `train.distribution` (`tfrs_models.distributed`): none, MirroredStrategy, or
  MultiWorkerMirroredStrategy across processes from TF_CONFIG; `batch_size` is per replica,
  the chief alone writes this directory, the other workers a scratch directory;
- optionally (`train.final_fit`) a final fit after the export: the selected weights, with their
  optimizer state, train on the train and held-out examples (the validation and eval
  interactions, every user's most recent data) and are exported to a sibling directory
  (`<model_dir>_final`, i.e. `<run>/model_final`). `model_dir` stays the selected model, the
  one evaluation can measure honestly; the final model is what ships.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipelines.config import TrainConfig  # noqa: E402
from pipelines.errors import PipelineError  # noqa: E402
from pipelines.layout import ModelLayout, features_manifest  # noqa: E402
from tfrs_models.data import EXAMPLE_SPLITS, FeatureSet, kept_examples, train_dataset  # noqa: E402
from tfrs_models.distributed import (  # noqa: E402
    Replicas,
    chief_value,
    distributed_train_dataset,
    make_replicas,
    scratch_dir,
    seed_scratch_checkpoints,
)
from tfrs_models.export import export_model  # noqa: E402
from tfrs_models.lineage import trained_until, write_model_cuts  # noqa: E402
from tfrs_models.model import TwoTowerModel  # noqa: E402
from tfrs_models.optimizers import CatchUpAdam, CatchUpFlush, LazyAdam  # noqa: E402
from tfrs_models.quick_eval import QuickEval  # noqa: E402
from tfrs_models.warm_start import warm_start  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What `train_model` produced.

    Attributes:
        model_dir: the selected model's export.
        manifest: its `train_manifest.json`.
        model: the in-memory model (holding the final fit's weights when there was one).
        final_dir: the final fit's export, or None without `train.final_fit`.
        final_manifest: its `train_manifest.json`, or None.
    """

    model_dir: str
    manifest: dict
    model: object
    final_dir: str | None = None
    final_manifest: dict | None = None


# TrainConfig fields a resumed run may change: how long it runs and how it selects, never what
# the weights are or what an epoch trains on. Every other field (new ones included) must match.
# `distribution` and `workers` too: a checkpoint holds the same variables under any strategy (TF
# restores it under another one), so a retry on fewer or more workers continues from it (with a
# different global batch; across hosts the worker count is in TF_CONFIG, not in the config).
RESUMABLE_FIELDS = frozenset(
    {
        "epochs", "early_stopping_patience", "early_stopping_min_delta",
        "early_stopping_warmup_examples", "eval_k", "eval_sample",
        "final_fit", "final_fit_epochs", "distribution", "workers",
    }
)  # fmt: skip
INPUTS_FILE = "inputs.json"  # in the checkpoint directory: what its checkpoints trained on
# What the checkpointed selection state means; checkpoints of another format are not resumed.
# 2: best_epoch -1 = none selected yet, 0 = the warm-start weights (1: 0 = none).
CHECKPOINT_FORMAT = 2


def checkpoint_inputs(
    features: FeatureSet, cfg: TrainConfig, warm_start_from: str | Path | None
) -> dict:
    """What checkpoints made now would be trained from; a resume needs the same.

    Returns:
        JSON-ready `{checkpoint_format, features_manifest_sha256, vocabulary_sizes,
        oov_buckets, user_features, optimizer, config, warm_start_from}`: the sha256 of the
        features' `manifest.json` bytes (it holds every output file's sha256, the window and
        the feature config), the sizes that shape the embedding tables, the optimizer
        `train.optimizer` resolves to, the training config without `RESUMABLE_FIELDS`, and
        the resolved warm-start directory (None without one).
    """
    manifest = features_manifest(features.directory).read_bytes()
    inputs = {
        "checkpoint_format": CHECKPOINT_FORMAT,
        "features_manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "vocabulary_sizes": {name: len(values) for name, values in features.vocab.items()},
        "oov_buckets": features.oov_buckets,
        "user_features": features.user_features,
        # `auto` resolves by `distribution`, which a resume may change: the optimizer's slots
        # (CatchUpAdam's per-row steps) must be the ones the checkpoint holds.
        "optimizer": resolved_optimizer(cfg),
        "config": {
            k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_FIELDS
        },
        "warm_start_from": None
        if warm_start_from is None
        else str(Path(warm_start_from).resolve()),
    }
    return json.loads(json.dumps(inputs))


def stale_reason(directory: Path, inputs: dict) -> str | None:
    """Why the checkpoints in `directory` must not be resumed with `inputs`, or None."""
    try:
        stored = json.loads((directory / INPUTS_FILE).read_text())
    except FileNotFoundError:
        return f"they record no inputs ({INPUTS_FILE} missing: made by an older version)"
    except (OSError, ValueError) as error:
        return f"their {INPUTS_FILE} is unreadable ({error})"
    changed = [key for key in inputs if key != "config" and stored.get(key) != inputs[key]]
    old_config = stored.get("config") or {}
    fields = sorted(
        k for k in {*old_config, *inputs["config"]} if old_config.get(k) != inputs["config"].get(k)
    )
    if fields:
        changed.append(f"train config ({', '.join(fields)})")
    return f"their inputs differ: {', '.join(changed)}" if changed else None


def prepare_checkpoints(directory: Path, inputs: dict, resume: bool) -> bool:
    """Keep the checkpoints in `directory` when they may be resumed; else start it afresh.

    Args:
        directory: `<model_dir>/checkpoints`.
        inputs: `checkpoint_inputs` of this call.
        resume: False never resumes.

    Returns:
        True when the latest checkpoint in `directory` is to be restored. Otherwise the
        directory is emptied (stale checkpoints deleted, with a WARNING saying why, or an INFO
        line when `resume` is off) and holds only `inputs.json` with `inputs`.
    """
    latest = tf.train.latest_checkpoint(str(directory))
    if latest is not None:
        if not resume:
            log.info("not resuming from %s: resume is off; starting fresh", latest)
        else:
            reason = stale_reason(directory, inputs)
            if reason is None:
                return True
            log.warning("not resuming from %s: %s; starting fresh", latest, reason)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    partial = directory / f".{INPUTS_FILE}.partial"
    partial.write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    partial.replace(directory / INPUTS_FILE)  # a kill leaves no half-written record
    return False


def resolved_optimizer(cfg: TrainConfig) -> str:
    """`train.optimizer` with `auto` resolved: catch_up_adam in one process, adam under a
    strategy, where `CatchUpAdam` cannot pay a row's skipped steps before the forward pass."""
    if cfg.optimizer != "auto":
        return cfg.optimizer
    return "catch_up_adam" if cfg.distribution == "none" else "adam"


def make_optimizer(cfg: TrainConfig) -> tf.keras.optimizers.Optimizer:
    if cfg.optimizer == "catch_up_adam" and cfg.distribution != "none":
        log.warning(
            "train.optimizer catch_up_adam under distribution %s pays each row's skipped steps "
            "after the forward pass that reads it (a stale gradient for rare rows: Recall@100 "
            "0.402 against Adam's 0.457 on ML-100K); optimizer auto picks adam there",
            cfg.distribution,
        )
    return {
        "adam": tf.keras.optimizers.Adam,
        "catch_up_adam": CatchUpAdam,
        "lazy_adam": LazyAdam,
        "adagrad": tf.keras.optimizers.Adagrad,
        "sgd": tf.keras.optimizers.SGD,
    }[resolved_optimizer(cfg)](learning_rate=cfg.learning_rate)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Saves model + optimizer + the finished epoch count (+ the selection state) after every
    epoch; then prunes best-weights files the saved state no longer names."""

    def __init__(
        self, manager: tf.train.CheckpointManager, epoch: tf.Variable, selection: ValidationCallback
    ):
        super().__init__()
        self.manager, self.epoch, self.selection = manager, epoch, selection

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        self.selection.prune()


class ValidationCallback(tf.keras.callbacks.Callback):
    """Validation Recall@K after each epoch; early stopping on it; keeps the best weights.

    The selection state (best recall and epoch, as variables the epoch checkpoint saves) and
    the best weights (`<checkpoints>/best-<epoch>.npz`) survive a kill: a resumed run goes on
    selecting and early-stopping as if it had not stopped, and a run resumed after its last
    epoch still exports the best epoch's weights (and its final fit runs that many epochs).

    Without validation queries it only records the loss curve: no early stopping, and the last
    epoch's weights stay (never a fallback to the eval split).
    """

    def __init__(
        self,
        validation: QuickEval | None,
        k: int,
        patience: int,
        log_dir: Path,
        best_dir: Path,
        agree=None,
        min_delta: float = 0.0,
        checks: int = 1,
        warmup_checks: int = 0,
    ):
        """`agree`: None, or (multi-worker) a function of this worker's recall returning the
        chief's, which every decision then uses (`tfrs_models.distributed.chief_value`).
        `min_delta`: an epoch is better than the best so far only when its recall is higher
        by more than this (it is then selected, and patience counts from it).
        `checks`: Keras epochs per pass over the train examples (`checks_per_epoch`); the
        curve and the log then say which part of which pass each check ends.
        `warmup_checks`: early stopping cannot end training before this many checks (the
        module's `warmup_checks`); selection is unaffected."""
        super().__init__()
        self.validation, self.k, self.patience, self.best_dir = validation, k, patience, best_dir
        self.min_delta, self.checks, self.warmup_checks = min_delta, checks, warmup_checks
        self.agree = agree
        self.writer = tf.summary.create_file_writer(str(log_dir / "validation"))
        self.best_recall = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_recall")
        # -1: none yet; 0: the warm-start weights (`validate_start`).
        self.best = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.curve = []

    @property
    def best_epoch(self) -> int | None:
        best = int(self.best.numpy())
        return None if best < 0 else best

    def best_path(self, epoch: int) -> Path:
        return self.best_dir / f"best-{epoch}.npz"

    def validate_start(self, model: tf.keras.Model) -> None:
        """Score the weights training starts from (a warm start) as check 0: they are selected
        unless a check beats them by more than `min_delta`, and patience counts from them, so
        a warm run that only loses validation recall stops after `patience` checks and keeps
        what it started from. No-op without validation queries."""
        if self.validation is None:
            return
        self.set_model(model)
        self._select(-1, {})

    def on_epoch_end(self, epoch, logs=None):
        self._select(epoch, logs)

    def _select(self, epoch: int, logs: dict | None) -> None:
        """Validate the weights after Keras epoch `epoch` (-1: before the first); select them
        when they beat the best; stop training when patience has run out."""
        point = {"epoch": passes(epoch + 1, self.checks), "loss": (logs or {}).get("loss")}
        if self.checks > 1:
            point["check"] = epoch + 1
        self.curve.append(point)
        if self.validation is None:
            self.best.assign(epoch + 1)
            return
        recall = self.validation.model_recall(self.model, self.k)
        if self.agree is not None:
            recall = self.agree(recall)
        point[f"validation_recall@{self.k}"] = recall
        with self.writer.as_default():
            tf.summary.scalar(f"validation_recall@{self.k}", recall, step=epoch + 1)
        where = "warm-start weights (check 0)" if epoch < 0 else check_name(epoch, self.checks)
        log.info(
            "%s: validation Recall@%d = %.4f (%d validation queries)",
            where, self.k, recall, len(self.validation),
        )  # fmt: skip
        best = float(self.best_recall.numpy())
        if best < 0 or recall > best + self.min_delta:
            self.best_recall.assign(recall)
            self.best.assign(epoch + 1)
            partial = self.best_dir / f".best-{epoch + 1}.partial.npz"
            np.savez(partial, *self.model.get_weights())
            partial.replace(self.best_path(epoch + 1))
        elif self.patience and epoch + 1 - self.best_epoch >= self.patience:
            unit = "epochs" if self.checks == 1 else "checks"
            if epoch + 1 < self.warmup_checks:
                log.info(
                    "no validation gain for %d %s, but no early stopping before %s %d (warm-up: "
                    "early_stopping_warmup_examples)",
                    epoch + 1 - self.best_epoch, unit, unit[:-1], self.warmup_checks,
                )  # fmt: skip
                return
            log.info(
                "early stopping: no validation gain for %d %s (best: %s %d)",
                self.patience, unit, unit[:-1], self.best_epoch,
            )  # fmt: skip
            self.model.stop_training = True

    def prune(self) -> None:
        """Delete best-weights files of epochs other than the best one."""
        keep = self.best_path(self.best_epoch) if self.best_epoch is not None else None
        for path in self.best_dir.glob("best-*.npz"):
            if path != keep:
                path.unlink()

    def restore_best(self, model: tf.keras.Model) -> None:
        """Set the best epoch's weights on `model` (no-op without validation queries, when
        the last epoch's weights are the selected ones)."""
        if self.validation is not None and self.best_epoch is not None:
            with np.load(self.best_path(self.best_epoch)) as stored:
                model.set_weights([stored[f"arr_{n}"] for n in range(len(stored.files))])


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


class ProgressLog(tf.keras.callbacks.Callback):
    """Logs, at most every `interval` seconds, how far an epoch is: the step, examples/s over
    the last interval and the time the epoch has left; and a line per finished epoch with its
    loss. Used instead of Keras's own log without a terminal (Airflow, `run`), which prints one
    line per epoch, and an epoch on a 1M-item catalog takes half an hour.

    Args:
        steps: steps per Keras epoch (None: the count is not shown, nor the time left).
        batch: examples per (global) step.
        checks: Keras epochs per pass (`checks_per_epoch`): above one, each is named as the
            check it is ("check 3 (epoch 0.429)").
    """

    def __init__(
        self, steps: int | None, batch: int, interval: float = 60.0, label: str = "",
        checks: int = 1,
    ):  # fmt: skip
        super().__init__()
        self.steps, self.batch, self.interval, self.label = steps, batch, interval, label
        self.checks = checks

    def name(self, epoch: int) -> str:
        """What Keras epoch `epoch` (0-based) is called in the log."""
        return self.label + check_name(epoch, self.checks)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.last_step = epoch, 0
        self.last_time = self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        log.info(
            "%s done in %.0f s%s", self.name(epoch),
            time.perf_counter() - self.started, "" if loss is None else f", loss {loss:.4g}",
        )  # fmt: skip

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last_time < self.interval:
            return
        done = batch + 1
        rate = (done - self.last_step) / (now - self.last_time)
        where = f"step {done:,}"
        if self.steps:
            left = (self.steps - done) / rate / 60 if rate > 0 else float("inf")
            where += f" of {self.steps:,} ({done / self.steps:.0%}), ~{left:.0f} min left"
        log.info("%s: %s, %.0f examples/s", self.name(self.epoch), where, rate * self.batch)
        self.last_step, self.last_time = done, now


def progress_reporting(
    interactive: bool,
    steps: int | None,
    examples: int,
    cfg: TrainConfig,
    replicas: Replicas,
    label: str = "",
    checks: int = 1,
) -> tuple[list[tf.keras.callbacks.Callback], int]:
    """The progress callbacks and `fit`'s `verbose` for a training pass: Keras's bar in a
    terminal, else `ProgressLog` (steps per Keras epoch: `steps`, or one pass over `examples`;
    `checks` Keras epochs per pass)."""
    if interactive:
        return [], 1
    batch = replicas.global_batch(cfg)
    return [ProgressLog(steps or examples // batch, batch, label=label, checks=checks)], 0


# The validation recall the train manifest reports, on at most this many validation queries (a
# seeded subset; all of them when fewer): +-0.01 at 95% is enough for a number that only
# describes the selected epoch, and exact scoring costs about 10-20 ms per query at 1M items.
REPORTED_VALIDATION_QUERIES = 10_000


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


def final_dir_for(model_dir: str | Path) -> Path:
    """Where the final fit of `model_dir` exports: the sibling `<name>_final`."""
    model_dir = Path(model_dir)
    return model_dir.with_name(f"{model_dir.name}_final")


def checks_per_epoch(examples: int, cfg: TrainConfig, global_batch: int) -> int:
    """Validation checks per pass over `examples` train examples: one per epoch, or (an epoch
    longer than `cfg.validation_every_examples`) as many equal parts as keep each part at
    most that long, at most `cfg.max_checks_per_epoch`, and at least one step each."""
    if cfg.validation_every_examples is None:
        return 1
    checks = min(-(-examples // cfg.validation_every_examples), cfg.max_checks_per_epoch)
    return max(1, min(checks, examples // global_batch))


def warmup_checks(
    cfg: TrainConfig, examples_per_check: int, warm_start_from: str | Path | None
) -> int:
    """Checks before which early stopping may not end a run: enough to train on
    `cfg.early_stopping_warmup_examples`; 0 for a warm start, whose start weights are a
    trained model (scored as check 0, patience counting from them)."""
    if warm_start_from is not None or cfg.early_stopping_warmup_examples == 0:
        return 0
    return -(-cfg.early_stopping_warmup_examples // max(1, examples_per_check))


def passes(checks_done: int, checks: int) -> int | float:
    """`checks_done` checks of `checks` per epoch, in epochs (an int when checks is 1)."""
    return checks_done if checks == 1 else round(checks_done / checks, 3)


def check_name(epoch: int, checks: int) -> str:
    """What Keras epoch `epoch` (0-based) is called in logs: "epoch 3", or with `checks` per
    pass "check 3 (epoch 0.429)"."""
    if checks == 1:
        return f"epoch {epoch + 1}"
    return f"check {epoch + 1} (epoch {passes(epoch + 1, checks)})"


def final_fit_checks(
    cfg: TrainConfig, best_check: int | None, checks: int = 1, start_passes: float | None = None
) -> int:
    """Keras epochs of the final fit, each 1/`checks` of a pass over its examples: as many as
    the selected weights trained for in this run (`best_check`; at most `epochs` passes; all
    of them when none was selected), at least one, or `final_fit_epochs` whole passes.

    A warm run's selected weights also carry their start weights' training: the final fit is
    then at least as long as the one those called for (`start_passes`, in passes). A warm run
    that keeps its start weights (`best_check` 0) repeats the final fit that made the model it
    started from, on today's data: one check of it left the held-out (most recent)
    interactions under-trained, 9-13% below a cold run's Recall@100 on MovieLens latest-small.
    """
    if cfg.final_fit_epochs is not None:
        return cfg.final_fit_epochs * checks
    most = cfg.epochs * checks
    selected = most if best_check is None else best_check
    if start_passes:  # never shorter: passes are rounded to 3 decimals in manifests
        selected = max(selected, math.ceil(start_passes * checks - 0.01))
    return max(1, min(selected, most))


def final_fit_passes_of(model_dir: str | Path) -> float | None:
    """The final-fit length (passes) a trained model's weights call for: its manifest's
    `final_fit_passes`, else (older models) its selected pass."""
    manifest = json.loads(ModelLayout(model_dir).train_manifest.read_text())
    return manifest.get("final_fit_passes", manifest.get("best_epoch"))


def train_model(
    features_dir: str | Path,
    model_dir: str | Path,
    cfg: TrainConfig,
    *,
    warm_start_from: str | Path | None = None,
    resume: bool = True,
    progress: bool | None = None,
    final_dir: str | Path | None = None,
) -> TrainResult:
    """Train, evaluate and export a two-tower model; with `cfg.final_fit`, then the final fit.

    Args:
        features_dir: the feature job's output directory.
        model_dir: where checkpoints, TensorBoard logs and the export go.
        cfg: training config.
        warm_start_from: a previous model directory to initialise from (ignored when resuming).
        resume: continue from the latest checkpoint in `model_dir/checkpoints` when there is one
            made from the same inputs (`checkpoint_inputs`); checkpoints of other inputs are
            deleted and training starts fresh. False: always start fresh. (The final fit keeps
            no checkpoints: a retry runs it again from the selected weights.)
        progress: show a progress bar (default: when stderr is a terminal).
        final_dir: where the final fit exports (default `final_dir_for(model_dir)`); replaced
            as a whole.

    Returns:
        `TrainResult` with the training manifest (also written to `train_manifest.json`).

    Under `cfg.distribution` `multi_worker` every worker calls this with the same arguments
    (`tfrs_models.distributed`); only the chief writes `model_dir` (and `final_dir`), the
    others write a scratch directory they delete, and return the chief's `model_dir` with
    their own (identical-weights) model and manifest.

    Raises:
        PipelineError: `cfg.final_fit` on features without a heldout split, or fewer train
            examples than one (global) batch; `multi_worker` without TF_CONFIG.
    """
    replicas = make_replicas(cfg.distribution)  # first: collectives precede any other TF op
    features = FeatureSet.load(features_dir)
    examples = kept_examples(features, cfg)
    if examples < cfg.batch_size:
        # Batches drop their remainder (in-batch negatives need full batches): nothing to fit.
        kept = (
            "" if cfg.min_weight is None else f" with a weight >= train.min_weight {cfg.min_weight}"
        )
        raise PipelineError(
            f"{features.directory} has {examples:,} train examples{kept}, fewer than one batch "
            f"(train.batch_size {cfg.batch_size:,}): set train.batch_size to at most {examples:,}"
        )
    if cfg.min_weight is not None:
        log.info(
            "train.min_weight %s keeps %d of %d train examples",
            cfg.min_weight, examples, features.records("train"),
        )  # fmt: skip
    if cfg.final_fit and not features.has_split("heldout"):
        raise PipelineError(
            f"train.final_fit needs the heldout split, and {features.directory} has none "
            f"(features version {features.manifest.get('features_version')}, older than 3): "
            "rerun the feature step, or set train.final_fit=false"
        )
    model_dir = Path(model_dir)
    if replicas.is_chief:
        return _train_into(
            model_dir, features, examples, cfg, replicas, warm_start_from, resume, progress,
            Path(final_dir) if final_dir is not None else final_dir_for(model_dir),
        )  # fmt: skip
    own_dir = scratch_dir(model_dir)
    log.info("%s: writing to the scratch directory %s (deleted at the end)", replicas.task, own_dir)
    try:
        inputs = checkpoint_inputs(features, cfg, warm_start_from)
        seed_scratch_checkpoints(
            ModelLayout(model_dir).checkpoints,
            ModelLayout(own_dir).checkpoints,
            lambda chief: (
                resume
                and tf.train.latest_checkpoint(str(chief)) is not None
                and stale_reason(chief, inputs) is None
            ),
        )
        result = _train_into(
            own_dir, features, examples, cfg, replicas, warm_start_from, resume, progress,
            final_dir_for(own_dir),
        )  # fmt: skip
    finally:
        shutil.rmtree(own_dir.parent, ignore_errors=True)
    return dataclasses.replace(
        result,
        model_dir=str(model_dir),
        final_dir=None
        if result.final_dir is None
        else str(Path(final_dir) if final_dir is not None else final_dir_for(model_dir)),
    )


def _train_into(
    model_dir: Path,
    features: FeatureSet,
    examples: int,
    cfg: TrainConfig,
    replicas: Replicas,
    warm_start_from: str | Path | None,
    resume: bool,
    progress: bool | None,
    final_dir: Path,
) -> TrainResult:
    """`train_model`'s training, selection, export and final fit, written into `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with replicas.scope():
        model = build_model(features, cfg)

    validation = validation_queries(features, cfg.eval_sample, cfg.seed)
    batch = replicas.global_batch(cfg)
    checks = checks_per_epoch(examples, cfg, batch)
    train_data, steps = distributed_train_dataset(
        functools.partial(train_dataset, features, cfg), examples, cfg, replicas, checks
    )
    # Examples a check trains on; without `steps` a check is one pass of whole batches.
    per_check = (steps or examples // batch) * batch
    checkpoints = ModelLayout(model_dir).checkpoints
    valid_cb = ValidationCallback(
        validation,
        cfg.eval_k,
        cfg.early_stopping_patience,
        ModelLayout(model_dir).logs,
        checkpoints,
        agree=chief_value(replicas),
        min_delta=cfg.early_stopping_min_delta,
        checks=checks,
        warmup_checks=warmup_checks(cfg, per_check, warm_start_from),
    )
    epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=epoch,
        best_recall=valid_cb.best_recall, best_epoch=valid_cb.best,
    )  # fmt: skip
    inputs = checkpoint_inputs(features, cfg, warm_start_from)
    resuming = prepare_checkpoints(checkpoints, inputs, resume)
    manager = tf.train.CheckpointManager(checkpoint, str(checkpoints), max_to_keep=2)
    warm = None
    if resuming:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resuming from %s (epoch %d done)", manager.latest_checkpoint, int(epoch.numpy()))
    elif warm_start_from is not None:
        previous = json.loads(ModelLayout(warm_start_from).train_manifest.read_text())
        warm = warm_start(
            model,
            Path(features.directory) / "vocab",
            features.oov_buckets,
            warm_start_from,
            previous["oov_buckets"],
        )
        valid_cb.validate_start(model)

    speed = Throughput(batch)
    # CatchUpFlush first: validation and checkpoints read weights that owe no skipped steps.
    callbacks = [
        CatchUpFlush(), speed, valid_cb, EpochCheckpoint(manager, epoch, valid_cb),
        tf.keras.callbacks.TensorBoard(str(ModelLayout(model_dir).logs), update_freq="epoch", profile_batch=0),
    ]  # fmt: skip
    interactive = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    initial_epoch = int(epoch.numpy())
    if checks > 1:
        log.info(
            "validating every %d steps (%d examples): %d checks per epoch of %d examples",
            steps, per_check, checks, examples,
        )  # fmt: skip
    progress_log, verbose = progress_reporting(
        interactive, steps, examples, cfg, replicas, checks=checks
    )
    history = model.fit(
        train_data, epochs=cfg.epochs * checks, initial_epoch=initial_epoch, steps_per_epoch=steps,
        callbacks=callbacks + progress_log, verbose=verbose,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    checks_run = initial_epoch + len(history.history.get("loss", []))
    valid_cb.restore_best(model)

    full = validation_queries(features, REPORTED_VALIDATION_QUERIES, cfg.seed)
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
        "optimizer": resolved_optimizer(cfg),
        "oov_buckets": features.oov_buckets,
        "user_features": features.user_features,
        "weighting": {
            "mode": cfg.weighting,
            "min_weight": cfg.min_weight,
            "train_examples": examples,
            "train_examples_dropped": features.records("train") - examples,
        },
        "epochs_run": passes(checks_run, checks),
        "resumed_from_epoch": passes(initial_epoch, checks),
        "best_epoch": None if valid_cb.best_epoch is None else passes(valid_cb.best_epoch, checks),
        "validation_checks": {
            "per_epoch": checks,
            "steps_each": steps,
            "warmup": valid_cb.warmup_checks,
            "run": checks_run,
            "best": valid_cb.best_epoch,
        },
        "selected_on": "valid" if found else None,
        "final_fit_passes": passes(
            final_fit_checks(
                cfg,
                valid_cb.best_epoch,
                checks,
                final_fit_passes_of(warm_start_from) if warm_start_from is not None else None,
            ),
            checks,
        ),
        "curve": valid_cb.curve,
        "warm_start": {"from": str(warm_start_from), **warm} if warm else None,
        "train_seconds": seconds,
        "train_examples_per_second": speed.examples_per_second,
        "distribution": {
            "strategy": replicas.distribution,
            "replicas": replicas.replicas,
            "workers": replicas.workers,
            "global_batch": batch,
            "task": replicas.task,
        },
        **scores,
        "final_fit": None,  # these are the selected weights; see `<model_dir>_final`
        "export": export_model(model, features, model_dir),
    }
    write_model_cuts(model_dir, features.directory, features.manifest, warm_start_from)
    _write_manifest(model_dir, manifest)
    if not cfg.final_fit:
        return TrainResult(str(model_dir), manifest, model)
    final = run_final_fit(
        model, features, cfg, manifest, final_dir, interactive, model_dir, replicas
    )
    return TrainResult(str(model_dir), manifest, model, str(final_dir), final)


def run_final_fit(
    model: TwoTowerModel,
    features: FeatureSet,
    cfg: TrainConfig,
    selected: dict,
    final_dir: Path,
    interactive: bool,
    selected_dir: Path,
    replicas: Replicas | None = None,
) -> dict:
    """Continue training the selected weights on the train + held-out examples; export them.

    No early stopping and no selection: the validation interactions are training data here,
    so nothing is left to validate on. The optimizer keeps its state (no restart of Adam's
    moments).

    Args:
        model: holds the selected weights; compiled, with the optimizer state of its training.
        selected: the selected model's train manifest (its `final_fit_passes` set the length).
        final_dir: the export directory (replaced: an older export, index or serving state of
            it would be stale).
        selected_dir: the selected model's directory (recorded in the manifest).
        replicas: the strategy `model` was built under (None: no strategy).

    Returns:
        The final model's train manifest (also written to `<final_dir>/train_manifest.json`):
        the selected manifest with `trained_until` = the features' window_end, `final_fit`
        `{from_epoch, epochs, examples, trained_until, splits, early_stopping, curve,
        train_seconds, selected_dir}` and its own `export`.
    """
    checks = selected["validation_checks"]["per_epoch"]
    epochs = max(1, round(selected["final_fit_passes"] * checks))
    examples = kept_examples(features, cfg, EXAMPLE_SPLITS)
    log.info(
        "final fit: %s epochs from epoch %s on %d train + held-out examples -> %s",
        passes(epochs, checks), selected["best_epoch"], examples, final_dir,
    )  # fmt: skip
    if final_dir.exists():
        shutil.rmtree(final_dir)
    start = time.perf_counter()
    replicas = replicas or make_replicas("none")
    data, steps = distributed_train_dataset(
        functools.partial(train_dataset, features, cfg, splits=EXAMPLE_SPLITS),
        examples, cfg, replicas, checks,
    )  # fmt: skip
    progress_log, verbose = progress_reporting(
        interactive, steps, examples, cfg, replicas, label="final fit ", checks=checks
    )
    history = model.fit(
        data, epochs=epochs, steps_per_epoch=steps, verbose=verbose,
        callbacks=[CatchUpFlush(), *progress_log],  # CatchUpFlush: the export reads the weights
    )  # fmt: skip
    window_end = features.manifest["window"]["window_end"]
    manifest = {
        **selected,
        "trained_until": window_end,
        "final_fit": {
            "from_epoch": selected["best_epoch"],
            "epochs": passes(epochs, checks),
            "examples": examples,
            "trained_until": window_end,
            "splits": list(EXAMPLE_SPLITS),
            "early_stopping": "none: the validation interactions are training data in the final "
            "fit, nothing is left to validate on (the validation_* numbers are the selected "
            "weights')",
            "curve": [
                {"epoch": passes(n + 1, checks), "loss": loss}
                for n, loss in enumerate(history.history.get("loss", []))
            ],
            "train_seconds": time.perf_counter() - start,
            "selected_dir": str(selected_dir),
        },
        "export": export_model(model, features, final_dir),
    }
    _write_manifest(final_dir, manifest)
    return manifest


def _write_manifest(model_dir: Path, manifest: dict) -> None:
    ModelLayout(model_dir).train_manifest.write_text(
        json.dumps(manifest, indent=2, default=str) + "\n"
    )
