"""Reader for data that already follows the contract (Parquet or CSV, date-partitioned).

Layout (see docs/data_contract.md)::

    <root>/interactions/dt=YYYY-MM-DD/*.parquet|*.csv   (or <root>/interactions.parquet|.csv)
    <root>/items.parquet|.csv
    <root>/users.parquet|.csv                            (optional)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipelines.contract import (
    DEFAULT_EVENT,
    PARTITION_PATTERN,
    RawSnapshot,
    ReadIssue,
    empty_partitions,
)
from pipelines.errors import SourceError
from pipelines.sources.normalize import (
    TIMESTAMP_DTYPE,
    normalize_interactions,
    normalize_items,
    normalize_users,
)
from pipelines.sources.text import read_delimited

TABLE_SUFFIXES = (".parquet", ".csv")


def read_contract(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """Read a contract-layout directory into a `RawSnapshot`.

    Raises:
        SourceError: the directory has neither `interactions/` nor an `interactions` file.
    """
    issues: list[ReadIssue] = []
    frames: list[pd.DataFrame] = []
    partition_rows: list[dict] = []
    part_dir = root / "interactions"
    if part_dir.is_dir():
        for child in sorted(part_dir.iterdir()):
            if not child.is_dir():
                continue
            match = PARTITION_PATTERN.match(child.name)
            if match is None or not _is_date(match.group(1)):
                issues.append(
                    ReadIssue(
                        table="interactions",
                        file=str(child),
                        column=None,
                        rule="partition directories must be named dt=YYYY-MM-DD",
                        count=1,
                    )
                )
                continue
            day = match.group(1)
            rows = 0
            for path in sorted(p for p in child.iterdir() if p.suffix in TABLE_SUFFIXES):
                frame = _read_interactions_file(path, day, issues, sample_rows)
                if frame is not None:
                    frames.append(frame)
                    rows += len(frame)
            partition_rows.append({"dt": day, "path": str(child), "rows": rows})
    else:
        path = _table_file(root, "interactions")
        if path is None:
            raise SourceError(
                f"{root}: no interactions found; expected {root}/interactions/dt=YYYY-MM-DD/*.parquet "
                f"(or interactions.parquet / interactions.csv)"
            )
        frame = _read_interactions_file(path, None, issues, sample_rows)
        if frame is not None:
            frames.append(frame)

    items = _read_table(root, "items", normalize_items, issues, sample_rows, required=True)
    users = _read_table(root, "users", normalize_users, issues, sample_rows, required=False)
    table_files = {t: str(p) for t in ("items", "users") if (p := _table_file(root, t)) is not None}
    partitions = pd.DataFrame(partition_rows) if partition_rows else empty_partitions()
    return RawSnapshot(
        format="contract",
        root=str(root),
        interactions=concat_interactions(frames),
        items=items,
        users=users,
        partitions=partitions,
        issues=issues,
        table_files=table_files,
    )


def concat_interactions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-file interaction frames; `source_file` becomes a category."""
    if not frames:
        return pd.DataFrame(
            {
                "user_id": pd.Series([], dtype=str),
                "item_id": pd.Series([], dtype=str),
                "timestamp": pd.Series([], dtype=TIMESTAMP_DTYPE),
                "event": pd.Series([], dtype=str),
                "weight": pd.Series([], dtype=float),
                "dt": pd.Series([], dtype=object),
                "source_file": pd.Series([], dtype="category"),
                "source_row": pd.Series([], dtype=np.int64),
            }
        )
    out = pd.concat(frames, ignore_index=True)
    out["source_file"] = out["source_file"].astype("category")
    return out


def _read_interactions_file(path: Path, day: str | None, issues: list, sample_rows: int):
    loaded = read_any(path, "interactions", issues, sample_rows)
    if loaded is None:
        return None
    frame, rows, label = loaded
    return normalize_interactions(
        frame,
        file=str(path),
        rows=rows,
        row_label=label,
        partition=day,
        default_event=DEFAULT_EVENT,
        issues=issues,
        sample_rows=sample_rows,
    )


def _read_table(
    root: Path, table: str, normalize, issues: list, sample_rows: int, *, required: bool
):
    path = _table_file(root, table)
    if path is None:
        if required:
            issues.append(
                ReadIssue(
                    table=table,
                    file=str(root / f"{table}.parquet"),
                    column=None,
                    rule=f"the {table} table is required ({table}.parquet or {table}.csv)",
                    count=1,
                )
            )
        return None
    loaded = read_any(path, table, issues, sample_rows)
    if loaded is None:
        return None
    frame, rows, label = loaded
    return normalize(
        frame, file=str(path), rows=rows, row_label=label, issues=issues, sample_rows=sample_rows
    )


def read_any(path: Path, table: str, issues: list, sample_rows: int):
    """Read one Parquet or CSV file as-is.

    Returns:
        (frame, row numbers `[n]`, "row" or "line"), or None if the file cannot be read at all
        (reported in `issues`).
    """
    if path.suffix == ".parquet":
        try:
            frame = pq.read_table(path).to_pandas()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            issues.append(
                ReadIssue(
                    table=table,
                    file=str(path),
                    column=None,
                    rule=f"file must be readable Parquet ({exc})",
                    count=1,
                )
            )
            return None
        return frame, np.arange(len(frame), dtype=np.int64), "row"
    text = read_delimited(path, table=table, sep=",", sample_rows=sample_rows)
    issues.extend(text.issues)
    return text.frame, text.lines, "line"


def _table_file(root: Path, table: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        if (root / f"{table}{suffix}").is_file():
            return root / f"{table}{suffix}"
    return None


def _is_date(text: str) -> bool:
    try:
        pd.Timestamp(text)
    except ValueError:
        return False
    return True
