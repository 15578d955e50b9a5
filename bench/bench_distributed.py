"""Multi-worker training on one host: 2 workers x 1 core vs 1 worker x 2 cores.

On one feature run of a synthetic preset (default `small`), with the same config, epochs and
GLOBAL batch (the two workers' per-replica batch is half of it, so both take the same steps on
the same examples per step):

    1 worker x 2 cores   one process (`train.distribution: none`), pinned to CPUs 0,1
                         (taskset) with 2 TF intra/inter-op threads
    2 workers x 1 core   two processes (`multi_worker`, TF_CONFIG on 127.0.0.1), each pinned
                         to its own CPU with 1 TF intra/inter-op thread; gradients all-reduced
                         over gRPC every step
    (--one-core)         one process on CPU 0 alone: the scale-out efficiency reference

Each runs in fresh processes (`tfrs_models.distributed.start_local_workers`); reported: wall
seconds (process start to exit: imports, data, tracing, training, validation, export), the
chief's training examples/s (train batches only), its validation Recall@100 and popularity's,
and the ratios 2x1 / 1x2. On one machine the two workers share its memory bandwidth and
talk over loopback, so this measures the cost of the strategy, not a cluster's speed-up.

    python bench/bench_distributed.py --preset small --epochs 2
    python bench/bench_distributed.py --preset medium --epochs 1 --one-core
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workspace import synthetic_workspace  # noqa: E402

from pipelines.config import TrainConfig, load_config  # noqa: E402
from tfrs_models.distributed import start_local_workers  # noqa: E402


def features_of(work: Path, landing: Path) -> Path:
    """The preset's features (built once per work directory, single-process engine)."""
    from pipelines.layout import RunLayout
    from pipelines.steps.features import run_features

    run = RunLayout(work / "features_run")
    done = Path(run.features) / "manifest.json"
    if not done.exists():
        cfg = load_config(env={}, overrides={"data": {"source": str(landing)}})
        run_features(cfg, run, engine="local")
    return Path(run.features)


def run_setup(name, features: Path, work: Path, cfg: TrainConfig, workers, cpus, threads):
    """Train once in fresh processes; returns the row of the table."""
    model_dir = work / "models" / name.replace(" ", "_")
    logs = work / "logs" / name.replace(" ", "_")
    shutil.rmtree(model_dir, ignore_errors=True)  # a fresh run, not a resume of the last one
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    processes = start_local_workers(
        features, model_dir, cfg, workers, cpus=cpus, threads=threads, log_dir=logs,
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    codes = [p.wait() for p in processes]
    wall = time.perf_counter() - start
    if codes != [0] * workers:
        raise SystemExit(f"{name}: exit codes {codes}; see {logs}")
    manifest = json.loads((model_dir / "train_manifest.json").read_text())
    return {
        "setup": name,
        "global_batch": manifest["distribution"]["global_batch"],
        "wall_s": wall,
        "train_s": manifest["train_seconds"],
        "examples_per_s": manifest["train_examples_per_second"],
        "recall": manifest["validation_recall@100"],
        "popularity": manifest["validation_popularity_recall@100"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024, help="global batch")
    parser.add_argument("--train", default="{}", help="extra TrainConfig fields as JSON")
    parser.add_argument("--one-core", action="store_true", help="also 1 worker x 1 core")
    parser.add_argument("--work-dir", help="reuse a work directory (data, features)")
    args = parser.parse_args()

    work, landing = synthetic_workspace(args.work_dir, "bench-distributed-", args.preset)
    features = features_of(work, landing)
    cfg = TrainConfig(
        **{"final_fit": False, "eval_sample": 500, **json.loads(args.train)},
        epochs=args.epochs,
        early_stopping_patience=0,  # same epochs in every setup
        batch_size=args.batch_size,
    )
    half = cfg.model_copy(update={"batch_size": args.batch_size // 2})
    setups = [
        ("1 worker x 2 cores", cfg, 1, ["0,1"], 2),
        ("2 workers x 1 core", half, 2, ["0", "1"], 1),
    ]
    if args.one_core:
        setups.append(("1 worker x 1 core", cfg, 1, ["0"], 1))
    print(f"preset {args.preset}, {args.epochs} epochs, global batch {args.batch_size}, "
          f"load average before: {os.getloadavg()[0]:.2f}; work dir {work}", flush=True)  # fmt: skip
    rows = []
    for name, setup_cfg, workers, cpus, threads in setups:
        rows.append(run_setup(name, features, work, setup_cfg, workers, cpus, threads))
        print(f"  done: {name} ({rows[-1]['wall_s']:.0f} s)", flush=True)

    print(
        "\n| setup | global batch | wall s | train s | train examples/s | Recall@100 | popularity |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['setup']} | {r['global_batch']:,} | {r['wall_s']:.1f} | {r['train_s']:.1f} | "
            f"{r['examples_per_s']:,.0f} | {r['recall']:.4f} | {r['popularity']:.4f} |"
        )
    one, two = rows[0], rows[1]
    print(
        f"\n2 workers x 1 core / 1 worker x 2 cores: examples/s "
        f"{two['examples_per_s'] / one['examples_per_s']:.2f}x, wall "
        f"{two['wall_s'] / one['wall_s']:.2f}x, Recall@100 {two['recall'] - one['recall']:+.4f}"
    )
    if args.one_core:
        solo = rows[2]
        print(
            f"2 workers x 1 core / 1 worker x 1 core: examples/s "
            f"{two['examples_per_s'] / solo['examples_per_s']:.2f}x (scale-out efficiency "
            f"{two['examples_per_s'] / solo['examples_per_s'] / 2:.0%})"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
