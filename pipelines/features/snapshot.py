"""The raw snapshot on disk: the normalized input of one run, as Parquet.

    <dir>/interactions/part-NNNNN.parquet   user_id, item_id, timestamp (int64 s), event, weight
    <dir>/items.parquet                     item_id, title, genres, created_at (int64 s or null)
    <dir>/users.parquet                     user_id + categorical features (when the source has them)
    <dir>/snapshot.json                     source, format, counts, partitions, every file's
                                            sha256 and the validation it passed; written last

A run has two: `<run>/snapshot/`, taken once when the raw checks pass (the only copy of the
landing data any later step or retry reads: rows written to the source after validation never
reach training), and `<run>/raw/`, the feature job's input derived from it (`features.as_of`
applied). The Beam job reads these files (any runner, any filesystem), never the landing data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.contract import RawSnapshot
from pipelines.errors import DataValidationError
from pipelines.schema import epoch_seconds
from pipelines.sources.columns import empty_interactions

META = "snapshot.json"

EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "event", "weight"]  # interactions schema
ROWS_PER_FILE = 1_000_000
ROW_GROUP = 250_000


def write_snapshot(snapshot: RawSnapshot, out: str | Path, validation: dict | None = None) -> Path:
    """Write the snapshot's tables as Parquet under `<out>/` (created; replaced if present).

    Args:
        validation: what the raw checks said (stored in snapshot.json; `read_snapshot` can
            require it).

    Returns:
        The directory written.
    """
    writer = SnapshotWriter(out)
    writer.add(snapshot.interactions)
    return writer.finish(snapshot, validation)


class SnapshotWriter:
    """Writes a snapshot as its interactions arrive in batches, holding at most one part file's
    rows (`ROWS_PER_FILE`) as Arrow; the files are those `write_snapshot` writes for the same
    rows, byte for byte.

    Args:
        out: the snapshot directory (created; its snapshot files are removed first, and
            snapshot.json, the completion marker, is written last by `finish`).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        (self.out / META).unlink(missing_ok=True)
        for stale in ("items.parquet", "users.parquet"):
            (self.out / stale).unlink(missing_ok=True)
        self.interactions_dir = self.out / "interactions"
        self.interactions_dir.mkdir(parents=True, exist_ok=True)
        for old in self.interactions_dir.glob("*.parquet"):
            old.unlink()
        self.rows = 0
        self.parts = 0
        self._pending: list[pa.Table] = []
        self._held = 0

    def add(self, interactions: pd.DataFrame) -> None:
        """Append typed interactions (`RawSnapshot.interactions` columns), in source order."""
        if len(interactions) == 0:
            return
        self._pending.append(pa.Table.from_pandas(_event_frame(interactions), preserve_index=False))
        self._held += len(interactions)
        self.rows += len(interactions)
        while self._held >= ROWS_PER_FILE:
            table = pa.concat_tables(self._pending)
            self._write_part(table.slice(0, ROWS_PER_FILE))
            rest = table.slice(ROWS_PER_FILE)
            self._pending, self._held = ([rest] if len(rest) else []), len(rest)

    def finish(self, source, validation: dict | None = None) -> Path:
        """Write the last part, the items and users tables, then snapshot.json.

        Args:
            source: a `RawSnapshot` or `SourceScan` (after its pass): format, root, items,
                users, partitions, weight_range.
            validation: what the raw checks said.

        Returns:
            The directory written.
        """
        if self._pending or self.parts == 0:  # an empty snapshot still has one (empty) part
            table = (
                pa.concat_tables(self._pending)
                if self._pending
                else pa.Table.from_pandas(_event_frame(empty_interactions()), preserve_index=False)
            )
            self._write_part(table)
            self._pending, self._held = [], 0
        out = self.out
        if source.items is not None:
            items = source.items.drop(columns=["source_row"], errors="ignore").copy()
            items["created_at"] = epoch_seconds(items["created_at"], missing=None)
            pq.write_table(pa.Table.from_pandas(items, preserve_index=False), out / "items.parquet")
        if source.users is not None:
            users = source.users.drop(columns=["source_row"], errors="ignore")
            pq.write_table(pa.Table.from_pandas(users, preserve_index=False), out / "users.parquet")
        meta = {
            "source": source.root,
            "format": source.format,
            "interactions": self.rows,
            "items": 0 if source.items is None else len(source.items),
            "users": 0 if source.users is None else len(source.users),
            "partitions": source.partitions[["dt", "path", "rows"]].to_dict("records"),
            "weight_range": source.weight_range,
            "files": _file_hashes(out),
            "validation": validation,
        }
        tmp = out / f".{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        os.replace(tmp, out / META)
        return out

    def _write_part(self, table: pa.Table) -> None:
        path = self.interactions_dir / f"part-{self.parts:05d}.parquet"
        # One chunk per column, as `write_snapshot` always had: where a column's dictionary
        # page overflows (and its encoding falls back) follows the chunks, so the bytes would too.
        pq.write_table(table.combine_chunks(), path, row_group_size=ROW_GROUP)
        self.parts += 1


