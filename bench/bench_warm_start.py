"""Warm start on a replayed stream: does yesterday's model get today's recall in fewer epochs?

Day 1: train on [start, day D-1) with eval on day D-2. Day 2: the window slides by one day
(eval on day D-1); train it cold and warm-started from day 1's model, same seed and epochs,
no early stopping, and compare the per-epoch Recall@100 curves.

    python bench/bench_warm_start.py --preset small --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
from workspace import synthetic_workspace  # noqa: E402

from pipelines.config import TrainConfig, load_config  # noqa: E402
from pipelines.layout import RunLayout  # noqa: E402
from pipelines.steps.features import run_features  # noqa: E402
from pipelines.steps.train import fit  # noqa: E402
from pipelines.synthetic import PRESETS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work-dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work, landing = synthetic_workspace(args.work_dir, "bench-warm-", args.preset)
    days = PRESETS[args.preset].days
    start = pd.Timestamp("2026-01-01", tz="UTC")
    day = lambda d: start + pd.Timedelta(days=d)  # noqa: E731
    cfg = load_config(env={}, overrides={"data": {"source": str(landing)}})
    runs = {}
    for name, (first, last) in {"day1": (0, days - 1), "day2": (1, days)}.items():
        runs[name] = run_features(
            cfg,
            RunLayout(work / name),
            engine="local",
            window_start=day(first),
            eval_start=day(last - 1),
            window_end=day(last),
        )
    train = TrainConfig(epochs=args.epochs, early_stopping_patience=0)
    cfg = cfg.model_copy(update={"train": train})
    day1 = fit(cfg, runs["day1"].features_dir, work / "model_day1", resume=False).result
    cold = fit(cfg, runs["day2"].features_dir, work / "model_day2_cold", resume=False).result
    warm = fit(
        cfg, runs["day2"].features_dir, work / "model_day2_warm", day1.model_dir, resume=False
    ).result
    curves = {
        name: [c["validation_recall@100"] for c in r.manifest["curve"]]
        for name, r in (("cold", cold), ("warm", warm))
    }
    target = max(curves["cold"])
    reached = {
        name: next((i + 1 for i, r in enumerate(c) if r >= target), None)
        for name, c in curves.items()
    }
    print(
        f"preset {args.preset}, day-2 window slid by one day; warm start copied "
        f"{warm.manifest['warm_start']['user_id_rows_copied']} user rows and "
        f"{warm.manifest['warm_start']['item_id_rows_copied']} item rows"
    )
    print(f"{'epoch':<6}" + "".join(f"{e:>9}" for e in range(1, args.epochs + 1)))
    for name, curve in curves.items():
        print(f"{name:<6}" + "".join(f"{r:>9.4f}" for r in curve))
    print(
        f"epochs to reach the cold run's best Recall@100 ({target:.4f}): cold {reached['cold']}, "
        f"warm {reached['warm']}"
    )


if __name__ == "__main__":
    main()
