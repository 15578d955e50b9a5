"""The data contract: what every source is normalized into (see docs/data_contract.md).

A `RawSnapshot` holds three tables with fixed column names and types, plus where every
interaction row came from (file and line/row) so checks can point people at the exact row,
and the problems met while reading (`ReadIssue`), which the raw checks report with their own.
"""

from __future__ import annotations

import dataclasses
import re

import pandas as pd

GENRE_SEPARATOR = "|"
PARTITION_PATTERN = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")

INTERACTION_REQUIRED = ("user_id", "item_id", "timestamp")
INTERACTION_OPTIONAL = ("event", "weight")
ITEM_REQUIRED = ("item_id", "title", "genres")
ITEM_OPTIONAL = ("created_at",)
USER_REQUIRED = ("user_id",)

# Provenance columns added by the readers (not part of the contract itself).
SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
PARTITION = "dt"

INTERACTION_COLUMNS = (*INTERACTION_REQUIRED, *INTERACTION_OPTIONAL)
DEFAULT_EVENT = "interaction"


@dataclasses.dataclass(frozen=True)
class ReadIssue:
    """A contract rule broken while reading a file (before any row-level check can run).

    Attributes:
        table: "interactions", "items" or "users".
        file: path of the offending file (or directory).
        column: column concerned, or None for file-level problems.
        rule: the rule broken, in words ("text must be UTF-8").
        count: how many rows/lines broke it.
        samples: a few locations with their content ("line 12: '1::2::x'").
    """

    table: str
    file: str
    column: str | None
    rule: str
    count: int
    samples: tuple[str, ...] = ()


@dataclasses.dataclass
class RawSnapshot:
    """A source normalized to the contract.

    Attributes:
        format: detected or given source format ("contract", "ml-100k", "ml-1m", "ml-latest").
        root: the source directory.
        interactions: columns `user_id` (str), `item_id` (str), `timestamp` (datetime64[us, UTC]),
            `event` (category of str), `weight` (float64), `dt` (category: the partition
            date string, missing for unpartitioned sources), `source_file` (category),
            `source_row` (int64: 1-based line for text files, 0-based row for Parquet).
            Repeated values are categories so a large source costs little more than its
            ids, timestamps and weights.
        items: columns `item_id`, `title`, `genres` ("|"-joined), `created_at` (datetime UTC,
            may be NaT) and any extra attribute columns.
        users: `user_id` plus categorical feature columns (strings), or None.
        partitions: one row per landing partition: `dt`, `path`, `rows` (empty for
            unpartitioned sources).
        issues: problems found while reading; rows that could not be typed are not in the
            tables above and are counted here instead.
        weight_range: (min, max) a rating can take in this format, or None to use the config.
        table_files: "items" / "users" (and "interactions" for single-file formats) -> the
            file each table was read from.
    """

    format: str
    root: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    partitions: pd.DataFrame
    issues: list[ReadIssue]
    weight_range: tuple[float, float] | None = None
    table_files: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def is_partitioned(self) -> bool:
        return not self.partitions.empty

    def as_of(self, when: pd.Timestamp) -> RawSnapshot:
        """The source as it stood at `when` (UTC): earlier interactions; items created before it,
        with no `created_at`, or already interacted with; partitions whose day starts before it."""
        inter = self.interactions.loc[self.interactions["timestamp"] < when]
        items = self.items
        if items is not None:
            created = items["created_at"]
            known = created.isna() | (created < when) | items["item_id"].isin(inter["item_id"])
            items = items.loc[known]
        parts = self.partitions
        parts = parts.loc[pd.to_datetime(parts["dt"], utc=True) < when]
        return dataclasses.replace(self, interactions=inter, items=items, partitions=parts)


def empty_partitions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dt": pd.Series([], dtype=str),
            "path": pd.Series([], dtype=str),
            "rows": pd.Series([], dtype="int64"),
        }
    )


def merge_issues(issues: list[ReadIssue], sample_rows: int) -> list[ReadIssue]:
    """One issue per (table, file, column, rule): counts summed, the first samples kept.

    Files are read in blocks, so the same rule can be broken in several blocks of one file.
    """
    merged: dict[tuple, ReadIssue] = {}
    for issue in issues:
        key = (issue.table, issue.file, issue.column, issue.rule)
        seen = merged.get(key)
        if seen is None:
            merged[key] = issue
        else:
            merged[key] = dataclasses.replace(
                seen,
                count=seen.count + issue.count,
                samples=(seen.samples + issue.samples)[:sample_rows],
            )
    return list(merged.values())
