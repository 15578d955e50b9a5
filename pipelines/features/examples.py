"""Point-in-time training examples and eval queries for one group of users, vectorized.

Given every event of some users (a user shard), this builds

- one **train example** per interaction in [window_start, eval_start), with the user's last H
  items and their timestamps **strictly before** the interaction (events sharing its timestamp
  are not history: a tie is not "before"), user features and context (hour, day of week);
- one **eval query** per user active in [eval_start, window_end): the history before
  eval_start, every item seen before eval_start (to exclude at evaluation) and the items
  interacted with in the eval period (the labels).

Records are serialized tf.train.Examples in a fixed order (user, timestamp, item, event), so
the same events always give the same bytes. Both the Beam job and the single-process
reference call this function; neither has its own copy of the logic.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from pipelines.features.encoding import Example
from pipelines.features.window import DAY, FeatureWindow

EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "event", "weight"]


@dataclasses.dataclass
class ShardExamples:
    """Serialized records of one user shard plus what the checks and manifest need.

    Attributes:
        train: serialized train Examples, in (user, timestamp, item, event) order.
        eval: serialized eval-query Examples, in user order.
        stats: counts (`train_examples`, `eval_queries`, `eval_interactions`, `train_users`)
            and `min_history_gap_s`, the smallest example-minus-history timestamp (None when
            no example has history); it must be >= 1 for a leak-free shard.
    """

    train: list[bytes]
    eval: list[bytes]
    stats: dict


def user_shard(user_ids: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    """Stable shard of each user id (same on every machine and run): int64 `[n]` in [0, shards)."""
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object), categorize=True)
    return (hashed % np.uint64(shards)).astype(np.int64)


def build_shard_examples(
    events: pd.DataFrame,
    window: FeatureWindow,
    history_length: int,
    users: pd.DataFrame | None = None,
) -> ShardExamples:
    """Build the train examples and eval queries of a group of users.

    Args:
        events: columns `user_id, item_id` (str), `timestamp` (int64 epoch seconds),
            `event` (str), `weight` (float); must hold *every* event of its users.
        window: the run's window.
        history_length: H, the most recent items kept per history.
        users: optional user features indexed by `user_id` (string columns).

    Returns:
        `ShardExamples`.
    """
    ts_all = events["timestamp"].to_numpy(np.int64)
    events = events.loc[(ts_all >= window.history_start) & (ts_all < window.window_end)]
    events = events.sort_values(
        ["user_id", "timestamp", "item_id", "event", "weight"], kind="stable"
    )
    user_codes, user_names = pd.factorize(events["user_id"], sort=True)
    item_codes, item_names = pd.factorize(events["item_id"])
    t = events["timestamp"].to_numpy(np.int64)
    n = len(t)
    positions = np.arange(n)
    new_user = np.r_[True, user_codes[1:] != user_codes[:-1]] if n else np.zeros(0, bool)
    user_start = np.maximum.accumulate(np.where(new_user, positions, 0)) if n else positions
    new_tie = new_user | (np.r_[True, t[1:] != t[:-1]] if n else new_user)
    tie_start = np.maximum.accumulate(np.where(new_tie, positions, 0)) if n else positions

    item_bytes = np.array([s.encode() for s in item_names], dtype=object)
    user_bytes = [s.encode() for s in user_names]
    features = _user_feature_bytes(users, user_names)
    encoder = _Encoder(item_bytes, item_codes, t, history_length)

    train_rows = np.flatnonzero((t >= window.window_start) & (t < window.eval_start))
    hist_idx, hist_len = encoder.history(tie_start[train_rows], user_start[train_rows])
    events_b = [s.encode() for s in events["event"].to_numpy(str)]
    weights = events["weight"].to_numpy(np.float64)
    train = [
        encoder.train_example(
            row, hist_idx[k, : hist_len[k]], user_bytes[user_codes[row]],
            features[user_codes[row]], events_b[row], weights[row],
        )
        for k, row in enumerate(train_rows)
    ]  # fmt: skip

    evaluation, eval_interactions = _eval_queries(
        encoder, user_codes, user_start, t, window, user_bytes, features
    )
    gaps = np.where(
        hist_len > 0, t[train_rows] - t[hist_idx[:, 0].clip(min=0)], np.iinfo(np.int64).max
    )
    return ShardExamples(
        train=train,
        eval=evaluation,
        stats={
            "train_examples": len(train),
            "eval_queries": len(evaluation),
            "eval_interactions": eval_interactions,
            "train_users": int(len(np.unique(user_codes[train_rows]))),
            "min_history_gap_s": int(gaps.min()) if len(gaps) and (hist_len > 0).any() else None,
        },
    )


def _eval_queries(encoder, user_codes, user_start, t, window, user_bytes, features):
    in_eval = (t >= window.eval_start) & (t < window.window_end)
    eval_users = np.unique(user_codes[in_eval])
    if len(eval_users) == 0:
        return [], 0
    # Users are factorized in sorted order and rows sorted by user then time, so user code k
    # is the k-th block of rows and its eval rows are a suffix of that block.
    first_eval_of_user = np.full(user_codes.max() + 1, len(t))
    np.minimum.at(first_eval_of_user, user_codes[in_eval], np.flatnonzero(in_eval))
    first_eval = first_eval_of_user[eval_users]
    last_row = np.r_[np.flatnonzero(np.diff(user_codes)), len(t) - 1]
    starts = user_start[last_row][eval_users]
    ends = last_row[eval_users] + 1
    hist_idx, hist_len = encoder.history(first_eval, starts)
    records = [
        encoder.eval_query(
            first_eval[k], hist_idx[k, : hist_len[k]], starts[k], ends[k],
            user_bytes[user], features[user],
        )
        for k, user in enumerate(eval_users)
    ]  # fmt: skip
    return records, int(in_eval.sum())


class _Encoder:
    """Turns row indices into serialized Examples (ids as bytes, timestamps as int64 seconds)."""

    def __init__(self, item_bytes, item_codes, t, history_length):
        self.item_bytes, self.item_codes, self.t = item_bytes, item_codes, t
        self.offsets = np.arange(1, history_length + 1)

    def history(self, before, floor):
        """History rows, most recent first: int `[n, H]` (-1 = padding) and lengths `[n]`."""
        idx = before[:, None] - self.offsets[None, :]
        valid = idx >= floor[:, None]
        return np.where(valid, idx, -1), valid.sum(axis=1)

    def _context(self, feature, ts: int) -> None:
        feature["timestamp"].int64_list.value.append(int(ts))
        feature["hour"].int64_list.value.append(int(ts // 3600 % 24))
        feature["day_of_week"].int64_list.value.append(int((ts // DAY + 3) % 7))  # Monday = 0

    def _history(self, feature, hist) -> None:
        feature["history_item_ids"].bytes_list.value.extend(self.item_bytes[self.item_codes[hist]])
        feature["history_timestamps"].int64_list.value.extend(self.t[hist].tolist())

    @staticmethod
    def _user(feature, user_id: bytes, user_features: dict[str, bytes]) -> None:
        feature["user_id"].bytes_list.value.append(user_id)
        for name, value in user_features.items():
            feature[name].bytes_list.value.append(value)

    def train_example(self, row, hist, user_id, user_features, event, weight) -> bytes:
        example = Example()
        feature = example.features.feature
        self._user(feature, user_id, user_features)
        feature["item_id"].bytes_list.value.append(self.item_bytes[self.item_codes[row]])
        feature["event"].bytes_list.value.append(event)
        feature["weight"].float_list.value.append(weight)
        self._context(feature, self.t[row])
        self._history(feature, hist)
        return example.SerializeToString(deterministic=True)

    def eval_query(self, first_eval, hist, start, end, user_id, user_features) -> bytes:
        example = Example()
        feature = example.features.feature
        self._user(feature, user_id, user_features)
        self._context(feature, self.t[first_eval])
        self._history(feature, hist)
        seen = np.unique(self.item_codes[start:first_eval])
        labels = np.unique(self.item_codes[first_eval:end])
        feature["seen_item_ids"].bytes_list.value.extend(sorted(self.item_bytes[seen]))
        feature["label_item_ids"].bytes_list.value.extend(sorted(self.item_bytes[labels]))
        return example.SerializeToString(deterministic=True)


def _user_feature_bytes(users: pd.DataFrame | None, user_names) -> list[dict[str, bytes]]:
    """Per user (in `user_names` order) the `user_<column>` features as bytes ("" if unknown)."""
    if users is None or users.empty:
        return [{} for _ in user_names]
    table = users.reindex(pd.Index(user_names))
    columns = {f"user_{c}": table[c] for c in table.columns}
    encoded = {
        name: [("" if pd.isna(v) else str(v)).encode() for v in values]
        for name, values in columns.items()
    }
    return [{name: encoded[name][k] for name in encoded} for k in range(len(user_names))]
