"""The popularity fallback served to users the model knows nothing about: the last week's most
interacted catalog items, then the window's, then the rest of the catalog."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.serving.events import SortedEvents, take

POPULAR_DAYS = 7
POPULAR_ITEMS = 1000


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
        self.catalog_array = pa.array(sorted(catalog), type=pa.string())
        self.recent_from = recent_from
        self.recent = self.window = None

    def add(self, ev: SortedEvents) -> None:
        """Count one shard's events (sorted: `sorted_events`)."""
        in_catalog = pc.is_in(ev.item_names, value_set=self.catalog_array).to_numpy(
            zero_copy_only=False
        )[ev.item_codes]
        users = ev.user_names.to_numpy(zero_copy_only=False)
        recent = in_catalog & (ev.t >= self.recent_from)
        self.recent = _merge(self.recent, _first_and_count(ev, users, recent))
        self.window = _merge(self.window, _first_and_count(ev, users, in_catalog))

    def ranking(self, n: int = POPULAR_ITEMS) -> list[str]:
        """The fallback: this week's most interacted items, the window's, then the catalog."""
        return fallback_ranking(_ranked(self.recent), _ranked(self.window), self.catalog, n)


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


def _merge(a: pd.DataFrame | None, b: pd.DataFrame) -> pd.DataFrame:
    """Counts summed per item, first appearance = the earlier of the two."""
    if a is None:
        return b
    both = pd.concat([a, b], ignore_index=True).sort_values(
        ["item", "first_user", "first_t"], kind="stable"
    )
    grouped = both.groupby("item", sort=True)
    first = grouped[["first_user", "first_t"]].first()
    return first.assign(count=grouped["count"].sum()).reset_index()[list(b.columns)]


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
