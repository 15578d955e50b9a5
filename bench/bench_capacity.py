"""Capacity: the whole loop (`two-tower run`) per synthetic preset, time and peak memory per step.

For each preset the world is generated once under `<work-dir>/landing/<preset>` (timed apart:
landing data is not part of a retrain), then `two-tower run --source <landing>` runs in a fresh
process on a fresh artifact root (cold: no production model, so no warm start and no champion
to re-evaluate). Each step's wall time and peak memory come from the run's own summary
(`RunSummary.usage`, `pipelines.resources`): the run process's high-water mark per step, and the
sampled peak over it and its child processes (Beam's workers).

Setups (`--setup`):
    local   the defaults: Beam's DirectRunner with 2 worker processes on this host
    dask    the feature job on a local dask.distributed cluster of 2 single-threaded worker
            processes (`pipelines.features.dask_local`); the cluster's own peak memory is
            sampled by this script and reported as `features (dask cluster)`

Config for a setup goes through the environment, as for the DAG (`--env TTR_TRAIN__EPOCHS=1`).

    python bench/bench_capacity.py --presets small medium
    python bench/bench_capacity.py --presets large --env TTR_TRAIN__EPOCHS=1 \
        --env TTR_EVAL__MAX_QUERIES=50000
    python bench/bench_capacity.py --presets medium --setup dask
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = float(1 << 30)


def generate(preset: str, landing: Path) -> dict | None:
    """The preset's world under `landing` (once); its time and peak memory when made now."""
    if (landing / "items.parquet").exists():
        return None
    code = (
        "import resource, sys, time; from pipelines.synthetic import generate; "
        "t = time.perf_counter(); "
        f"generate({str(landing)!r}, preset={preset!r}, seed=7); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO
    )
    seconds, kib = out.stdout.split()[-2:]
    return {"seconds": float(seconds), "peak_rss_gib": int(kib) / 2**20}


def run_loop(
    preset: str,
    landing: Path,
    root: Path,
    env: dict[str, str],
    run_id: str = "capacity",
    extra: tuple[str, ...] = (),
) -> dict:
    """`two-tower run` (plus `extra` arguments) in a fresh process as `run_id` under `root`;
    the summary's per-step usage, the wall time, the evaluation and whether it promoted."""
    log = root.with_suffix(".log") if run_id == "capacity" else root / f"{run_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pipelines", "run", "--source", str(landing),
           "--artifact-root", str(root), "--run-id", run_id, *extra]  # fmt: skip
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        ).returncode  # fmt: skip
    wall = time.perf_counter() - started
    summary_path = root / "runs" / run_id / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"{preset}: the run failed (exit {code}), no summary; see {log}")
    summary = json.loads(summary_path.read_text())
    metrics = json.loads((root / "runs" / run_id / "evaluation" / "metrics.json").read_text())
    return {
        "preset": preset,
        "wall_s": wall,
        "exit": code,
        "usage": summary["usage"],
        "recall@100": metrics["challenger"]["recall@100"],
        "popularity recall@100": metrics["popularity"]["recall@100"],
        "queries": metrics["eval"]["queries"],
        "items": metrics["eval"]["items"],
        "promoted": summary["promoted"],
        "train": {
            k: summary["steps"]["train"].get(k) for k in ("best_epoch", "epochs_run", "warm_start")
        },
        "log": str(log),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--setup", choices=["local", "dask"], default="local")
    parser.add_argument("--work-dir", default="/tmp/bench-capacity")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the run")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    work = Path(args.work_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows = []
    for preset in args.presets:
        landing = work / "landing" / preset
        made = generate(preset, landing)
        if made:
            print(f"{preset}: generated in {made['seconds']:.0f} s, "
                  f"peak {made['peak_rss_gib']:.2f} GiB", flush=True)  # fmt: skip
        root = work / "runs" / f"{preset}-{args.setup}-{stamp}"
        print(f"{preset}: two-tower run ({args.setup}) into {root}, load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        if args.setup == "dask":
            from pipelines.features.dask_local import local_dask_cluster
            from pipelines.resources import TreeSampler

            with local_dask_cluster(2, work / "dask" / f"{preset}-{stamp}") as cluster:
                with TreeSampler(0.5, list(cluster.pids)) as sampled:
                    row = run_loop(preset, landing, root, {**cluster.beam_env(), **env})
            row["dask_cluster_peak_gib"] = sampled.tree_peak / GIB
        else:
            row = run_loop(preset, landing, root, env)
        row.update(setup=args.setup, env=env, generated=made)
        rows.append(row)
        print(f"{preset}: done in {row['wall_s']:.0f} s (exit {row['exit']})", flush=True)

    print(f"\nsetup {args.setup}; env {env or '(defaults)'}\n")
    print("| preset | step | seconds | peak GiB (process) | peak GiB (with child processes) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in rows:
        for step, used in row["usage"].items():
            print(f"| {row['preset']} | {step} | {used['seconds']:.1f} | "
                  f"{used['peak_rss_gib']:.2f} | {used['peak_tree_gib']:.2f} |")  # fmt: skip
        if "dask_cluster_peak_gib" in row:
            print(f"| {row['preset']} | features (dask cluster: scheduler + 2 workers) | | "
                  f"{row['dask_cluster_peak_gib']:.2f} | |")  # fmt: skip
        print(f"| {row['preset']} | **whole run** (process start to exit) | "
              f"{row['wall_s']:.1f} | | |")  # fmt: skip
    print("\n| preset | eval queries | items | Recall@100 | popularity Recall@100 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['preset']} | {row['queries']:,} | {row['items']:,} | "
              f"{row['recall@100']:.4f} | {row['popularity recall@100']:.4f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
