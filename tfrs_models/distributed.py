"""`train.distribution`: training under a `tf.distribute` strategy, and a worker entry point.

- `none`: no strategy (the default strategy; the same graph, data and weights as without this
  module).
- `mirrored`: `MirroredStrategy` over this process's devices (GPUs; on a CPU-only host it is
  one replica on the CPU).
- `multi_worker`: `MultiWorkerMirroredStrategy`, synchronous data parallelism across processes
  (one per worker) that find each other through `TF_CONFIG`, over gRPC. Start the same training
  on every worker (`python -m tfrs_models.distributed ...` below) with its own `TF_CONFIG`;
  the strategy must be created before any other TensorFlow op runs in the process.

Batches: `train.batch_size` is the batch of ONE replica, so each replica's in-batch softmax has
the same `batch_size - 1` negatives as single-process training; its negatives are only its own
batch (no cross-replica negatives). A step trains on the global batch, `batch_size x replicas`
examples, with the replicas' gradients summed (the loss is a sum over queries), so the
gradient of a step is that of the summed loss over the global batch.

Data: each input pipeline (one per worker) reads every train file in the same seeded order and
keeps every n-th record before parsing (`train_dataset(shard=...)`), i.e. tf.data's DATA
sharding done by hand ahead of the parse; the feature job writes `features.shards` files of
unequal size, possibly fewer than workers, so FILE sharding would give workers unequal step
counts, which stalls synchronous training at the end of an epoch. Every pipeline stops after
the same number of batches (`steps_per_epoch`): an epoch drops at most one global batch worth
of records per worker more than single-process training does.

Writes: only the chief (task `chief`, else `worker` 0) writes checkpoints, logs, the export and
the manifest into `model_dir`. The other workers run the same callbacks (saving can involve
collective ops, as TF's multi-worker guide says) into a scratch directory that is deleted at
the end; they resume from the chief's checkpoints, so `model_dir` must be a path every worker
can read (shared storage).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from pipelines.config import TrainConfig  # noqa: E402
from pipelines.errors import PipelineError  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Replicas:
    """The strategy training runs under and this process's part in it.

    Attributes:
        distribution: `train.distribution`.
        strategy: the `tf.distribute` strategy, or None for `none`.
        replicas: replicas in sync (the global batch is `batch_size` times this).
        workers: processes taking part (input pipelines).
        is_chief: this process writes the checkpoints, logs, export and manifest.
        task: "worker 0 of 2" (for log lines).
    """

    distribution: str
    strategy: tf.distribute.Strategy | None
    replicas: int = 1
    workers: int = 1
    is_chief: bool = True
    task: str = "single process"

    def scope(self):
        """`strategy.scope()` (None: a no-op context): build the model and optimizer in it."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def global_batch(self, cfg: TrainConfig) -> int:
        return cfg.batch_size * self.replicas


def make_replicas(distribution: str) -> Replicas:
    """Create the strategy of `train.distribution` (call it before any other TF op).

    Raises:
        PipelineError: `multi_worker` without `TF_CONFIG`, or after TensorFlow has already run
            ops in this process (collective ops are configured at program startup).
    """
    if distribution == "none":
        return Replicas("none", None)
    if distribution == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        n = strategy.num_replicas_in_sync
        return Replicas("mirrored", strategy, n, task=f"one process, {n} local replica(s)")
    if distribution != "multi_worker":
        raise ValueError(
            f"train.distribution must be none, mirrored or multi_worker: {distribution!r}"
        )
    if not os.environ.get("TF_CONFIG"):
        raise PipelineError(
            "train.distribution multi_worker needs TF_CONFIG in the environment of every worker "
            '(e.g. {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": '
            '"worker", "index": 0}}); set it, or use train.distribution none/mirrored'
        )
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        raise PipelineError(
            f"train.distribution multi_worker: {error}. Start training in a fresh process "
            "(python -m tfrs_models.distributed ...): the strategy must exist before any other "
            "TensorFlow op runs"
        ) from error
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec()
    kind, index = resolver.task_type, int(resolver.task_id)
    chiefs = spec.num_tasks("chief") if "chief" in spec.jobs else 0
    workers = chiefs + spec.num_tasks("worker")
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and not chiefs)
    return Replicas(
        "multi_worker", strategy, strategy.num_replicas_in_sync, workers, is_chief,
        f"{kind} {index} of {workers}{' (chief)' if is_chief else ''}",
    )  # fmt: skip


