"""Feature job throughput: Beam (DirectRunner, 2 worker processes) vs in-process references.

Runs on one snapshot of a synthetic preset (default `medium`), each engine in a fresh
subprocess so peak memory is its own:

- `history-only`: pandas/numpy point-in-time history building alone (sort, group boundaries,
  history index matrix) -- the kernel of the job, no encoding or files (the yardstick);
- `reference`:    the whole job in one process without Beam (`pipelines.features.local`),
  same outputs byte for byte;
- `beam`:         the Beam job (`pipelines.features.beam_job`).

    python bench/bench_features.py --preset medium
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(engine: str, raw: str, out: str) -> dict:
    import numpy as np

    from pipelines.config import FeaturesConfig
    from pipelines.features.local import read_events, run_local
    from pipelines.features.window import resolve_window
    from pipelines.resources import TreeSampler

    cfg = FeaturesConfig()
    events = read_events(raw)
    window = resolve_window(events["timestamp"].to_numpy(), cfg)
    n = len(events)
    with TreeSampler(0.1) as memory:
        start = time.perf_counter()
        if engine == "history-only":
            from pipelines.features.records import _Events
            from pipelines.schema import point_in_time_history

            ev = _Events.sort(events, window)
            rows = np.flatnonzero((ev.t >= window.window_start) & (ev.t < window.eval_start))
            point_in_time_history(ev.user_start[rows], ev.tie_start[rows], cfg.history_length)
        elif engine == "reference":
            del events
            run_local(raw, out, window, cfg)
        else:
            from pipelines.features.beam_job import run_beam

            del events
            run_beam(raw, out, window, cfg)
        seconds = time.perf_counter() - start
    largest = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "engine": engine,
        "events": n,
        "seconds": seconds,
        "events_per_s": n / seconds,
        "peak_process_gib": largest / 2**20,
        "peak_total_gib": memory.tree_peak / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    from pipelines.features.snapshot import write_snapshot
    from pipelines.sources import read_source
    from pipelines.synthetic import generate

    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        generate(f"{tmp}/landing", preset=args.preset, seed=7)
        raw = str(write_snapshot(read_source(f"{tmp}/landing"), f"{tmp}/raw"))
        rows = {}
        for engine in ("history-only", "reference", "beam"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", engine, raw, f"{tmp}/{engine}"],
                capture_output=True,
                text=True,
                check=True,
            )
            rows[engine] = json.loads(proc.stdout.strip().splitlines()[-1])

    beam = rows["beam"]["events_per_s"]
    print(f"preset {args.preset}: {rows['beam']['events']:,} events")
    print(
        f"{'engine':<14} {'seconds':>8} {'events/s':>11} {'beam / this':>12} "
        f"{'peak GiB, largest process':>26} {'peak GiB, all processes':>24}"
    )
    for engine, row in rows.items():
        print(
            f"{engine:<14} {row['seconds']:>8.1f} {row['events_per_s']:>11,.0f} "
            f"{beam / row['events_per_s']:>11.2f}x {row['peak_process_gib']:>26.2f} "
            f"{row['peak_total_gib']:>24.2f}"
        )


if __name__ == "__main__":
    main()
