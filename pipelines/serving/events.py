"""A run's window events for the serving state: split by user shard into scratch files batch
by batch, and one shard's events sorted in `schema.EVENT_ORDER` as integer codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines import schema
from pipelines.features.records import user_shard

SCAN_ROWS = 262_144  # events per batch read from the snapshot
SPILL_ROWS = 4 * SCAN_ROWS  # events held, split by shard, before they are written
# Read back once, soon: fast to write rather than small.
_SPILL_PARQUET = {"compression": "lz4", "use_dictionary": False, "write_statistics": False}
EVENTS = pa.schema(
    [(schema.USER_ID, pa.string()), (schema.TIMESTAMP, pa.int64()), (schema.ITEM_ID, pa.string())]
)


def partition_events(interactions: Path, window: dict, shards: int, out: Path) -> dict[int, Path]:
    """Split the window's events (`[history_start, window_end)`) by user shard into one Parquet
    file per shard under `out`, reading `SCAN_ROWS` events at a time and holding at most
    `SPILL_ROWS` (plus one batch) before writing them.

    Returns:
        {shard: file} for the shards that have events (`user_id, timestamp, item_id`).
    """
    out.mkdir(parents=True)
    scanner = ds.dataset(interactions, format="parquet").scanner(
        columns=list(EVENTS.names),
        filter=(ds.field(schema.TIMESTAMP) >= window["history_start"])
        & (ds.field(schema.TIMESTAMP) < window["window_end"]),
        batch_size=SCAN_ROWS,
        batch_readahead=1,
        fragment_readahead=1,
    )
    writers: dict[int, pq.ParquetWriter] = {}
    pending: dict[int, list[pa.Table]] = {}
    held = 0

    def flush():
        for s, pieces in pending.items():
            if s not in writers:
                path = out / f"shard-{s:05d}.parquet"
                writers[s] = pq.ParquetWriter(path, EVENTS, **_SPILL_PARQUET)
            writers[s].write_table(pa.concat_tables(pieces))
        pending.clear()

    try:
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch]).cast(EVENTS)
            shard = _shard_of_each(table.column(schema.USER_ID), shards)
            order = np.argsort(shard, kind="stable")
            bounds = np.flatnonzero(np.r_[True, shard[order][1:] != shard[order][:-1], True])
            for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                piece = table.take(pa.array(order[start:end]))
                pending.setdefault(int(shard[order[start]]), []).append(piece)
            held += table.num_rows
            if held >= SPILL_ROWS:  # a few large row groups per shard, not one per batch
                flush()
                held = 0
        flush()
    finally:
        for writer in writers.values():
            writer.close()
    return {s: out / f"shard-{s:05d}.parquet" for s in sorted(writers)}


def _shard_of_each(user_ids: pa.ChunkedArray, shards: int) -> np.ndarray:
    """`records.user_shard` of every row, hashing each distinct user of the batch once."""
    encoded = pc.dictionary_encode(user_ids.combine_chunks())
    distinct = user_shard(encoded.dictionary.to_numpy(zero_copy_only=False), shards)
    return distinct[encoded.indices.to_numpy(zero_copy_only=False)]


def read_spill(path: Path | None) -> pa.Table:
    """A shard's scratch file from `partition_events` (None: a shard without events)."""
    return pq.read_table(path) if path is not None else EVENTS.empty_table()


def take(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """`values[rows]` for int `[n]` row numbers."""
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
