"""Synthetic generator: throughput and peak memory per preset, against a naive exact sampler.

Each preset is generated in a fresh subprocess, so its peak RSS is its own. The reference is
the obvious exact implementation of the same preference model -- a full softmax over the
available catalog for every event -- timed in the same run on a slice of day 0 of the same world,
so the ratio says what the cluster-proposal rejection sampler buys.

    python bench/bench_generator.py --presets medium large
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(preset: str, out: str) -> dict:
    from pipelines.synthetic import generate

    start = time.perf_counter()
    summary = generate(out, preset=preset, seed=7)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {
        "preset": preset,
        "events": summary.events,
        "items": summary.items,
        "users": summary.users,
        "seconds": seconds,
        "events_per_s": summary.events / seconds,
        "peak_gib": peak_kib / 2**20,
        "disk_mib": disk / 2**20,
    }


def naive_reference(preset: str, n_events: int) -> dict:
    """Exact sampling with a full softmax over the catalog per event (no cluster proposals)."""
    from pipelines.synthetic.presets import PRESETS
    from pipelines.synthetic.world import build_world

    world = build_world(PRESETS[preset], seed=7)
    rng = np.random.default_rng(0)
    bias = world.item_logit_bias(0)
    available = np.flatnonzero(np.isfinite(bias))
    vectors, bias = world.item_vectors[available], bias[available]
    active = np.flatnonzero(world.user_join_day <= 0)
    users = rng.choice(
        active, size=n_events, p=world.user_activity[active] / world.user_activity[active].sum()
    )
    start = time.perf_counter()
    for user in users:
        logits = vectors @ world.user_vectors[user] + bias
        probs = np.exp(logits - logits.max())
        rng.choice(len(available), p=probs / probs.sum())
    seconds = time.perf_counter() - start
    return {"events": n_events, "seconds": seconds, "events_per_s": n_events / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["medium", "large"])
    parser.add_argument("--reference-events", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.out)))
        return

    rows = []
    for preset in args.presets:
        with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as tmp:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", preset, "--out", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = naive_reference(preset, args.reference_events)
        rows.append((ours, ref))

    print(
        f"{'preset':<8} {'events':>11} {'items':>9} {'ours ev/s':>11} {'naive ev/s':>11} "
        f"{'ratio':>8} {'seconds':>8} {'peak GiB':>9} {'disk MiB':>9}"
    )
    for ours, ref in rows:
        print(
            f"{ours['preset']:<8} {ours['events']:>11,} {ours['items']:>9,} "
            f"{ours['events_per_s']:>11,.0f} {ref['events_per_s']:>11,.0f} "
            f"{ours['events_per_s'] / ref['events_per_s']:>7.1f}x {ours['seconds']:>8.1f} "
            f"{ours['peak_gib']:>9.2f} {ours['disk_mib']:>9.1f}"
        )


if __name__ == "__main__":
    main()
