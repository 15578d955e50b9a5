"""A source read as a stream: the small tables whole, the interactions in bounded batches.

`RawSnapshot` holds every interaction at once, which a 20M-event source cannot afford in a
step that only needs to look at each row once (the raw checks, writing the snapshot). A
`SourceScan` holds the items, users and partition list, and hands out the typed interaction
rows batch by batch, in source order; what the readers find along the way (read issues, rows
per partition) is complete once the batches are exhausted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pandas as pd

from pipelines.contract import RawSnapshot, ReadIssue, empty_partitions, merge_issues
from pipelines.sources.columns import InteractionColumns, empty_interactions

# Interactions per batch: bounds what the raw checks and the snapshot writer hold at once.
BATCH_ROWS = 1 << 18


@dataclasses.dataclass
class SourceScan:
    """A source normalized to the contract, its interactions still to be read.

    Attributes:
        format, root, items, users, weight_range, table_files: as in `RawSnapshot`.
        partitions: `dt`, `path`, `rows`; `rows` counts what `batches` has yielded so far, so
            it is complete once a pass has ended.
        blocks: starts a pass over the source's typed interaction blocks (the
            `RawSnapshot.interactions` columns), in source order; a block never spans files.
        issue_lists: read issues in report order (e.g. listing, interactions, items, users);
            the readers append to them as they go.
        sample_rows: offending rows quoted per issue.
        capacity: an upper bound on the interaction rows, counted only when collecting.
    """

    format: str
    root: str
    items: pd.DataFrame | None
    users: pd.DataFrame | None
    partitions: pd.DataFrame
    blocks: Callable[[], Iterator[pd.DataFrame]]
    issue_lists: list[list[ReadIssue]]
    sample_rows: int = 5
    weight_range: tuple[float, float] | None = None
    table_files: dict[str, str] = dataclasses.field(default_factory=dict)
    capacity: Callable[[], int] = lambda: 0

    @classmethod
    def of_snapshot(cls, snapshot: RawSnapshot) -> SourceScan:
        """A scan over a snapshot already in memory (the MovieLens readers, tests)."""
        inter = snapshot.interactions
        return cls(
            format=snapshot.format,
            root=snapshot.root,
            items=snapshot.items,
            users=snapshot.users,
            partitions=snapshot.partitions,
            blocks=lambda: iter([inter]) if len(inter) else iter([]),
            issue_lists=[list(snapshot.issues)],
            weight_range=snapshot.weight_range,
            table_files=dict(snapshot.table_files),
            capacity=lambda: len(inter),
        )

    @property
    def is_partitioned(self) -> bool:
        return not self.partitions.empty

    @property
    def issues(self) -> list[ReadIssue]:
        """The read issues found so far, one per (table, file, column, rule)."""
        return merge_issues([i for issues in self.issue_lists for i in issues], self.sample_rows)

    def batches(self, max_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """The typed interactions in source order, `max_rows` rows at most per batch.

        Small blocks (one partition file each) are joined up to `max_rows`, so a source of many
        small files costs few batches. Each pass reads the source again and recounts
        `partitions.rows`.

        Yields:
            Frames with the `RawSnapshot.interactions` columns and a fresh RangeIndex.
        """
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        rows_per_day: dict[str, int] = {}
        pending: list[pd.DataFrame] = []
        held = 0
        for block in self.blocks():
            if self.is_partitioned and len(block):
                for day, n in block["dt"].value_counts(sort=False).items():
                    rows_per_day[str(day)] = rows_per_day.get(str(day), 0) + int(n)
            start = 0
            while start < len(block):
                take = min(max_rows - held, len(block) - start)
                pending.append(block.iloc[start : start + take])
                held += take
                start += take
                if held == max_rows:
                    yield join_blocks(pending)
                    pending, held = [], 0
        if pending:
            yield join_blocks(pending)
        if self.is_partitioned:
            self.partitions = self.partitions.assign(
                rows=[rows_per_day.get(str(day), 0) for day in self.partitions["dt"]]
            )

    def collect(self) -> RawSnapshot:
        """Read every interaction into one `RawSnapshot` (one copy: see `InteractionColumns`)."""
        columns = InteractionColumns(self.capacity())
        for block in self.blocks():
            columns.add(block)
        frame = columns.frame()
        if self.is_partitioned:
            counts = frame["dt"].value_counts(sort=False) if len(frame) else pd.Series(dtype=int)
            self.partitions = self.partitions.assign(
                rows=[int(counts.get(day, 0)) for day in self.partitions["dt"]]
            )
        return RawSnapshot(
            format=self.format,
            root=self.root,
            interactions=frame,
            items=self.items,
            users=self.users,
            partitions=self.partitions if self.is_partitioned else empty_partitions(),
            issues=self.issues,
            weight_range=self.weight_range,
            table_files=self.table_files,
        )


def join_blocks(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    """Typed interaction blocks as one frame; categories are unioned so they stay categories."""
    if len(blocks) == 1:
        return blocks[0].reset_index(drop=True)
    if not blocks:
        return empty_interactions()
    columns = {}
    for name in blocks[0].columns:
        parts = [b[name] for b in blocks]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            columns[name] = pd.Series(pd.api.types.union_categoricals([p.array for p in parts]))
        else:
            columns[name] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns)
