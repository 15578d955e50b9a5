"""Duplicate rows of a table that arrives in batches, counted as if it were one frame.

Great Expectations' `expect_compound_columns_to_be_unique` marks every row of a duplicate group
(`DataFrame.duplicated(keep=False)`), so it needs the whole table. Here each row is reduced to a
64-bit hash of its key columns (8 bytes a row: 160 MB for 20M rows), the hashes are sorted once
at the end, and the rows whose hash occurs more than once are the duplicates. Two different keys
share a hash with probability about n² / 2⁶⁵ (1e-5 for 20M rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def key_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """uint64 `[n]`: one hash of each row's `columns`, equal for equal values (missing included)
    whatever the batch (categories are hashed by value, not code)."""
    return pd.util.hash_pandas_object(frame[columns], index=False).to_numpy(np.uint64)


class DuplicateCounter:
    """Rows of a batched table whose key occurs more than once in the whole table.

    Args:
        columns: the key columns.
    """

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        self._hashes: list[np.ndarray] = []
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Count one batch (rows are numbered on from the batches before it)."""
        self._hashes.append(key_hashes(frame, self.columns))
        self.rows += len(frame)

    def duplicates(self, first: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Rows in duplicate groups, counted over every batch added.

        Args:
            first: how many duplicate rows to locate.

        Returns:
            (count, int64 `[<=first]` positions of the first duplicate rows in table order,
            uint64 `[<=first]` their hashes, to recognise them when the table is read again).
        """
        if not self._hashes:
            return 0, np.zeros(0, np.int64), np.zeros(0, np.uint64)
        hashes = np.concatenate(self._hashes)
        self._hashes = [hashes]
        ordered = np.sort(hashes)
        repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        del ordered
        if not len(repeated):
            return 0, np.zeros(0, np.int64), np.zeros(0, np.uint64)
        is_duplicate = np.isin(hashes, repeated)
        positions = np.flatnonzero(is_duplicate)
        return int(len(positions)), positions[:first], hashes[positions[:first]]
