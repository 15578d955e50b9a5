"""The popularity fallback served to users the model knows nothing about: the last week's most
interacted catalog items, then the window's, then the rest of the catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.serving.events import SortedEvents, take

POPULAR_DAYS = 7
POPULAR_ITEMS = 1000
MERGE_ROWS = 2_000_000  # per-item rows of several shards merged at once


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
        # hashed once here, looked up by every shard
        self.catalog_index = pd.Index(sorted(catalog), dtype=object)
        self.recent_from = recent_from
        self.recent, self.window = _Counts(), _Counts()

    def add(self, ev: SortedEvents) -> None:
        """Count one shard's events."""
        names = ev.item_names.to_numpy(zero_copy_only=False)
        in_catalog = (self.catalog_index.get_indexer(names) >= 0)[ev.item_codes]
        users = ev.user_names.to_numpy(zero_copy_only=False)
        recent = in_catalog & (ev.t >= self.recent_from)
        self.recent.add(_first_and_count(ev, users, recent))
        self.window.add(_first_and_count(ev, users, in_catalog))

    def ranking(self, n: int = POPULAR_ITEMS) -> list[str]:
        """The fallback: this week's most interacted items, the window's, then the catalog."""
        recent, window = self.recent.ranked(), self.window.ranked()
        return fallback_ranking(recent, window, self.catalog, n)


class _Counts:
    """Per-item (count, first appearance) frames of several shards, merged a few at a time:
    one merge sorts the items seen so far, so merging after every small shard would sort the
    catalog once per shard."""

    def __init__(self):
        self.merged: pd.DataFrame | None = None
        self.pending: list[pd.DataFrame] = []
        self.pending_rows = 0

    def add(self, counts: pd.DataFrame) -> None:
        self.pending.append(counts)
        self.pending_rows += len(counts)
        if self.pending_rows >= MERGE_ROWS:
            self._fold()

    def ranked(self) -> list[str]:
        """Items by count (descending), ties by first appearance."""
        self._fold()
        return _ranked(self.merged)

    def _fold(self) -> None:
        frames = ([self.merged] if self.merged is not None else []) + self.pending
        self.merged = _merge(frames) if frames else None
        self.pending, self.pending_rows = [], 0


def _first_and_count(ev: SortedEvents, users: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Per item among the rows `keep`: its count and its first row's (user, timestamp)."""
    rows = np.flatnonzero(keep)
    codes, first, count = np.unique(ev.item_codes[rows], return_index=True, return_counts=True)
    first = rows[first]
    return pd.DataFrame(
        {
            "item": take(ev.item_names, codes).to_numpy(zero_copy_only=False),
            "count": count.astype(np.int64),
            "first_user": users[ev.user_codes[first]],
            "first_t": ev.t[first],
        }
    )


def _merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Counts summed per item, first appearance = the earliest."""
    if len(frames) == 1:
        return frames[0]
    every = pd.concat(frames, ignore_index=True).sort_values(
        ["item", "first_user", "first_t"], kind="stable"
    )
    grouped = every.groupby("item", sort=True)
    first = grouped[["first_user", "first_t"]].first()
    return first.assign(count=grouped["count"].sum()).reset_index()[list(frames[0].columns)]


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
