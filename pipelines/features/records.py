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
from pipelines.formats.example_encoder import (
    EntryColumn,
    FeatureKey,
    example_parts,
    value_field,
    varint_buffer,
)
from pipelines.formats.tfrecord import RecordFile, frame_records
from pipelines.schema import UserCuts


@dataclasses.dataclass
class ShardExamples:
    """Serialized records of one user shard plus what the checks and manifest need.

    Each split's records are a `tfrecord.RecordFile` (a sequence of serialized Examples,
    already framed as the TFRecord file that `job.process_shard` writes), or an empty list.

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

    train: RecordFile | list
    valid: RecordFile | list
    eval: RecordFile | list
    heldout: RecordFile | list
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

    @property
    def n(self) -> int:
        return len(self.t)

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
    train, lengths = _examples(ev, tables, rows, history_length)
    heldout, _ = _examples(ev, tables, np.flatnonzero(inside & (ev.t >= train_end)),
                           history_length)  # fmt: skip

    in_valid = inside & (ev.t >= train_end) & (ev.t < eval_cut)
    in_eval = inside & (ev.t >= eval_cut)
    validation = _queries(ev, tables, in_valid, history_length)
    evaluation = _queries(ev, tables, in_eval, history_length)
    with_history = lengths > 0
    gaps = ev.t[rows] - ev.t[(ev.tie_start[rows] - 1).clip(min=0)]
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


def _examples(
    ev: _Events, tables, rows: np.ndarray, h: int
) -> tuple[RecordFile | list, np.ndarray]:
    """Train-format records of the event rows `rows` (int `[n]`, ascending) and their histories.

    Returns:
        (records in a fixed pseudo-random order, the history length of each row in `rows` order:
        row r's history is the rows `tie_start[r] - 1` down to `tie_start[r] - length`).
    """
    first = ev.tie_start[rows]
    lengths = history_lengths(ev.user_start[rows], first, h)
    if len(rows) == 0:
        return [], lengths
    columns = tables.user_columns(ev.user_codes[rows])
    columns[schema.TIMESTAMP] = tables.timestamp_entries(ev.n - 1 - rows)
    columns.update(tables.history_columns(ev.n, first, lengths))
    columns[schema.ITEM_ID] = EntryColumn.lookup(tables.item_entries, ev.item_codes[rows])
    for name, (codes, table) in tables.events.items():
        columns[name] = EntryColumn.lookup(table, codes[rows])
    parts, sizes = example_parts(columns)
    # Written in a fixed pseudo-random order, not user by user: consecutive records then mix
    # users, so readers get well-mixed batches from a small shuffle buffer.
    order = np.argsort(pd.util.hash_array(rows.astype(np.int64)), kind="stable")
    return frame_records(parts[order], sizes[order]), lengths


def history_lengths(user_start: np.ndarray, first_not_before: np.ndarray, h: int) -> np.ndarray:
    """`schema.point_in_time_history` in range form: the lengths `[n]` of its histories.

    A history is a run of consecutive rows read backwards, `first_not_before - 1` down to
    `first_not_before - length`, so its first row and length describe it exactly; the records
    copy each one as a single slice (`_Backwards`) instead of gathering an `[n, H]` matrix of
    rows. `test_records` checks the two forms agree.
    """
    return np.clip(first_not_before - user_start, 0, h)


def _queries(ev: _Events, tables, labelled: np.ndarray, h: int) -> RecordFile | list:
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
    columns[schema.TIMESTAMP] = tables.timestamp_entries(ev.n - 1 - first)
    columns.update(tables.history_columns(ev.n, first, history_lengths(starts, first, h)))
    for name, lo, hi in (
        (schema.SEEN_ITEM_IDS, starts, first),
        (schema.LABEL_ITEM_IDS, first, ends),
    ):
        flat, bounds = _distinct_items(ev.item_codes, lo, hi)
        bounds = bounds.tolist()
        columns[name] = tables.item_lists(
            name, flat, list(zip(bounds[:-1], bounds[1:], strict=True))
        )
    return frame_records(*example_parts(columns))


def _distinct_items(item_codes: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """The distinct items of each row range `[lo[i], hi[i])`, ascending, for all ranges at once.

    Returns:
        (item codes of every range in turn, int64 `[m + 1]` where range i's codes start).
    """
    counts = hi - lo
    starts = np.zeros(len(lo) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    which = np.repeat(np.arange(len(lo)), counts)
    rows = np.arange(starts[-1]) + (lo - starts[:-1])[which]
    span = np.int64(item_codes.max() + 1) if len(item_codes) else np.int64(1)
    # (range, item) pairs as one sorted key each: the distinct keys are the distinct items of
    # every range, ranges in order and items ascending within each.
    keys = np.unique(which * span + item_codes[rows])
    return keys % span, np.searchsorted(keys // span, np.arange(len(lo) + 1))


class _Tables:
    """Encoded pieces shared by the records of a shard: one map entry per distinct value of the
    scalar features, and every event's item and timestamp encoded once (`_Backwards`), which
    the histories and timestamps of all records are sliced from."""

    def __init__(self, ev: _Events, users: pd.DataFrame | None):
        user_names = ev.user_names
        item_bytes = [s.encode() for s in ev.item_names]
        self.item_entries = FeatureKey(schema.ITEM_ID, "bytes").entries(item_bytes)
        self.item_values = [value_field(b) for b in item_bytes]
        backwards = ev.item_codes[::-1].tolist()
        self.items = _Backwards.join([self.item_values[c] for c in backwards])
        self.times = _Backwards(*varint_buffer(ev.t[::-1]))
        self.events = {}  # event and weight: (code of each event row, entry of each code)
        for name, kind in ((schema.EVENT, "bytes"), (schema.WEIGHT, "float")):
            codes, values = pd.factorize(ev.frame[name].to_numpy())
            key = FeatureKey(name, kind)
            encoded = [str(v).encode() for v in values] if kind == "bytes" else values
            self.events[name] = (codes, key.entries(encoded))
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

    def user_columns(self, user_codes: np.ndarray) -> dict[str, EntryColumn]:
        return {
            name: EntryColumn.lookup(entries, user_codes) for name, entries in self.users.items()
        }

    def timestamp_entries(self, positions: np.ndarray) -> EntryColumn:
        """One `timestamp` entry per event of the backwards positions `positions` (int `[n]`:
        row r is at n_events - 1 - r)."""
        return self.times.entries(FeatureKey(schema.TIMESTAMP, "int64"), positions, 1)

    def history_columns(
        self, n_events: int, first_not_before: np.ndarray, lengths: np.ndarray
    ) -> dict[str, EntryColumn]:
        """The history features of histories given in `history_lengths`' range form."""
        # Rows first - 1 down to first - length are backwards positions n - first onwards.
        start = n_events - first_not_before
        return {
            schema.HISTORY_ITEM_IDS: self.items.entries(
                FeatureKey(schema.HISTORY_ITEM_IDS, "bytes"), start, lengths
            ),
            schema.HISTORY_TIMESTAMPS: self.times.entries(
                FeatureKey(schema.HISTORY_TIMESTAMPS, "int64"), start, lengths
            ),
        }

    def item_lists(self, name: str, codes: np.ndarray, pairs: list[tuple[int, int]]) -> EntryColumn:
        """One bytes-list entry per row: the items `codes[a:b]` for each (a, b) in `pairs`."""
        values = [self.item_values[c] for c in codes.tolist()]
        return FeatureKey(name, "bytes").column([b"".join(values[a:b]) for a, b in pairs])


class _Backwards:
    """One encoded value per event of a shard, concatenated from the last event row to the
    first.

    Events are sorted by user then time, so a history (its user's rows `first - 1` down to
    `first - length`, most recent first) is one contiguous run here: its list content is a
    single slice, copied once, rather than one piece per history item.
    """

    def __init__(self, data: bytes, offsets: list[int]):
        self.data = data
        self.offsets = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def join(cls, pieces: list[bytes]) -> _Backwards:
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offsets[1:])
        return cls(b"".join(pieces), offsets)

    def entries(self, key: FeatureKey, start: np.ndarray, count) -> EntryColumn:
        """`key`'s entry of the values at positions `start[i] .. start[i] + count[i] - 1`, per i."""
        return key.slices(self.data, self.offsets[start], self.offsets[start + count])
