"""The raw snapshot on disk: the normalized, validated input of one run, as Parquet.

    <run>/raw/interactions/part-NNNNN.parquet   user_id, item_id, timestamp (int64 s), event, weight
    <run>/raw/items.parquet                     item_id, title, genres, created_at (int64 s or null)
    <run>/raw/users.parquet                     user_id + categorical features (when the source has them)
    <run>/raw/snapshot.json                     source, format, counts

The Beam job reads these files (any runner, any filesystem), never the landing data itself,
so a run is reproducible from its own directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.contract import RawSnapshot

EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "event", "weight"]  # interactions schema
ROWS_PER_FILE = 1_000_000
ROW_GROUP = 250_000


def write_snapshot(snapshot: RawSnapshot, out: str | Path) -> Path:
    """Write the snapshot's tables as Parquet under `<out>/` (created; replaced if present).

    Returns:
        The directory written.
    """
    out = Path(out)
    interactions_dir = out / "interactions"
    interactions_dir.mkdir(parents=True, exist_ok=True)
    for old in interactions_dir.glob("*.parquet"):
        old.unlink()
    inter = snapshot.interactions
    frame = pd.DataFrame({
        "user_id": inter["user_id"].astype(str),
        "item_id": inter["item_id"].astype(str),
        "timestamp": epoch_seconds(inter["timestamp"]),
        "event": inter["event"].astype(str),
        "weight": inter["weight"].astype(np.float64),
    })  # fmt: skip
    for part, start in enumerate(range(0, max(len(frame), 1), ROWS_PER_FILE)):
        chunk = pa.Table.from_pandas(
            frame.iloc[start : start + ROWS_PER_FILE], preserve_index=False
        )
        pq.write_table(
            chunk, interactions_dir / f"part-{part:05d}.parquet", row_group_size=ROW_GROUP
        )
    if snapshot.items is not None:
        items = snapshot.items.drop(columns=["source_row"], errors="ignore").copy()
        items["created_at"] = epoch_seconds(items["created_at"], missing=None)
        pq.write_table(pa.Table.from_pandas(items, preserve_index=False), out / "items.parquet")
    if snapshot.users is not None:
        users = snapshot.users.drop(columns=["source_row"], errors="ignore")
        pq.write_table(pa.Table.from_pandas(users, preserve_index=False), out / "users.parquet")
    meta = {
        "source": snapshot.root,
        "format": snapshot.format,
        "interactions": len(frame),
        "items": 0 if snapshot.items is None else len(snapshot.items),
        "users": 0 if snapshot.users is None else len(snapshot.users),
    }
    (out / "snapshot.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def epoch_seconds(ts: pd.Series, missing: int | None = 0) -> pd.Series:
    """UTC datetimes as int64 epoch seconds; NaT becomes `missing` (nullable Int64 if None)."""
    values = ts.to_numpy(dtype="datetime64[us]")
    seconds = values.astype(np.int64) // 1_000_000
    nat = np.isnat(values)
    if missing is None:
        out = pd.Series(seconds, index=ts.index, dtype="Int64")
        out[nat] = pd.NA
        return out
    return pd.Series(np.where(nat, missing, seconds), index=ts.index, dtype=np.int64)