def _event_frame(inter: pd.DataFrame) -> pd.DataFrame:
    """Typed interactions as the snapshot stores them (`EVENT_COLUMNS`, epoch-second times)."""
    return pd.DataFrame({
        "user_id": inter["user_id"].astype(str),
        "item_id": inter["item_id"].astype(str),
        "timestamp": epoch_seconds(inter["timestamp"]),
        "event": inter["event"].astype(str),
        "weight": inter["weight"].astype(np.float64),
    })  # fmt: skip


def verify_snapshot(out: str | Path, *, require_validated: bool = False) -> dict:
    """Check a snapshot written by `write_snapshot` / `SnapshotWriter` without loading it:
    complete, validated (with `require_validated`), and every file's sha256 as written.

    Returns:
        Its snapshot.json.

    Raises:
        DataValidationError: the snapshot is incomplete (no snapshot.json), was not validated
            (with `require_validated`), or a file changed, appeared or vanished since it was
            written.
    """
    out = Path(out)
    meta_path = out / META
    if not meta_path.is_file():
        raise DataValidationError(f"{out}: no complete snapshot ({META} missing); re-validate")
    meta = json.loads(meta_path.read_text())
    if require_validated and not (meta.get("validation") or {}).get("success"):
        raise DataValidationError(f"{out}: this snapshot did not pass the raw checks")
    found = _file_hashes(out)
    expected = meta.get("files") or {}
    changed = sorted(
        f"{name} ({'missing' if name not in found else 'added' if name not in expected else 'sha256 differs'})"
        for name in set(found) | set(expected)
        if found.get(name) != expected.get(name)
    )
    if changed:
        raise DataValidationError(
            f"{out}: snapshot files changed since it was written (rule: a run reads only the "
            f"snapshot its validation passed): {', '.join(changed)}; re-run the run to re-validate"
        )
    return meta


def derive_snapshot(src: str | Path, out: str | Path, as_of: pd.Timestamp | None = None) -> dict:
    """Write `out` as the (verified) snapshot `src` as it stood at `as_of`, one part file at a
    time: never the whole snapshot in memory.

    `as_of` None keeps every row (the part files are copied). Otherwise the rows, items and
    partitions `RawSnapshot.as_of` keeps: earlier interactions; items created before it, with
    no `created_at`, or interacted with before it; partitions whose day starts before it. The
    files are those `write_snapshot(read_snapshot(src).as_of(as_of), out)` writes.

    Returns:
        `out`'s snapshot.json (`interactions`: the rows kept; `first_timestamp`: the earliest
        interaction of `src`, epoch seconds, or None when it has none).
    """
    import shutil

    src, out = Path(src), Path(out)
    meta = json.loads((src / META).read_text())
    parts = sorted((src / "interactions").glob("*.parquet"))
    first = _min_timestamp(parts)
    if as_of is None:
        shutil.rmtree(out, ignore_errors=True)
        (out / "interactions").mkdir(parents=True)
        for path in [*parts, src / "items.parquet", src / "users.parquet"]:
            if path.is_file():
                shutil.copyfile(path, out / path.relative_to(src))
        derived = {**meta, "files": _file_hashes(out), "validation": None}
        tmp = out / f".{META}.tmp"
        tmp.write_text(json.dumps(derived, indent=2, default=str) + "\n")
        os.replace(tmp, out / META)
    else:
        cut = int(epoch_seconds(pd.Series([as_of])).iloc[0])
        when = pd.Timestamp(cut, unit="s", tz="UTC")
        writer = SnapshotWriter(out)
        seen: set[str] = set()
        for path in parts:
            table = pq.read_table(path, columns=EVENT_COLUMNS)
            kept = table.filter(pc.less(table.column("timestamp"), cut)).to_pandas()
            kept["timestamp"] = pd.to_datetime(kept["timestamp"], unit="s", utc=True)
            seen.update(kept["item_id"].unique())
            writer.add(kept)
        items = None
        if (src / "items.parquet").is_file():
            items = _read_items(src / "items.parquet")
            created = items["created_at"]
            items = items.loc[created.isna() | (created < when) | items["item_id"].isin(seen)]
        partitions = pd.DataFrame(meta.get("partitions") or [], columns=["dt", "path", "rows"])
        partitions = partitions.loc[pd.to_datetime(partitions["dt"], utc=True) < when]
        users = (
            pq.read_table(src / "users.parquet").to_pandas()
            if (src / "users.parquet").is_file()
            else None
        )
        writer.finish(_Tables(meta, items, users, partitions))
        derived = json.loads((out / META).read_text())
    return {**derived, "first_timestamp": first}


