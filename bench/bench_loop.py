"""The retrain loop per synthetic preset, cold and warm-started: time and peak memory per step.

The steady state of a scheduled retrain is a run that starts from yesterday's champion. For
each preset and round, on a fresh artifact root (fresh processes, `bench_capacity.run_loop`):

    day 1 (cold)   `two-tower run --as-of <the world's last day>`: no production model, so no
                   warm start; its model becomes production when the gate promotes it
    day 2 (warm)   `two-tower run` on everything: one more day of data, training warm-started
                   from day 1's champion (`registry.warm_start`), which is also re-evaluated
                   and gated against

The table is the median over `--rounds` rounds of each step's seconds and peak memory and of
the whole process's wall time, with Recall@100 of the challenger (all eval queries) and the
epochs run / kept. A round whose day 1 was not promoted has no champion, so its day 2 is cold
again: the table says how many day-2 runs really warm-started.

    python bench/bench_loop.py --presets small medium --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
from bench_capacity import generate, run_loop  # noqa: E402


def last_day(landing: Path) -> str:
    """The first instant of the landing world's last day (`YYYY-MM-DD`): day 1 ends there."""
    params = json.loads((landing / "_truth" / "params.json").read_text())["summary"]
    start = pd.Timestamp(params["start_date"])
    return str((start + pd.Timedelta(days=params["days"] - 1)).date())


def median_row(rows: list[dict]) -> dict:
    """Per-step median seconds and peaks, the median wall time and recall over `rows`."""
    steps = rows[0]["usage"]
    usage = {
        step: {
            key: statistics.median(r["usage"][step][key] for r in rows)
            for key in ("seconds", "peak_rss_gib", "peak_tree_gib")
        }
        for step in steps
    }
    return {
        "usage": usage,
        "wall_s": statistics.median(r["wall_s"] for r in rows),
        "recall@100": statistics.median(r["recall@100"] for r in rows),
        "popularity recall@100": statistics.median(r["popularity recall@100"] for r in rows),
        "queries": rows[0]["queries"],
        "runs": len(rows),
        "promoted": sum(bool(r["promoted"]) for r in rows),
        "warm_started": sum(bool(r["train"]["warm_start"]) for r in rows),
        "epochs": [f"{r['train']['best_epoch']}/{r['train']['epochs_run']}" for r in rows],
        "walls": [round(r["wall_s"], 1) for r in rows],
        "recalls": [round(r["recall@100"], 4) for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", default="/tmp/bench-loop")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every run")
    parser.add_argument("--json", help="also write every run's row here")
    parser.add_argument("--keep", action="store_true", help="keep each round's artifact root")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    work = Path(args.work_dir)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    rows: dict[tuple[str, str], list[dict]] = {}
    for preset in args.presets:
        landing = work / "landing" / preset
        made = generate(preset, landing)
        if made:
            print(f"{preset}: generated in {made['seconds']:.0f} s", flush=True)
        day1 = last_day(landing)
        for round_ in range(1, args.rounds + 1):
            root = work / "runs" / f"{preset}-{stamp}-r{round_}"
            for day, extra in (("cold", ("--as-of", day1)), ("warm", ())):
                print(f"{preset} round {round_} {day}: load average {os.getloadavg()[0]:.2f}",
                      flush=True)  # fmt: skip
                row = run_loop(preset, landing, root, env, run_id=f"day-{day}", extra=extra)
                rows.setdefault((preset, day), []).append(row)
                print(f"  {row['wall_s']:.0f} s, Recall@100 {row['recall@100']:.4f}, epochs "
                      f"{row['train']['best_epoch']}/{row['train']['epochs_run']}, warm start "
                      f"{bool(row['train']['warm_start'])}, promoted {row['promoted']}",
                      flush=True)  # fmt: skip
            if not args.keep:
                import shutil

                shutil.rmtree(root, ignore_errors=True)

    print(f"\nenv {env or '(defaults)'}; medians of {args.rounds} rounds\n")
    print(
        "| preset | run | "
        + " | ".join(f"{step} s (GiB)" for step in next(iter(rows.values()))[0]["usage"])
        + " | whole run s | peak GiB | Recall@100 | popularity | epochs kept/run | warm-started |"
    )
    print("| --- | --- |" + " ---: |" * (len(next(iter(rows.values()))[0]["usage"]) + 6))
    for (preset, day), runs in rows.items():
        m = median_row(runs)
        cells = [f"{u['seconds']:.1f} ({u['peak_tree_gib']:.2f})" for u in m["usage"].values()]
        peak = max(u["peak_tree_gib"] for u in m["usage"].values())
        print(f"| {preset} | {day} | " + " | ".join(cells) + f" | {m['wall_s']:.1f} | "
              f"{peak:.2f} | {m['recall@100']:.4f} | {m['popularity recall@100']:.4f} | "
              f"{', '.join(m['epochs'])} | {m['warm_started']}/{m['runs']} |")  # fmt: skip
    print("\nper run: " + "; ".join(
        f"{preset} {day}: wall {median_row(runs)['walls']}, R@100 {median_row(runs)['recalls']}"
        for (preset, day), runs in rows.items()
    ))  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({f"{p} {d}": runs for (p, d), runs in rows.items()}, indent=2)
        )


if __name__ == "__main__":
    main()
