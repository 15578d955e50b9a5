"""Top-K recommendations from a served directory (usually the production bundle).

Known users get a query vector from their point-in-time history and features at the bundle's
data window end; users with neither history nor features fall back to the recent popularity
ranking (marked `"source": "popularity"`), never an error. The state is read one user shard at
a time (`pipelines.serving.ServingState`) and `recommend_stream` answers a file of users batch
by batch, so memory does not grow with the number of users asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import numpy as np

from pipelines.errors import UsageError
from pipelines.registry import MANIFEST, verify_bundle_dir
from pipelines.schema import (
    HISTORY_ITEM_IDS,
    HISTORY_TIMESTAMPS,
    SEEN_ITEM_IDS,
    TIMESTAMP,
    USER_FEATURE_PREFIX,
    USER_ID,
)
from pipelines.serving import ServingModel, ServingState, read_popular

STREAM_BATCH = 4096  # users answered at a time by `recommend_stream`


class Recommender:
    """Loaded once, then `recommend` any number of users.

    A registry bundle (a directory whose `manifest.json` has a content hash) is checked against
    that hash before its SavedModel is loaded (BundleIntegrityError on a mismatch).

    Args:
        directory: a served directory (`pipelines.serving`); its user state is read one user
            shard at a time, only for the users asked for (`ServingState`).
        at: the query time (epoch seconds); default: the data window end in the directory's
            `manifest.json`, else one second after the newest history event of the users in
            each `recommend` call.
    """

    def __init__(self, directory: str | Path, at: int | None = None):
        verify_bundle_dir(directory)  # loading runs the bundle's graph: only what was published
        self.model = ServingModel(directory)
        self.state = ServingState(directory)
        self.popular = read_popular(directory)
        manifest = Path(directory) / MANIFEST
        self.at = at
        if self.at is None:
            meta = json.loads(manifest.read_text()) if manifest.exists() else {}
            self.at = int(meta.get("data_window", {}).get("window_end", 0)) or None
        self.feature_names = [
            n for n in self.model.inputs if n.startswith(USER_FEATURE_PREFIX) and n != USER_ID
        ]
        self.h = self.state.max_history or 1

    def recommend(self, user_ids: list[str], k: int = 10, exclude_seen: bool = True) -> list[dict]:
        """One `{"user_id", "source", "items": [{"item_id", "score"}]}` per user, in order.

        Model results hold at most `k` items (fewer when the catalog minus the user's seen
        items is smaller); the popularity fallback's scores are None.

        Raises:
            UsageError: `k` < 1.
        """
        if k < 1:
            raise UsageError(f"--k must be >= 1, got {k}")
        rows = self.state.lookup(user_ids)
        known = list(rows.index)
        results = {}
        if known:
            vectors = self.model.embed(self._query_features(known, rows))
            exclude = (
                [self.model.rows(seen) for seen in rows[SEEN_ITEM_IDS]] if exclude_seen else None
            )
            found, scores = self.model.index.search(vectors, k, exclude=exclude)
            for user, r, s in zip(known, found, scores, strict=True):
                keep = r >= 0
                results[user] = {
                    "user_id": user,
                    "source": "model",
                    "items": [
                        {"item_id": str(self.model.item_ids[i]), "score": round(float(v), 6)}
                        for i, v in zip(r[keep], s[keep], strict=True)
                    ],
                }
        for user in user_ids:
            if user not in results:
                results[user] = {
                    "user_id": user,
                    "source": "popularity",
                    "items": [{"item_id": item, "score": None} for item in self.popular[:k]],
                }
        return [results[u] for u in user_ids]

    def _query_features(self, users: list[str], rows) -> dict[str, np.ndarray]:
        """The query tower's raw inputs for known users: histories padded to `[n, h]` with ""
        and 0, the query time, and the user features (missing values as "")."""
        n = len(users)
        hist = np.full((n, self.h), "", dtype=object)
        hist_t = np.zeros((n, self.h), dtype=np.int64)
        for i, (items, times) in enumerate(
            zip(rows[HISTORY_ITEM_IDS], rows[HISTORY_TIMESTAMPS], strict=True)
        ):
            hist[i, : len(items)] = list(items)
            hist_t[i, : len(times)] = list(times)
        at = self.at or int(hist_t.max(initial=0)) + 1
        features = {
            USER_ID: np.array(users, dtype=object),
            TIMESTAMP: np.full(n, at, dtype=np.int64),
            HISTORY_ITEM_IDS: hist,
            HISTORY_TIMESTAMPS: hist_t,
        }
        for name in self.feature_names:
            if name in rows:
                features[name] = rows[name].fillna("").astype(str).to_numpy(object)
        return features


def recommend_stream(
    recommender: Recommender,
    lines: Iterable[str],
    out: TextIO,
    k: int = 10,
    exclude_seen: bool = True,
    batch: int | None = None,
) -> int:
    """Recommend for user ids read line by line (blank lines skipped), writing one JSON line per
    user (`Recommender.recommend`'s dicts) in input order as each batch of `batch` users
    (default `STREAM_BATCH`) is answered: memory holds one batch, whatever the number of lines.

    Returns:
        The number of users written.

    Raises:
        UsageError: `k` < 1 (before anything is written).
    """
    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    written = 0
    for users in _batches(lines, batch or STREAM_BATCH):
        results = recommender.recommend(users, k=k, exclude_seen=exclude_seen)
        out.write("".join(json.dumps(r) + "\n" for r in results))
        written += len(results)
    return written


def _batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    users: list[str] = []
    for line in lines:
        user = line.strip()
        if user:
            users.append(user)
        if len(users) >= size:
            yield users
            users = []
    if users:
        yield users