def steps_per_epoch(examples: int, cfg: TrainConfig, replicas: Replicas) -> int:
    """Global steps of an epoch every input pipeline can feed: each pipeline holds at least
    `examples // workers` records, and feeds its replicas one `batch_size` batch each per step.

    Raises:
        PipelineError: fewer examples than one global batch.
    """
    per_worker_replicas = replicas.replicas // replicas.workers
    steps = (examples // replicas.workers) // (cfg.batch_size * per_worker_replicas)
    if steps < 1:
        raise PipelineError(
            f"{examples:,} train examples are fewer than one global batch (train.batch_size "
            f"{cfg.batch_size:,} x {replicas.replicas} replicas): lower train.batch_size to at "
            f"most {examples // replicas.replicas:,}"
        )
    return steps


def distributed_train_dataset(
    make_dataset: Callable[..., tf.data.Dataset],
    examples: int,
    cfg: TrainConfig,
    replicas: Replicas,
    checks: int = 1,
) -> tuple[object, int | None]:
    """The train batches for `model.fit` under `replicas` (unchanged for `none`).

    Args:
        make_dataset: `functools.partial(train_dataset, features, cfg, splits=...)`; called
            with `shard=(pipelines, index)` and `batches=...` for each input pipeline.
        examples: train-format records the epoch reads (`kept_examples`).
        checks: Keras epochs per pass over the examples (validation checks, see
            `tfrs_models.train.checks_per_epoch`): each is `steps // checks` steps of a
            dataset that repeats, so a check may straddle two passes.

    Returns:
        `(dataset, steps)` for `fit(dataset, steps_per_epoch=steps)`: the `tf.data.Dataset`
        and None (`none`, one check per pass), else a dataset of batches of `cfg.batch_size`
        (per replica under a strategy), repeated, and the global steps of one check.
    """
    if replicas.strategy is None and checks == 1:
        return make_dataset(), None
    steps = steps_per_epoch(examples, cfg, replicas)
    per_check = max(1, steps // checks)
    if replicas.strategy is None:
        return make_dataset(batches=steps), per_check

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        shard = None
        if context.num_input_pipelines > 1:
            shard = (context.num_input_pipelines, context.input_pipeline_id)
        return make_dataset(shard=shard, batches=steps * local)

    return replicas.strategy.distribute_datasets_from_function(pipeline), per_check


def chief_value(replicas: Replicas) -> Callable[[float], float] | None:
    """For `multi_worker`: a function every worker calls with its value (once each, in the same
    order) that returns the chief's value on all of them, so decisions taken on it (early
    stopping, best epoch) agree across workers even when their float arithmetic differs in
    the last bits. None otherwise (one process decides alone)."""
    if replicas.distribution != "multi_worker":
        return None
    strategy = replicas.strategy

    @tf.function
    def broadcast(value: tf.Tensor) -> tf.Tensor:
        def replica_fn(v):
            context = tf.distribute.get_replica_context()
            first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), v.dtype)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, v * first)

        return strategy.run(replica_fn, args=(value,))

    def agree(value: float) -> float:
        result = broadcast(tf.constant(value, tf.float64))
        return float(strategy.experimental_local_results(result)[0].numpy())

    return agree


def scratch_dir(model_dir: Path) -> Path:
    """A non-chief worker's write directory: `<tmp>/two-tower-worker-*/<model_dir name>`."""
    return Path(tempfile.mkdtemp(prefix="two-tower-worker-")) / model_dir.name


def seed_scratch_checkpoints(
    chief_checkpoints: Path, own_checkpoints: Path, resumable: Callable[[Path], bool]
) -> None:
    """Copy the chief's checkpoints into a non-chief's scratch directory when the chief will
    resume from them, so all workers restore the same epoch (and the same best weights).

    A stale checkpoint directory is being emptied by the chief meanwhile: then no copy is made,
    or a half copy is dropped, and both start fresh.
    """
    if not resumable(chief_checkpoints):
        return
    try:
        shutil.copytree(chief_checkpoints, own_checkpoints)
    except (OSError, shutil.Error):
        shutil.rmtree(own_checkpoints, ignore_errors=True)


def local_cluster(workers: int) -> list[str]:
    """TF_CONFIG values of a `workers`-process cluster on 127.0.0.1 (free ports, task i = i).

    The ports are free when chosen and bound by the workers moments later; another process
    could take one in between (then a worker fails to start, and a retry picks new ports).
    """
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})
        for i in range(workers)
    ]