class _Tables:
    """What `SnapshotWriter.finish` reads of a source, from a snapshot's metadata and tables."""

    def __init__(self, meta: dict, items, users, partitions: pd.DataFrame):
        self.root, self.format = meta["source"], meta["format"]
        weight_range = meta.get("weight_range")
        self.weight_range = tuple(weight_range) if weight_range else None
        self.items, self.users, self.partitions = items, users, partitions


def _min_timestamp(parts: list[Path]) -> int | None:
    """The earliest interaction of the part files: from the row groups' column statistics (the
    footers only), reading the column where a row group has none."""
    low = None
    for path in parts:
        parquet = pq.ParquetFile(path)
        column = parquet.schema_arrow.get_field_index("timestamp")
        for group in range(parquet.metadata.num_row_groups):
            meta = parquet.metadata.row_group(group)
            if meta.num_rows == 0:
                continue
            stats = meta.column(column).statistics
            if stats is not None and stats.has_min_max:
                value = stats.min
            else:
                value = pc.min(parquet.read_row_group(group, columns=["timestamp"])[0]).as_py()
            low = value if low is None else min(low, value)
    return low


def _read_items(path: Path) -> pd.DataFrame:
    items = pq.read_table(path).to_pandas()
    items["created_at"] = pd.to_datetime(items["created_at"].astype("Float64"), unit="s", utc=True)
    return items


def read_snapshot(out: str | Path, *, require_validated: bool = False) -> RawSnapshot:
    """Read a snapshot written by `write_snapshot`, after checking every file's sha256
    (`verify_snapshot`). Every row in memory: the feature job reads the files instead.

    Raises:
        DataValidationError: see `verify_snapshot`.
    """
    from pipelines.contract import empty_partitions

    out = Path(out)
    meta = verify_snapshot(out, require_validated=require_validated)
    inter = pq.read_table(out / "interactions").to_pandas()
    inter["timestamp"] = pd.to_datetime(inter["timestamp"], unit="s", utc=True)
    items = users = None
    if (out / "items.parquet").is_file():
        items = _read_items(out / "items.parquet")
    if (out / "users.parquet").is_file():
        users = pq.read_table(out / "users.parquet").to_pandas()
    partitions = pd.DataFrame(meta.get("partitions") or [], columns=["dt", "path", "rows"])
    if partitions.empty:
        partitions = empty_partitions()
    weight_range = meta.get("weight_range")
    return RawSnapshot(
        format=meta["format"], root=meta["source"], interactions=inter, items=items,
        users=users, partitions=partitions, issues=[],
        weight_range=tuple(weight_range) if weight_range else None,
    )  # fmt: skip


def _file_hashes(out: Path) -> dict[str, str]:
    """sha256 of every data file under `out` (not the metadata), keyed by relative path."""
    hashes = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != META and not path.name.startswith("."):
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            hashes[str(path.relative_to(out))] = digest.hexdigest()
    return hashes
