"""Item catalog (content, popularity, logQ sampling probability) and vocabularies.

The sampling probability estimates how often an item shows up as an in-batch candidate: its
share of training examples, with additive smoothing so items unseen in training keep a finite
log-probability. The retrieval loss subtracts log(p) from each candidate's logit (logQ
correction) so popular items are not over-penalised as negatives. Probabilities sum to 1 over
the whole catalog.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipelines import schema
from pipelines.config import FeaturesConfig
from pipelines.contract import GENRE_SEPARATOR

_TOKEN = re.compile(r"[^\W_]+")


def title_tokens(title: str) -> list[str]:
    """Lower-cased word tokens of a title: "Toy Story (1995)" -> ["toy", "story", "1995"]."""
    return _TOKEN.findall(title.lower()) if isinstance(title, str) else []


def build_catalog(
    items: pd.DataFrame | None, train_counts: pd.Series, smoothing: float
) -> pd.DataFrame:
    """Every item with its content features, training popularity and sampling probability.

    Args:
        items: the items table (`item_id, title, genres, created_at`, extras), or None.
        train_counts: training-period interactions per item id.
        smoothing: added to every count before normalising (must be > 0).

    Returns:
        Sorted by `item_id`: `item_id, title, genres, created_at, title_tokens` (list),
        `genre_list` (list), `train_count`, `sampling_probability`, `popularity_bucket`
        (floor(log2(1 + count))), `in_items_table`.
    """
    known = (
        items
        if items is not None
        else pd.DataFrame(columns=["item_id", "title", "genres", "created_at"])
    )
    known = known.drop_duplicates("item_id").set_index("item_id")
    ids = sorted(set(known.index) | set(train_counts.index))
    catalog = pd.DataFrame({"item_id": ids})
    content = known.reindex(ids)
    catalog["title"] = content["title"].fillna("").astype(str).to_numpy()
    catalog["genres"] = content["genres"].fillna("").astype(str).to_numpy()
    catalog["created_at"] = content["created_at"].to_numpy() if "created_at" in content else None
    catalog["title_tokens"] = [title_tokens(t) for t in catalog["title"]]
    catalog["genre_list"] = [[g for g in s.split(GENRE_SEPARATOR) if g] for s in catalog["genres"]]
    counts = train_counts.reindex(ids, fill_value=0).to_numpy(np.int64)
    catalog["train_count"] = counts
    smoothed = counts + smoothing
    catalog["sampling_probability"] = smoothed / smoothed.sum()
    catalog["popularity_bucket"] = np.floor(np.log2(1 + counts)).astype(np.int64)
    catalog["in_items_table"] = catalog["item_id"].isin(known.index).to_numpy()
    return catalog


def build_vocabularies(
    catalog: pd.DataFrame, user_counts: pd.Series, cfg: FeaturesConfig
) -> dict[str, pd.DataFrame]:
    """Vocabularies with counts, most frequent first (ties by value), min counts applied.

    Returns:
        name -> DataFrame `value, count` for "user_id", "item_id" (training counts),
        "genre" and "title_token" (number of catalog items carrying them).
    """

    def table(counts: pd.Series, min_count: int) -> pd.DataFrame:
        frame = pd.DataFrame(
            {"value": counts.index.astype(str), "count": counts.to_numpy(np.int64)}
        )
        frame = frame[frame["count"] >= min_count]
        return frame.sort_values(
            ["count", "value"], ascending=[False, True], kind="stable"
        ).reset_index(drop=True)

    items = pd.Series(catalog["train_count"].to_numpy(), index=catalog["item_id"])
    return {
        schema.USER_ID: table(user_counts, cfg.user_min_count),
        schema.ITEM_ID: table(items[items > 0], cfg.item_min_count),
        schema.GENRE: table(catalog["genre_list"].explode().dropna().value_counts(), 1),
        schema.TITLE_TOKEN: table(
            catalog["title_tokens"].explode().dropna().value_counts(), cfg.token_min_count
        ),
    }