def start_local_workers(
    features_dir: str | Path,
    model_dir: str | Path,
    cfg: TrainConfig,
    workers: int,
    *,
    cpus: list[str] | None = None,
    threads: int | None = None,
    log_dir: str | Path | None = None,
    env: dict[str, str] | None = None,
    warm_start_from: str | Path | None = None,
    final_dir: str | Path | None = None,
    resume: bool = True,
) -> list[subprocess.Popen]:
    """Start `workers` training processes of one multi-worker cluster on this host.

    Args:
        cfg: the training config (`distribution` is set to `multi_worker` when workers > 1).
        warm_start_from / final_dir / resume: `train_model`'s, passed to every worker.
        cpus: per worker, a `taskset -c` CPU list pinning it (e.g. ["0", "1"]); None: no pinning.
        threads: TF intra- and inter-op threads per worker (TF_NUM_INTRAOP_THREADS /
            TF_NUM_INTEROP_THREADS); None: TensorFlow's default (one per core it may use).
        log_dir: each worker's output goes to `<log_dir>/worker-<i>.log` (None: inherited).
        env: extra environment variables for every worker.

    Returns:
        The started processes, task 0 (the chief) first; the caller waits for them.
    """
    if workers > 1:
        cfg = cfg.model_copy(update={"distribution": "multi_worker"})
    configs = local_cluster(workers)
    processes = []
    for index, tf_config in enumerate(configs):
        command = [sys.executable, "-m", "tfrs_models.distributed", str(features_dir)]
        command += [str(model_dir), "--config", cfg.model_dump_json()]
        if warm_start_from is not None:
            command += ["--warm-start", str(warm_start_from)]
        if final_dir is not None:
            command += ["--final-dir", str(final_dir)]
        if not resume:
            command.append("--no-resume")
        if cpus is not None:
            command = ["taskset", "-c", cpus[index], *command]
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config}
        if workers == 1:
            worker_env.pop("TF_CONFIG")
        if threads is not None:
            worker_env["TF_NUM_INTRAOP_THREADS"] = worker_env["TF_NUM_INTEROP_THREADS"] = str(
                threads
            )
        out = None
        if log_dir is not None:
            out = open(Path(log_dir) / f"worker-{index}.log", "wb")  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                command, env=worker_env, stdout=out, stderr=subprocess.STDOUT if out else None
            )
        )
        if out is not None:
            out.close()  # the child holds its own descriptor
    return processes


def train_on_local_workers(
    features_dir: str | Path,
    model_dir: str | Path,
    cfg: TrainConfig,
    *,
    warm_start_from: str | Path | None = None,
    final_dir: str | Path | None = None,
    resume: bool = True,
    poll_seconds: float = 1.0,
):
    """`train_model` run by `cfg.workers` multi_worker processes on this host (`train.workers`).

    Each worker gets `cores / workers` TensorFlow threads (at least 1) and writes its output to
    `<model_dir>_workers/worker-<i>.log`. When a worker fails, the others (which would wait on
    it forever in a collective) are killed; so are all of them when this process is interrupted.

    Returns:
        The chief's `TrainResult`, read back from its manifests (`model` is None: the weights
        are in the export).

    Raises:
        PipelineError: a worker exited non-zero; the message names it, its log and its last
            lines.
    """
    from tfrs_models.train import TrainResult, final_dir_for

    model_dir = Path(model_dir)
    final_dir = Path(final_dir) if final_dir is not None else final_dir_for(model_dir)
    log_dir = model_dir.with_name(f"{model_dir.name}_workers")
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, len(os.sched_getaffinity(0)) // cfg.workers)
    log.info(
        "training with %d local worker processes (%d TensorFlow threads each); logs in %s",
        cfg.workers, threads, log_dir,
    )  # fmt: skip
    processes = start_local_workers(
        features_dir, model_dir, cfg, cfg.workers, threads=threads, log_dir=log_dir,
        warm_start_from=warm_start_from, final_dir=final_dir, resume=resume,
    )  # fmt: skip
    failed = None  # the first worker seen failing: the cause (the others lose their peer)
    try:
        while failed is None and any(p.poll() is None for p in processes):
            time.sleep(poll_seconds)
            failed = next((i for i, p in enumerate(processes) if p.poll() not in (None, 0)), None)
        if failed is None:
            failed = next((i for i, p in enumerate(processes) if p.returncode != 0), None)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    if failed is not None:
        path = log_dir / f"worker-{failed}.log"
        tail = path.read_text(errors="replace").splitlines()[-15:]
        raise PipelineError(
            f"training worker {failed} of {cfg.workers} exited with code "
            f"{processes[failed].returncode} (log {path}); its last lines:\n" + "\n".join(tail)
        )
    manifest = json.loads((model_dir / "train_manifest.json").read_text())
    final_manifest = None
    if cfg.final_fit:
        final_manifest = json.loads((final_dir / "train_manifest.json").read_text())
    return TrainResult(
        model_dir=str(model_dir), manifest=manifest, model=None,
        final_dir=str(final_dir) if cfg.final_fit else None, final_manifest=final_manifest,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """One training process: `python -m tfrs_models.distributed FEATURES MODEL_DIR --config JSON`.

    Start it on every worker with that worker's `TF_CONFIG` (and the same arguments); with
    `train.distribution` `none` or `mirrored` it is plain single-process training.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("features_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--warm-start", help="a model directory to initialise from")
    parser.add_argument("--final-dir", help="where the final fit exports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from tfrs_models.train import train_model

    cfg = TrainConfig(**json.loads(args.config))
    result = train_model(
        args.features_dir, args.model_dir, cfg, resume=not args.no_resume, progress=False,
        warm_start_from=args.warm_start, final_dir=args.final_dir,
    )  # fmt: skip
    print(json.dumps({"model_dir": result.model_dir, **result.manifest["distribution"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
