"""Building a served directory's user state and popularity fallback in bounded memory.

The window's events are read from the run's snapshot in batches and written, split by the
feature job's user shard (`records.user_shard`, `features.shards` shards), to one scratch
Parquet file per shard. Each shard is then built alone: its events sorted in
`schema.EVENT_ORDER`, the histories taken by `schema.point_in_time_history` at the window end
(the rule the training examples follow), the user features joined, and written as
`serving_state/part-SSSSS-of-NNNNN.parquet` (`state.py`). Memory holds one batch, or one
shard's events and state, plus per-item counts for the fallback (`popularity.py`); never the
whole window.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import schema
from pipelines.errors import PipelineError
from pipelines.features.records import user_shard
from pipelines.layout import ModelLayout, RunLayout
from pipelines.serving.events import SortedEvents, partition_events, read_spill, take
from pipelines.serving.popularity import POPULAR_DAYS, POPULAR_ITEMS, Popularity
from pipelines.serving.state import (
    POPULAR_FILE,
    STATE_DIR,
    STATE_FILE,
    STATE_FORMAT,
    STATE_META,
    part_name,
)

log = logging.getLogger(__name__)

_SCRATCH = ".serving-state-"  # scratch directory in the output while building


def build_serving_state(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the user state and popularity fallback of a run's data window to `out_dir`.

    Histories come from `schema.point_in_time_history` at the window end, the function that
    builds the training histories (events sorted in `schema.EVENT_ORDER`, most recent first,
    `history_length` of them), user shard by user shard as the feature job assigns them, so
    serving queries look like training queries. A single-file `serving_state.parquet` left in
    `out_dir` by an older build is replaced.

    Returns:
        Counts for the manifest: `users`, `window_end`, `shards`.

    Raises:
        PipelineError: `out_dir` has no `item_ids.txt` (the catalog the fallback keeps to).
    """
    run, out_dir = RunLayout(run_dir), Path(out_dir)
    manifest = json.loads(run.features_manifest.read_text())
    window, config = manifest["window_epoch_s"], manifest["config"]
    h = int(config["history_length"])
    # the feature job's shard count (decided from the snapshot's size when not configured)
    shards = int(config.get("shards") or len(manifest.get("shards") or []) or 1)
    catalog = _catalog(out_dir)
    users = _read_users(run.raw / "users.parquet")
    users_shard = _shard_of_users(users, shards)
    popularity = Popularity(catalog, window["window_end"] - POPULAR_DAYS * schema.DAY_SECONDS)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{_SCRATCH}*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=out_dir))
    try:
        spill = partition_events(run.raw / "interactions", window, shards, work / "events")
        staged = work / STATE_DIR
        staged.mkdir()
        counts, longest = [], 0
        for shard in range(shards):
            events = SortedEvents(read_spill(spill.get(shard)))
            mine = None if users is None else users.filter(pa.array(users_shard == shard))
            table, history = shard_state(events, mine, h)
            popularity.add(events)
            pq.write_table(table, staged / part_name(shard, shards))
            counts.append(table.num_rows)
            longest = max(longest, history)
            del events, table
        meta = {
            "format": STATE_FORMAT,
            "shards": shards,
            "shard_function": "pipelines.features.records.user_shard",
            "files": [part_name(s, shards) for s in range(shards)],
            "users": sum(counts),
            "users_per_shard": counts,
            "history_length": h,
            "max_history": longest,
            "window_end": int(window["window_end"]),
        }
        (staged / STATE_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _swap_in(staged, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    popular = popularity.ranking(POPULAR_ITEMS)
    (out_dir / POPULAR_FILE).write_text("".join(f"{i}\n" for i in popular), encoding="utf-8")
    log.info("serving state: %d users in %d shards", sum(counts), shards)
    return {"users": int(sum(counts)), "window_end": int(window["window_end"]), "shards": shards}


def copy_serving_state(source: str | Path, out_dir: str | Path) -> dict | None:
    """Copy the state and fallback `build_serving_state` wrote to `source` into `out_dir`, if
    the two directories export the same catalog (the fallback keeps to it); else None.

    Returns:
        The same counts `build_serving_state` returned for `source`, or None (nothing copied).
    """
    source, out_dir = Path(source), Path(out_dir)
    ids = ModelLayout(source).item_ids, ModelLayout(out_dir).item_ids
    meta_path = source / STATE_DIR / STATE_META
    if not (meta_path.is_file() and all(p.is_file() for p in ids)):
        return None
    if ids[0].read_bytes() != ids[1].read_bytes():
        return None
    work = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=out_dir))
    try:
        shutil.copytree(source / STATE_DIR, work / STATE_DIR)
        _swap_in(work / STATE_DIR, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shutil.copyfile(source / POPULAR_FILE, out_dir / POPULAR_FILE)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return {k: int(meta[k]) for k in ("users", "window_end", "shards")}


def shard_state(ev: SortedEvents, users: pa.Table | None, h: int) -> tuple[pa.Table, int]:
    """The state of one user shard: every user with events or features, sorted by user_id.

    Args:
        ev: the shard's window events, sorted (`SortedEvents`).
        users: the shard's user features (`user_id` + `user_<column>`), or None.
        h: the history length.

    Returns:
        (table `user_id, history_item_ids, history_timestamps, seen_item_ids, user_<column>...`,
        the longest history in it).
    """
    starts = np.searchsorted(ev.user_codes, np.arange(len(ev.user_names)), side="left")
    ends = np.searchsorted(ev.user_codes, np.arange(len(ev.user_names)), side="right")
    rows, lengths = schema.point_in_time_history(starts, ends, h)
    flat = rows[rows >= 0]  # row-major: each user's history, most recent first
    names = ev.user_names.to_numpy(zero_copy_only=False).astype(object)
    featured = (
        np.asarray(users.column(schema.USER_ID).to_pylist(), dtype=object)
        if users is not None
        else np.zeros(0, object)
    )
    everyone = np.union1d(names, featured) if len(featured) else names
    at = np.searchsorted(everyone, names)  # each event user's row among everyone

    # every distinct (user, item) pair, sorted: the seen items, in id order
    pairs = np.sort(ev.user_codes * max(len(ev.item_names), 1) + ev.item_codes)
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
    seen_users, seen_items = np.divmod(pairs, max(len(ev.item_names), 1))
    seen_lengths = np.bincount(seen_users, minlength=len(names))
    columns = {
        schema.USER_ID: pa.array(everyone, type=pa.string()),
        schema.HISTORY_ITEM_IDS: _lists(
            take(ev.item_names, ev.item_codes[flat]), lengths, at, len(everyone)
        ),  # fmt: skip
        schema.HISTORY_TIMESTAMPS: _lists(pa.array(ev.t[flat]), lengths, at, len(everyone)),
        schema.SEEN_ITEM_IDS: _lists(
            take(ev.item_names, seen_items), seen_lengths, at, len(everyone)
        ),  # fmt: skip
    }
    if users is not None:
        found = pd.Index(featured).get_indexer(everyone)
        joined = users.take(pa.array(found, mask=found < 0, type=pa.int64()))
        for name in users.column_names[1:]:
            columns[name] = joined.column(name)
    return pa.table(columns), int(lengths.max(initial=0))


def _lists(values: pa.Array, lengths: np.ndarray, at: np.ndarray, n: int) -> pa.ListArray:
    """One list per row of `n`: `values` cut by `lengths` into the rows `at`, [] elsewhere."""
    every = np.zeros(n, np.int64)
    every[at] = lengths
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(every, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _read_users(path: Path) -> pa.Table | None:
    """The user table as `user_id` (string) + `user_<column>`, or None without one."""
    if not path.exists():
        return None
    table = pq.read_table(path)
    table = table.set_column(
        table.schema.get_field_index(schema.USER_ID),
        schema.USER_ID,
        table.column(schema.USER_ID).cast(pa.string()),
    )
    rest = [c for c in table.column_names if c != schema.USER_ID]
    table = table.select([schema.USER_ID, *rest])
    return table.rename_columns([schema.USER_ID, *(schema.user_feature(c) for c in rest)])


def _shard_of_users(users: pa.Table | None, shards: int) -> np.ndarray | None:
    """The user shard of each row of the user table (hashed once, not once per shard)."""
    if users is None:
        return None
    return user_shard(users.column(schema.USER_ID).to_numpy(zero_copy_only=False), shards)


def _swap_in(staged: Path, out_dir: Path) -> None:
    """Replace `out_dir`'s state with `staged` (a rename; an older single file goes too)."""
    target = out_dir / STATE_DIR
    if target.exists():
        old = out_dir / f".{STATE_DIR}.old-{os.getpid()}"
        target.rename(old)
        shutil.rmtree(old)
    staged.rename(target)
    (out_dir / STATE_FILE).unlink(missing_ok=True)


def _catalog(model_dir: Path) -> set[str]:
    ids = ModelLayout(model_dir).item_ids
    if not ids.is_file():
        raise PipelineError(f"{model_dir}: no item_ids.txt; export the model before its state")
    return set(ids.read_text(encoding="utf-8").splitlines())
