"""Point-in-time records of a group of users, vectorized: train examples, validation and eval
queries, held-out examples.

Given every event of some users (a user shard) and each user's cuts (`split.UserCuts`: the
window's interactions train in [window_start, train_end), validate in [train_end, eval_cut) and
evaluate in [eval_cut, window_end)), this builds

- one **train example** per interaction in [window_start, train_end), with the user's last H
  items and their timestamps **strictly before** the interaction (events sharing its timestamp
  are not history: a tie is not "before"; `schema.point_in_time_history`) and user features;
- one **validation query** per user with interactions in [train_end, eval_cut), and one **eval
  query** per user with interactions in [eval_cut, window_end): the history strictly before the
  first such interaction, every item seen before it (to exclude at evaluation) and the items of
  that part (the labels). With the temporal split every eval_cut is eval_start;
- one **held-out example** per interaction in [train_end, window_end) (the validation and eval
  interactions), in the train format with the same point-in-time history rule: training's
  optional final fit (`train.final_fit`) adds them once model selection is done.

Records are serialized tf.train.Examples in a fixed order (train and held-out: a pseudo-random
order that mixes users; validation and eval: by user), so the same events always give the same
bytes.
Both the Beam job and the single-process reference call this function; neither has its own
copy of the logic.

The record features are listed in `pipelines.schema`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from pipelines import schema
from pipelines.features.window import FeatureWindow
from pipelines.formats.example_encoder import FeatureKey, join_examples, value_field, varint_buffer
from pipelines.schema import UserCuts


@dataclasses.dataclass
class ShardExamples:
    """Serialized records of one user shard plus what the checks and manifest need.

    Attributes:
        train: serialized train Examples, in a fixed pseudo-random order (a hash of each
            record's (user, timestamp, item, event) rank), which mixes users.
        valid: serialized validation-query Examples (eval-query format), in user order.
        eval: serialized eval-query Examples, in user order.
        heldout: serialized train-format Examples of the validation and eval interactions
            (every interaction at or after its user's train_end), in the train order.
        stats: counts (`train_examples`, `valid_queries`, `valid_interactions`, `eval_queries`,
            `eval_interactions`, `heldout_examples`, `train_users`)
            and `min_history_gap_s`, the smallest example-minus-history timestamp (None when
            no example has history); it must be >= 1 for a leak-free shard.
    """

    train: list[bytes]
    valid: list[bytes]
    eval: list[bytes]
    heldout: list[bytes]
    stats: dict


def user_shard(user_ids: pd.Series | np.ndarray, shards: int) -> np.ndarray:
    """Stable shard of each user id (same on every machine and run): int64 `[n]` in [0, shards)."""
    hashed = pd.util.hash_array(np.asarray(user_ids, dtype=object), categorize=True)
    return (hashed % np.uint64(shards)).astype(np.int64)


@dataclasses.dataclass
class _Events:
    """A shard's events sorted in `schema.EVENT_ORDER`, with per-row group boundaries."""

    user_codes: np.ndarray  # [n] index into user_names
    item_codes: np.ndarray  # [n] index into item_names
    user_names: np.ndarray  # sorted distinct user ids
    item_names: np.ndarray  # sorted distinct item ids
    t: np.ndarray  # [n] epoch seconds
    user_start: np.ndarray  # [n] first row of the row's user
    tie_start: np.ndarray  # [n] first row of the row's (user, timestamp) group
    frame: pd.DataFrame

    @classmethod
    def sort(cls, events: pd.DataFrame, window: FeatureWindow) -> _Events:
        ts = events[schema.TIMESTAMP].to_numpy(np.int64)
        events = events.loc[(ts >= window.history_start) & (ts < window.window_end)]
        events = events.sort_values(list(schema.EVENT_ORDER), kind="stable")
        user_codes, user_names = pd.factorize(events[schema.USER_ID], sort=True)
        item_codes, item_names = pd.factorize(events[schema.ITEM_ID], sort=True)
        t = events[schema.TIMESTAMP].to_numpy(np.int64)
        user_start, tie_start = schema.event_groups(user_codes, t)
        return cls(user_codes, item_codes, np.asarray(user_names), np.asarray(item_names), t,
                   user_start, tie_start, events)  # fmt: skip


def build_shard_examples(
    events: pd.DataFrame,
    window: FeatureWindow,
    history_length: int,
    users: pd.DataFrame | None = None,
    cuts: UserCuts | None = None,
) -> ShardExamples:
    """Build the train examples, validation and eval queries and held-out examples of a group
    of users (features: `pipelines.schema`).

    Args:
        events: columns `user_id, item_id` (str), `timestamp` (int64 epoch seconds),
            `event` (str), `weight` (float); must hold *every* event of its users.
        window: the run's window.
        history_length: H, the most recent items kept per history.
        users: optional user features indexed by `user_id` (string columns).
        cuts: every user's `train_end` and `eval_cut` (see `split.py`); None = the plain
            temporal split at `window.eval_start` without validation.

    Returns:
        `ShardExamples`.
    """
    ev = _Events.sort(events, window)
    tables = _Tables(ev, users)
    cuts = cuts if cuts is not None else UserCuts.uniform(window.eval_start)
    train_end, eval_cut = (c[ev.user_codes] for c in cuts.lookup(ev.user_names))
    inside = (ev.t >= window.window_start) & (ev.t < window.window_end)
    rows = np.flatnonzero(inside & (ev.t < train_end))
    train, hist = _examples(ev, tables, rows, history_length)
    heldout, _ = _examples(ev, tables, np.flatnonzero(inside & (ev.t >= train_end)),
                           history_length)  # fmt: skip

    in_valid = inside & (ev.t >= train_end) & (ev.t < eval_cut)
    in_eval = inside & (ev.t >= eval_cut)
    validation = _queries(ev, tables, in_valid, history_length)
    evaluation = _queries(ev, tables, in_eval, history_length)
    gaps = ev.t[rows] - ev.t[hist[0][:, 0].clip(min=0)] if len(rows) else np.zeros(0, np.int64)
    with_history = hist[1] > 0
    return ShardExamples(
        train=train,
        valid=validation,
        eval=evaluation,
        heldout=heldout,
        stats={
            "train_examples": len(train),
            "valid_queries": len(validation),
            "valid_interactions": int(in_valid.sum()),
            "eval_queries": len(evaluation),
            "eval_interactions": int(in_eval.sum()),
            "heldout_examples": len(heldout),
            "train_users": int(len(np.unique(ev.user_codes[rows]))),
            "min_history_gap_s": int(gaps[with_history].min()) if with_history.any() else None,
        },
    )


def _examples(ev: _Events, tables, rows: np.ndarray, h: int) -> tuple[list[bytes], tuple]:
    """Train-format records of the event rows `rows` (int `[n]`, ascending) and their histories.

    Returns:
        (records in a fixed pseudo-random order, the `schema.point_in_time_history` of each row in
        `rows` order).
    """
    hist = schema.point_in_time_history(ev.user_start[rows], ev.tie_start[rows], h)
    if len(rows) == 0:
        return [], hist
    columns = tables.user_columns(ev.user_codes[rows])
    columns[schema.TIMESTAMP] = tables.timestamp_entries(ev.t[rows])
    columns.update(tables.history_columns(ev, hist))
    columns[schema.ITEM_ID] = [tables.item_entries[c] for c in ev.item_codes[rows].tolist()]
    for name in (schema.EVENT, schema.WEIGHT):
        codes, values = pd.factorize(ev.frame[name].to_numpy()[rows])
        kind = "bytes" if name == schema.EVENT else "float"
        table = FeatureKey(name, kind).entries(
            [str(v).encode() for v in values] if kind == "bytes" else values
        )
        columns[name] = [table[c] for c in codes.tolist()]
    records = join_examples(columns)
    # Written in a fixed pseudo-random order, not user by user: consecutive records then mix
    # users, so readers get well-mixed batches from a small shuffle buffer.
    order = np.argsort(pd.util.hash_array(rows.astype(np.int64)), kind="stable")
    return [records[i] for i in order], hist


def _queries(ev: _Events, tables, labelled: np.ndarray, h: int) -> list[bytes]:
    """One query per user with labelled rows, in user order.

    `labelled` marks, per user, one contiguous run of rows (rows are sorted by user then time,
    and a cut is a timestamp). The query's moment is the run's first row: its history and seen
    items are the user's rows before it, its labels the distinct items of the run.
    """
    users = np.unique(ev.user_codes[labelled])
    if len(users) == 0:
        return []
    marked = np.flatnonzero(labelled)
    first_of_user = np.full(ev.user_codes.max() + 1, len(ev.t))
    last_of_user = np.full(ev.user_codes.max() + 1, -1)
    np.minimum.at(first_of_user, ev.user_codes[marked], marked)
    np.maximum.at(last_of_user, ev.user_codes[marked], marked)
    first, ends = first_of_user[users], last_of_user[users] + 1
    starts = ev.user_start[first]
    columns = tables.user_columns(users)
    columns[schema.TIMESTAMP] = tables.timestamp_entries(ev.t[first])
    columns.update(tables.history_columns(ev, schema.point_in_time_history(starts, first, h)))
    for name, lo, hi in (
        (schema.SEEN_ITEM_IDS, starts, first),
        (schema.LABEL_ITEM_IDS, first, ends),
    ):
        sets = [
            np.unique(ev.item_codes[a:b]) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
        ]
        bounds = np.cumsum([0] + [len(x) for x in sets]).tolist()
        flat = np.concatenate(sets) if sets else np.zeros(0, np.int64)
        columns[name] = tables.item_lists(
            name, flat, list(zip(bounds[:-1], bounds[1:], strict=True))
        )
    return join_examples(columns)


class _Tables:
    """Encoded map entries shared by the records of a shard (one per distinct value)."""

    def __init__(self, ev: _Events, users: pd.DataFrame | None):
        user_names = ev.user_names
        item_bytes = [s.encode() for s in ev.item_names]
        self.item_entries = FeatureKey(schema.ITEM_ID, "bytes").entries(item_bytes)
        self.item_values = [value_field(b) for b in item_bytes]
        self.users = {
            schema.USER_ID: FeatureKey(schema.USER_ID, "bytes").entries(
                [s.encode() for s in user_names]
            )
        }
        if users is not None and not users.empty:
            table = users.reindex(pd.Index(user_names))
            for column in table.columns:
                values = [("" if pd.isna(v) else str(v)).encode() for v in table[column]]
                name = schema.user_feature(column)
                self.users[name] = FeatureKey(name, "bytes").entries(values)

    def user_columns(self, user_codes: np.ndarray) -> dict[str, list[bytes]]:
        codes = user_codes.tolist()
        return {name: [entries[c] for c in codes] for name, entries in self.users.items()}

    @staticmethod
    def timestamp_entries(t: np.ndarray) -> list[bytes]:
        """One `timestamp` entry per row of `t` (int64 epoch seconds `[n]`)."""
        key = FeatureKey(schema.TIMESTAMP, "int64")
        data, offsets = varint_buffer(t)
        return [key.entry(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    def history_columns(self, ev: _Events, history) -> dict[str, list[bytes]]:
        idx, lengths = history
        flat = idx[idx >= 0]  # row-major: each row's history, most recent first
        bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        bounds = bounds.tolist()
        ts_data, ts_offsets = varint_buffer(ev.t[flat])
        ts_key = FeatureKey(schema.HISTORY_TIMESTAMPS, "int64")
        pairs = list(zip(bounds[:-1], bounds[1:], strict=True))
        return {
            schema.HISTORY_ITEM_IDS: self.item_lists(
                schema.HISTORY_ITEM_IDS, ev.item_codes[flat], pairs
            ),
            schema.HISTORY_TIMESTAMPS: [
                ts_key.entry(ts_data[ts_offsets[a] : ts_offsets[b]]) for a, b in pairs
            ],
        }

    def item_lists(self, name: str, codes: np.ndarray, pairs: list[tuple[int, int]]) -> list[bytes]:
        """One bytes-list entry per row: the items `codes[a:b]` for each (a, b) in `pairs`."""
        key = FeatureKey(name, "bytes")
        values = [self.item_values[c] for c in codes.tolist()]
        return [key.entry(b"".join(values[a:b])) for a, b in pairs]
