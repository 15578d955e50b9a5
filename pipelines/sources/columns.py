"""Typed interaction blocks gathered into one frame without ever holding two copies of it.

Readers type a file block by block. Concatenating those blocks at the end would hold every
block and the result at once (and the freed blocks rarely go back to the operating system),
so the fixed-width columns are written into arrays sized once, up front, from a cheap count
of the rows to come; strings stay Arrow chunks and repeated values stay categories.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

TIMESTAMP_DTYPE = "datetime64[us, UTC]"
_FIXED = {"timestamp": "datetime64[us]", "weight": np.float64, "source_row": np.int64}
_STRINGS = ("user_id", "item_id")
_CATEGORIES = ("event", "dt", "source_file")
COLUMNS = ("user_id", "item_id", "timestamp", "event", "weight", "dt", "source_file", "source_row")


class InteractionColumns:
    """Collects typed interaction blocks (`normalize_interactions` output) column by column.

    Args:
        capacity: rows expected (an upper bound keeps memory to one copy; more rows still fit,
            at the cost of growing the arrays).
    """

    def __init__(self, capacity: int = 0):
        self.rows = 0
        self._fixed = {name: np.empty(max(capacity, 0), dtype=t) for name, t in _FIXED.items()}
        self._parts: dict[str, list] = {name: [] for name in (*_STRINGS, *_CATEGORIES)}

    def add(self, frame: pd.DataFrame) -> None:
        """Append one typed block (its rows are copied; the block can be dropped)."""
        n = len(frame)
        if n == 0:
            return
        self._reserve(self.rows + n)
        end = self.rows + n
        self._fixed["timestamp"][self.rows : end] = frame["timestamp"].to_numpy(
            dtype="datetime64[us]"
        )
        self._fixed["weight"][self.rows : end] = frame["weight"].to_numpy(dtype=np.float64)
        self._fixed["source_row"][self.rows : end] = frame["source_row"].to_numpy(dtype=np.int64)
        for name in _STRINGS:
            self._parts[name].append(frame[name].astype(str))
        for name in _CATEGORIES:
            values = frame[name]
            self._parts[name].append(
                values.array
                if isinstance(values.dtype, pd.CategoricalDtype)
                else pd.Categorical(values)
            )
        self.rows = end

    def frame(self) -> pd.DataFrame:
        """The interactions collected so far, in the contract's column order and types."""
        if self.rows == 0:
            return empty_interactions()
        columns = {}
        for name in COLUMNS:
            if name in _FIXED:
                values = self._fixed[name][: self.rows]
                if name == "timestamp":  # the same memory, read as UTC
                    values = pd.DatetimeIndex(
                        values.view(np.int64), dtype=TIMESTAMP_DTYPE, copy=False
                    )
                columns[name] = pd.Series(values, copy=False)
            elif name in _STRINGS:
                columns[name] = pd.concat(self._parts[name], ignore_index=True)
            else:
                columns[name] = pd.Series(pd.api.types.union_categoricals(self._parts[name]))
        return pd.DataFrame(columns, copy=False)

    def _reserve(self, rows: int) -> None:
        capacity = len(self._fixed["weight"])
        if rows <= capacity:
            return
        grown = max(rows, int(capacity * 1.5) + 1024)
        for name, values in self._fixed.items():
            bigger = np.empty(grown, dtype=values.dtype)
            bigger[: self.rows] = values[: self.rows]
            self._fixed[name] = bigger


def empty_interactions() -> pd.DataFrame:
    """A zero-row interactions frame with the contract's columns and types."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=str),
            "item_id": pd.Series([], dtype=str),
            "timestamp": pd.Series([], dtype=TIMESTAMP_DTYPE),
            "event": pd.Series([], dtype=str).astype("category"),
            "weight": pd.Series([], dtype=float),
            "dt": pd.Series([], dtype=str).astype("category"),
            "source_file": pd.Series([], dtype=str).astype("category"),
            "source_row": pd.Series([], dtype=np.int64),
        }
    )


def count_rows(paths: list[Path]) -> int:
    """An upper bound on the rows in these files: Parquet metadata, text line counts.

    Unreadable files count 0 (their readers report them).
    """
    total = 0
    for path in paths:
        try:
            if path.suffix == ".parquet":
                total += pq.ParquetFile(path).metadata.num_rows
            else:
                total += _count_lines(path)
        except Exception:  # noqa: BLE001 (the reader that follows names the problem)
            continue
    return total


def _count_lines(path: Path) -> int:
    lines, last = 0, b""
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (1 if last not in (b"", b"\n") else 0)
