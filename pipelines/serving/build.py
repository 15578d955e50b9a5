"""Building a served directory's user state and popularity fallback in bounded memory.

The window's events are read from the run's snapshot in batches and written, split by the
feature job's user shard (`records.user_shard`, `features.shards` shards), to one scratch
Parquet file per shard. Each shard is then built alone: its events sorted in
`schema.EVENT_ORDER`, the histories taken by `schema.point_in_time_history` at the window end
(the rule the training examples follow), the user features joined, and written as
`serving_state/part-SSSSS-of-NNNNN.parquet` (`state.py`). Memory holds one batch, or one
shard's events and state, plus per-item counts for the fallback; never the whole window.
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
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines import schema
from pipelines.errors import PipelineError
from pipelines.features.records import user_shard
from pipelines.layout import ModelLayout, RunLayout
from pipelines.serving.state import (
    POPULAR_FILE,
    STATE_DIR,
    STATE_FILE,
    STATE_FORMAT,
    STATE_META,
    part_name,
)

log = logging.getLogger(__name__)

POPULAR_DAYS = 7
POPULAR_ITEMS = 1000
SCAN_ROWS = 262_144  # events per batch read from the snapshot
_SCRATCH = ".serving-state-"  # scratch directory in the output while building
# Read back once, soon: fast to write rather than small.
_SCRATCH_PARQUET = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
_EVENTS = pa.schema(
    [(schema.USER_ID, pa.string()), (schema.TIMESTAMP, pa.int64()), (schema.ITEM_ID, pa.string())]
)


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
    h, shards = int(config["history_length"]), int(config.get("shards", 1))
    catalog = _catalog(out_dir)
    users = _read_users(run.raw / "users.parquet")
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
            events = SortedEvents(_read_spill(spill.get(shard)))
            table, history = shard_state(events, _shard_users(users, shard, shards), h)
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


def partition_events(interactions: Path, window: dict, shards: int, out: Path) -> dict[int, Path]:
    """Split the window's events (`[history_start, window_end)`) by user shard into one Parquet
    file per shard under `out`, reading `SCAN_ROWS` events at a time.

    Returns:
        {shard: file} for the shards that have events (`user_id, timestamp, item_id`).
    """
    out.mkdir(parents=True)
    scanner = ds.dataset(interactions, format="parquet").scanner(
        columns=list(_EVENTS.names),
        filter=(ds.field(schema.TIMESTAMP) >= window["history_start"])
        & (ds.field(schema.TIMESTAMP) < window["window_end"]),
        batch_size=SCAN_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
    )
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch]).cast(_EVENTS)
            shard = _shard_of_each(table.column(schema.USER_ID), shards)
            order = np.argsort(shard, kind="stable")
            bounds = np.flatnonzero(np.r_[True, shard[order][1:] != shard[order][:-1], True])
            for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                s = int(shard[order[start]])
                if s not in writers:
                    writers[s] = pq.ParquetWriter(
                        out / f"shard-{s:05d}.parquet", _EVENTS, **_SCRATCH_PARQUET
                    )
                writers[s].write_table(table.take(pa.array(order[start:end])))
    finally:
        for writer in writers.values():
            writer.close()
    return {s: out / f"shard-{s:05d}.parquet" for s in sorted(writers)}


def _shard_of_each(user_ids: pa.ChunkedArray, shards: int) -> np.ndarray:
    """`records.user_shard` of every row, hashing each distinct user of the batch once."""
    encoded = pc.dictionary_encode(user_ids.combine_chunks())
    distinct = user_shard(encoded.dictionary.to_numpy(zero_copy_only=False), shards)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)]


def _read_spill(path: Path | None) -> pa.Table:
    return pq.read_table(path) if path is not None else _EVENTS.empty_table()


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
            _take(ev.item_names, ev.item_codes[flat]), lengths, at, len(everyone)
        ),  # fmt: skip
        schema.HISTORY_TIMESTAMPS: _lists(pa.array(ev.t[flat]), lengths, at, len(everyone)),
        schema.SEEN_ITEM_IDS: _lists(
            _take(ev.item_names, seen_items), seen_lengths, at, len(everyone)
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


def _take(values: pa.Array, rows: np.ndarray) -> pa.Array:
    return values.take(pa.array(rows, type=pa.int64()))


class SortedEvents:
    """A shard's events (`user_id, timestamp, item_id`, any order) sorted in `schema.EVENT_ORDER` (user, timestamp, item), as codes into
    sorted distinct user and item ids (Arrow string arrays). Events that share all three keys
    give the same history, seen items and counts whatever their event and weight."""

    def __init__(self, events: pa.Table):
        user_codes, self.user_names = _factorize(events.column(schema.USER_ID))
        item_codes, self.item_names = _factorize(events.column(schema.ITEM_ID))
        t = events.column(schema.TIMESTAMP).to_numpy()
        order = np.lexsort((item_codes, t, user_codes))
        self.user_codes, self.item_codes, self.t = user_codes[order], item_codes[order], t[order]


def _factorize(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int64 codes `[n]`, sorted distinct values): `pd.factorize(sort=True)` without turning
    every value into a Python string."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(order, type=pa.int64()))


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


def _shard_users(users: pa.Table | None, shard: int, shards: int) -> pa.Table | None:
    if users is None:
        return None
    ids = users.column(schema.USER_ID).to_numpy(zero_copy_only=False)
    return users.filter(pa.array(user_shard(ids, shards) == shard))


def _swap_in(staged: Path, out_dir: Path) -> None:
    """Replace `out_dir`'s state with `staged` (a rename; an older single file goes too)."""
    target = out_dir / STATE_DIR
    if target.exists():
        old = out_dir / f".{STATE_DIR}.old-{os.getpid()}"
        target.rename(old)
        shutil.rmtree(old)
    staged.rename(target)
    (out_dir / STATE_FILE).unlink(missing_ok=True)


