"""Write a synthetic world to disk in the landing layout, with its ground truth.

    <out>/interactions/dt=YYYY-MM-DD/part-00000.parquet
    <out>/items.parquet
    <out>/users.parquet
    <out>/_truth/{params.json, user_vectors.npy, item_vectors.npy, ...}

Two runs with the same preset, seed, days and start date write byte-identical files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.synthetic.presets import PRESETS, TruthParams
from pipelines.synthetic.world import World, build_world, items_frame, simulate_day, users_frame

log = logging.getLogger(__name__)
TRUTH_DIR = "_truth"


@dataclasses.dataclass(frozen=True)
class GenerateSummary:
    """What `generate` wrote."""

    out: str
    preset: str
    seed: int
    days: int
    start_date: str
    events: int
    users: int
    items: int
    partitions: int


def generate(
    out: str | Path,
    *,
    preset: str = "small",
    seed: int = 7,
    days: int | None = None,
    start_date: dt.date = dt.date(2026, 1, 1),
    params: TruthParams | None = None,
    on_day: Callable[[int, int, int], None] | None = None,
) -> GenerateSummary:
    """Simulate a world day by day and write it in the landing layout.

    Args:
        out: output directory (created; existing partitions of the same days are overwritten).
        preset: "small", "medium" or "large".
        seed: random seed; same seed, same bytes.
        days: simulated days (default: the preset's).
        start_date: UTC date of the first partition.
        params: true preference model knobs.
        on_day: progress callback `(day_index, days, events_that_day)`.

    Returns:
        A `GenerateSummary` with the counts written.
    """
    spec = PRESETS[preset]
    world = build_world(spec, seed, days, params)
    out = Path(out)
    start = pd.Timestamp(start_date, tz="UTC")
    (out / "interactions").mkdir(parents=True, exist_ok=True)
    total = 0
    for day in range(world.days):
        events = simulate_day(world, day, start)
        part = out / "interactions" / f"dt={(start + pd.Timedelta(days=day)).date().isoformat()}"
        part.mkdir(exist_ok=True)
        write_parquet(events, part / "part-00000.parquet")
        total += len(events)
        if on_day is not None:
            on_day(day, world.days, len(events))
    write_parquet(items_frame(world, start), out / "items.parquet")
    write_parquet(users_frame(world), out / "users.parquet")
    summary = GenerateSummary(
        out=str(out),
        preset=preset,
        seed=seed,
        days=world.days,
        start_date=start_date.isoformat(),
        events=total,
        users=world.n_users,
        items=world.n_items,
        partitions=world.days,
    )
    write_truth(world, out / TRUTH_DIR, summary)
    log.info(
        "generated %s events for %d users and %d items in %s",
        f"{total:,}",
        world.n_users,
        world.n_items,
        out,
    )
    return summary


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame as Parquet with stable bytes (no index, fixed row-group size)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="zstd", row_group_size=1_000_000)


def write_truth(world: World, path: Path, summary: GenerateSummary) -> None:
    """Save the true parameters (plain .npy, never pickled) and a params.json describing them."""
    path.mkdir(parents=True, exist_ok=True)
    arrays = {
        "user_vectors": world.user_vectors,
        "user_cluster": world.user_cluster,
        "user_join_day": world.user_join_day,
        "cluster_vectors": world.cluster_vectors,
        "item_vectors": world.item_vectors,
        "item_log_popularity": world.item_log_popularity,
        "item_arrival_day": world.item_arrival_day,
    }
    for name, array in arrays.items():
        np.save(path / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    meta = {
        "generator": "pipelines.synthetic",
        # The output path is left out so the same world has the same bytes wherever it is written.
        "summary": {k: v for k, v in dataclasses.asdict(summary).items() if k != "out"},
        "truth_params": dataclasses.asdict(world.params),
        "preset": dataclasses.asdict(world.preset),
        "model": "logit(u,i,t) = <user_vectors[u], item_vectors[i]> + popularity_beta * "
        "item_log_popularity[i] + fresh_boost * exp(-age_days / fresh_decay_days); "
        "item i available from start_date + item_arrival_day[i] days",
        "ids": "user_id = 'u' + 7-digit index, item_id = 'i' + 7-digit index",
    }
    (path / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
