"""Reader for data that already follows the contract (Parquet or CSV, date-partitioned).

Layout (see docs/data_contract.md)::

    <root>/interactions/dt=YYYY-MM-DD/*.parquet|*.csv   (or <root>/interactions.parquet|.csv)
    <root>/items.parquet|.csv
    <root>/users.parquet|.csv                            (optional)

Interaction files are read block by block (text) or batch by batch (Parquet) and typed as they
are read, so memory follows the typed snapshot, not the size of the files.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from pipelines.sources.columns import count_rows
from pipelines.sources.normalize import (
    canonical_names,
    normalize_interactions,
    normalize_items,
    normalize_users,
)
from pipelines.sources.scan import SourceScan
from pipelines.sources.text import DelimitedFile

TABLE_SUFFIXES = (".parquet", ".csv")
PARQUET_BATCH_ROWS = 1 << 20
# Files a partition may hold besides data: Hadoop/Spark markers and checksums, hidden files.
_IGNORED_PREFIXES = ("_", ".")


def read_contract(root: Path, *, sample_rows: int = 5) -> RawSnapshot:
    """Read a contract-layout directory into a `RawSnapshot` (`scan_contract`, collected).

    Raises:
        SourceError: the directory has neither `interactions/` nor an `interactions` file.
    """
    return scan_contract(root, sample_rows=sample_rows).collect()


def scan_contract(root: Path, *, sample_rows: int = 5) -> SourceScan:
    """A contract-layout directory as a `SourceScan`: listing, items and users read now, the
    interaction files block by block on each pass.

    Raises:
        SourceError: the directory has neither `interactions/` nor an `interactions` file.
    """
    listing_issues: list[ReadIssue] = []
    files: list[tuple[Path, str | None]] = []  # (interactions file, its dt= day)
    partition_days: list[tuple[str, Path]] = []
    part_dir = root / "interactions"
    if part_dir.is_dir():
        for child in _listing(part_dir, listing_issues):
            if not child.is_dir():
                if not child.name.startswith(_IGNORED_PREFIXES):  # would be dropped unread
                    listing_issues.append(ReadIssue(
                        table="interactions", file=str(child), column=None, count=1,
                        rule="interactions/ holds only dt=YYYY-MM-DD partition directories "
                        "(move this file into its day's partition)",
                    ))  # fmt: skip
                continue
            match = PARTITION_PATTERN.match(child.name)
            if match is None or not _is_date(match.group(1)):
                listing_issues.append(
                    ReadIssue(
                        table="interactions",
                        file=str(child),
                        column=None,
                        rule="partition directories must be named dt=YYYY-MM-DD",
                        count=1,
                    )
                )
                continue
            partition_days.append((match.group(1), child))
            files.extend((path, match.group(1)) for path in _partition_files(child, listing_issues))
    else:
        path = _table_file(root, "interactions")
        if path is None:
            raise SourceError(
                f"{root}: no interactions found; expected {root}/interactions/dt=YYYY-MM-DD/*.parquet "
                f"(or interactions.parquet / interactions.csv)"
            )
        files.append((path, None))

    table_issues: list[ReadIssue] = []
    items = _read_table(root, "items", normalize_items, table_issues, sample_rows, required=True)
    users = _read_table(root, "users", normalize_users, table_issues, sample_rows, required=False)
    table_files = {t: str(p) for t in ("items", "users") if (p := _table_file(root, t)) is not None}
    partitions = (
        pd.DataFrame([{"dt": day, "path": str(child), "rows": 0} for day, child in partition_days])
        if partition_days
        else empty_partitions()
    )
    interaction_issues: list[ReadIssue] = []

    def blocks() -> Iterator[pd.DataFrame]:
        interaction_issues.clear()  # each pass finds them again
        for path, day in files:
            yield from _read_interactions_file(path, day, interaction_issues, sample_rows)

    return SourceScan(
        format="contract",
        root=str(root),
        items=items,
        users=users,
        partitions=partitions,
        blocks=blocks,
        issue_lists=[listing_issues, interaction_issues, table_issues],
        sample_rows=sample_rows,
        table_files=table_files,
        capacity=lambda: count_rows([path for path, _ in files]),
    )


def _read_interactions_file(
    path: Path, day: str | None, issues: list, sample_rows: int
) -> Iterator[pd.DataFrame]:
    """The typed rows of one interactions file, block by block."""
    for frame, rows, label in iter_table(path, "interactions", issues, sample_rows):
        typed = normalize_interactions(
            frame,
            file=str(path),
            rows=rows,
            row_label=label,
            partition=day,
            default_event=DEFAULT_EVENT,
            issues=issues,
            sample_rows=sample_rows,
        )
        if typed is not None:  # None: a required column is missing (reported, rows counted)
            yield typed


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
    """Read one whole Parquet or CSV file as-is (for the small tables).

    Returns:
        (frame, row numbers `[n]`, "row" or "line"), or None if the file cannot be read at all
        (reported in `issues`).
    """
    chunks = list(iter_table(path, table, issues, sample_rows))
    if not chunks:
        return None
    label = chunks[0][2]
    frame = pd.concat([c[0] for c in chunks], ignore_index=True)
    return frame, np.concatenate([c[1] for c in chunks]), label


def iter_table(
    path: Path, table: str, issues: list, sample_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray, str]]:
    """One Parquet or CSV file as (frame, row numbers `[n]`, "row" or "line") blocks.

    Column names are made canonical (`canonical_names`); problems go to `issues`.
    """
    if path.suffix == ".parquet":
        yield from _iter_parquet(path, table, issues)
        return
    text = DelimitedFile(path, table=table, sep=",", sample_rows=sample_rows)
    try:
        for chunk in text.chunks():
            yield chunk.frame, chunk.lines, "line"
    finally:
        issues.extend(text.issues)


def _iter_parquet(path: Path, table: str, issues: list):
    def refuse(rule: str) -> None:
        issues.append(ReadIssue(table=table, file=str(path), column=None, rule=rule, count=1))

    offset = 0
    try:  # pyarrow raises several types for unreadable or corrupt files
        parquet = pq.ParquetFile(path)
        names, clashes = canonical_names(parquet.schema_arrow.names)
        if clashes:
            refuse(
                f"column names must be unique ignoring case and surrounding spaces ({'; '.join(clashes)})"
            )
            return
        if parquet.metadata.num_rows == 0:
            frame = parquet.schema_arrow.empty_table().to_pandas()
            frame.columns = names
            yield frame, np.zeros(0, dtype=np.int64), "row"
            return
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            frame = batch.to_pandas()
            frame.columns = names
            yield frame, np.arange(offset, offset + len(frame), dtype=np.int64), "row"
            offset += len(frame)
    except Exception as exc:
        where = f" after row {offset - 1}" if offset else ""
        refuse(f"the file must be readable Parquet{where} ({_one_line(exc)})")


def _listing(directory: Path, issues: list) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError as exc:
        issues.append(
            ReadIssue(
                table="interactions",
                file=str(directory),
                column=None,
                rule=f"the directory must be readable ({exc.strerror or exc})",
                count=1,
            )
        )
        return []


def _partition_files(partition: Path, issues: list) -> list[Path]:
    """The data files of one dt= partition; any other file is reported, not skipped quietly."""
    files = []
    for path in _listing(partition, issues):
        if path.name.startswith(_IGNORED_PREFIXES):
            continue
        if path.suffix in TABLE_SUFFIXES and path.is_file():
            files.append(path)
            continue
        issues.append(
            ReadIssue(
                table="interactions",
                file=str(path),
                column=None,
                rule="partition files must be *.parquet or *.csv files "
                "(this one would not be read; remove it or convert it)",
                count=1,
            )
        )
    return files


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


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"