class Popularity:
    """Item counts of the window's catalog events, added shard by shard, ranked as
    `popular_items` ranks one frame of them: most interactions first, ties in the order the
    items first appear in `schema.EVENT_ORDER`.

    Args:
        catalog: the servable items (the index's rows).
        recent_from: epoch seconds; events at or after it count for "this week".
    """

    def __init__(self, catalog: set[str], recent_from: int):
        self.catalog = catalog
        self.catalog_array = pa.array(sorted(catalog), type=pa.string())
        self.recent_from = recent_from
        self.recent = self.window = None

    def add(self, ev: SortedEvents) -> None:
        """Count one shard's events (sorted: `sorted_events`)."""
        in_catalog = pc.is_in(ev.item_names, value_set=self.catalog_array).to_numpy(
            zero_copy_only=False
        )[ev.item_codes]
        users = ev.user_names.to_numpy(zero_copy_only=False)
        recent = in_catalog & (ev.t >= self.recent_from)
        self.recent = _merge(self.recent, _first_and_count(ev, users, recent))
        self.window = _merge(self.window, _first_and_count(ev, users, in_catalog))

    def ranking(self, n: int = POPULAR_ITEMS) -> list[str]:
        """The fallback: this week's most interacted items, the window's, then the catalog."""
        return fallback_ranking(_ranked(self.recent), _ranked(self.window), self.catalog, n)


def _first_and_count(ev: SortedEvents, users: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Per item among the rows `keep`: its count and its first row's (user, timestamp)."""
    rows = np.flatnonzero(keep)
    codes, first, count = np.unique(ev.item_codes[rows], return_index=True, return_counts=True)
    first = rows[first]
    return pd.DataFrame(
        {
            "item": _take(ev.item_names, codes).to_numpy(zero_copy_only=False),
            "count": count.astype(np.int64),
            "first_user": users[ev.user_codes[first]],
            "first_t": ev.t[first],
        }
    )


def _merge(a: pd.DataFrame | None, b: pd.DataFrame) -> pd.DataFrame:
    """Counts summed per item, first appearance = the earlier of the two."""
    if a is None:
        return b
    both = pd.concat([a, b], ignore_index=True).sort_values(
        ["item", "first_user", "first_t"], kind="stable"
    )
    grouped = both.groupby("item", sort=True)
    first = grouped[["first_user", "first_t"]].first()
    return first.assign(count=grouped["count"].sum()).reset_index()[list(b.columns)]


def _ranked(counts: pd.DataFrame | None) -> list[str]:
    if counts is None or counts.empty:
        return []
    ordered = counts.sort_values(
        ["count", "first_user", "first_t", "item"], ascending=[False, True, True, True]
    )
    return ordered["item"].tolist()


def popular_items(
    events: pd.DataFrame, window_end: int, catalog: set[str], n: int = POPULAR_ITEMS
) -> list:
    """The fallback ranking from one frame of events (`user_id, item_id, timestamp`, sorted in
    `schema.EVENT_ORDER`): the last week's most interacted items, then the rest of the window's,
    then the remaining catalog in id order; only items in the catalog (the index's rows:
    anything else cannot be served, e.g. unknown items the checks tolerated, or items first seen
    in the eval period). `Popularity` gives the same ranking shard by shard."""
    in_catalog = events[events["item_id"].isin(catalog)]
    recent = in_catalog[in_catalog["timestamp"] >= window_end - POPULAR_DAYS * 86_400]
    ranked = list(recent["item_id"].value_counts(sort=True).index)
    window = list(in_catalog["item_id"].value_counts(sort=True).index)
    return fallback_ranking(ranked, window, catalog, n)


def fallback_ranking(recent: list[str], window: list[str], catalog: set[str], n: int) -> list:
    """`recent`, then the rest of `window`, then the rest of the catalog in id order; `n` items."""
    ranked = list(recent[:n])
    for more in (window, sorted(catalog)):
        if len(ranked) >= n:
            break
        have = set(ranked)
        ranked += [i for i in more if i not in have][: n - len(ranked)]
    return ranked[:n]


def _catalog(model_dir: Path) -> set[str]:
    ids = ModelLayout(model_dir).item_ids
    if not ids.is_file():
        raise PipelineError(f"{model_dir}: no item_ids.txt; export the model before its state")
    return set(ids.read_text(encoding="utf-8").splitlines())
