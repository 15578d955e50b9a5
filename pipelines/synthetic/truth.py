"""Load a synthetic world's ground truth and score items with the true preference model.

The evaluation uses this to report the oracle: the ranking by true logits is the best any
model can do on the same eval window.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import SourceError
from pipelines.metrics import score_block_rows

_ARRAYS = (
    "user_vectors",
    "item_vectors",
    "item_log_popularity",
    "item_arrival_day",
    "user_cluster",
    "user_join_day",
)


@dataclasses.dataclass
class GroundTruth:
    """True parameters of a generated world (positions = index in the id strings)."""

    params: dict
    start: pd.Timestamp
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_log_popularity: np.ndarray
    item_arrival_day: np.ndarray
    user_cluster: np.ndarray
    user_join_day: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read `<source>/_truth/` (or the `_truth` directory itself).

        Raises:
            SourceError: the directory has no ground truth (real data has none).
        """
        path = Path(path)
        if (path / "_truth").is_dir():
            path = path / "_truth"
        if not (path / "params.json").is_file():
            raise SourceError(f"{path}: no synthetic ground truth (params.json) found")
        meta = json.loads((path / "params.json").read_text())
        arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
        return cls(
            params=meta, start=pd.Timestamp(meta["summary"]["start_date"], tz="UTC"), **arrays
        )

    def logits(self, user_index: np.ndarray, at: pd.Timestamp) -> np.ndarray:
        """True logits of every item for some users at a moment.

        Args:
            user_index: int `[n]` user positions.
            at: the moment (items not yet arrived get -inf).

        Returns:
            float64 `[n, I]`.
        """
        bias = self._bias((at - self.start) // pd.Timedelta(days=1))
        return (
            self.user_vectors[np.asarray(user_index)].astype(np.float64)
            @ self.item_vectors.T.astype(np.float64)
            + bias
        )

    def popularity_logits(self, item_ids) -> np.ndarray:
        """The popularity part of the true logit (beta * log_pop) of generator item ids, `[n]`."""
        beta = self.params["truth_params"]["popularity_beta"]
        return beta * self.item_log_popularity[_positions(item_ids)].astype(np.float64)

    def score_blocks(self, item_ids, users, times, batch: int | None = None):
        """True logits of `users` at `times` (epoch s) over `item_ids`, in `[rows, items]` blocks.

        Ids are the generator's (`u<n>`, `i<n>`); the oracle of every evaluation. Blocks hold
        `batch` rows, by default as many float64 rows as fit `pipelines.metrics.SCORE_BLOCK_BYTES`
        (the catalog can have a million items). The popularity + freshness bias is computed
        once per distinct day, not once per row.

        Yields:
            float64 `[rows, len(item_ids)]`: `logits(...)[:, columns]` up to float64 rounding
            (one matrix product per block instead of one per user).
        """
        columns, user_index = _positions(item_ids), _positions(users)
        batch = batch or score_block_rows(len(columns), cell_bytes=8)
        # [d, items] in row-major order: BLAS multiplies it several times faster than the
        # transposed view of [items, d].
        vectors = np.ascontiguousarray(self.item_vectors[columns].T, dtype=np.float64)
        days = (
            (pd.to_datetime(np.asarray(times, dtype=np.int64), unit="s", utc=True) - self.start)
            // pd.Timedelta(days=1)
        ).to_numpy(np.int64)
        biases: dict[int, np.ndarray] = {}
        for start in range(0, len(user_index), batch):
            block_days = days[start : start + batch]
            block = (
                self.user_vectors[user_index[start : start + batch]].astype(np.float64) @ vectors
            )
            for day in np.unique(block_days):
                if day not in biases:
                    biases[day] = self._bias(int(day))[columns]
                if len(block_days) and (block_days == day).all():  # eval queries: one moment
                    block += biases[day]
                else:
                    block[block_days == day] += biases[day]
            yield block

    def _bias(self, day: int) -> np.ndarray:
        p = self.params["truth_params"]
        return item_logit_bias(
            self.item_log_popularity,
            self.item_arrival_day,
            day,
            popularity_beta=p["popularity_beta"],
            fresh_boost=p["fresh_boost"],
            fresh_decay_days=p["fresh_decay_days"],
        )


def _positions(ids) -> np.ndarray:
    """Positions of generator ids (`u0000012`, `i0000012` -> 12)."""
    return np.array([int(x[1:]) for x in ids], dtype=np.int64)


def item_logit_bias(
    log_popularity: np.ndarray,
    arrival_day: np.ndarray,
    day: int,
    *,
    popularity_beta: float,
    fresh_boost: float,
    fresh_decay_days: float,
) -> np.ndarray:
    """Popularity + freshness part of the true logit on `day`.

    Returns:
        float64 `[I]`; -inf for items that have not arrived yet.
    """
    age = day - arrival_day
    bias = popularity_beta * log_popularity.astype(np.float64)
    bias = bias + fresh_boost * np.exp(-np.maximum(age, 0) / fresh_decay_days)
    return np.where(age >= 0, bias, -np.inf)
