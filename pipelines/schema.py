"""The feature schema: every feature key, vocabulary and file name the feature job writes and
training, serving and the checks read, the time conversion, and the point-in-time history rule.

Record features (all lists; ids as bytes, times as int64 epoch seconds):

    train, heldout  user_id, user_<column>..., item_id, event, weight (float), timestamp,
                    history_item_ids, history_timestamps (most recent first)
    valid, eval     user_id, user_<column>..., timestamp (first labelled interaction),
                    history_item_ids, history_timestamps, seen_item_ids, label_item_ids (sorted)

The serving state (`pipelines.serving`) holds, per user at the window's end, the same history
columns plus `seen_item_ids` and the `user_<column>` features. Histories of both come from
`point_in_time_history`, so the model is queried at serving time with what it trained on.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import PipelineError
from pipelines.formats import files

# Feature keys.
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
EVENT = "event"
WEIGHT = "weight"
HISTORY_ITEM_IDS = "history_item_ids"
HISTORY_TIMESTAMPS = "history_timestamps"
SEEN_ITEM_IDS = "seen_item_ids"
LABEL_ITEM_IDS = "label_item_ids"
USER_FEATURE_PREFIX = "user_"
"""Prefix of the user-table columns in records and serving state: `country` -> `user_country`."""

# The order the feature job sorts events in: it decides which of several events sharing a
# timestamp comes first in a history.
EVENT_ORDER = (USER_ID, TIMESTAMP, ITEM_ID, EVENT, WEIGHT)

# Vocabularies: `vocab/<name>.tsv` beside the features, `value<TAB>count` lines, most frequent
# first.
GENRE = "genre"
TITLE_TOKEN = "title_token"
VOCABULARIES = (USER_ID, ITEM_ID, GENRE, TITLE_TOKEN)
VOCAB_DIR = "vocab"
OOV_BUCKETS = "oov_buckets"
"""Manifest key: out-of-vocabulary buckets each id lookup adds after its vocabulary."""

CUTS_FILE = "user_cuts.parquet"
FEATURES_MANIFEST = "manifest.json"  # a feature run's window, counts, splits and file hashes
_DEFAULT_CUT_KEY = b"default_cut"

HOUR_SECONDS = 3_600
DAY_SECONDS = 86_400


def user_feature(column: str) -> str:
    """Record and serving-state name of a user-table column: `country` -> `user_country`."""
    return f"{USER_FEATURE_PREFIX}{column}"


def vocabulary_file(name: str) -> str:
    """Path of a vocabulary relative to the features directory: `vocab/<name>.tsv`."""
    return f"{VOCAB_DIR}/{name}.tsv"


def utc_timestamp(ts) -> pd.Timestamp:
    """A timestamp or ISO string as a UTC `pd.Timestamp` (naive = UTC)."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def epoch_seconds(ts, missing: int | None = 0):
    """Timestamps as integer epoch seconds (sub-second parts are floored).

    Args:
        ts: one timestamp or ISO string (naive = UTC), or a `pd.Series` of UTC datetimes.
        missing: what NaT becomes in a Series; None keeps it missing (nullable Int64).

    Returns:
        An int for one timestamp; for a Series, an int64 (or Int64) Series on the same index.
    """
    if not isinstance(ts, pd.Series):
        return int(utc_timestamp(ts).timestamp())
    values = ts.to_numpy(dtype="datetime64[us]")  # tz-aware UTC -> naive UTC
    seconds = values.astype(np.int64) // 1_000_000
    nat = np.isnat(values)
    if missing is None:
        out = pd.Series(seconds, index=ts.index, dtype="Int64")
        out[nat] = pd.NA
        return out
    return pd.Series(np.where(nat, missing, seconds), index=ts.index, dtype=np.int64)


def event_groups(user_codes: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group boundaries of events sorted in `EVENT_ORDER`.

    Args:
        user_codes: int `[n]` user of each event, ascending.
        t: int64 `[n]` epoch seconds, ascending within each user.

    Returns:
        (user_start, tie_start): int `[n]`, per row the first row of its user and the first row
        of its (user, timestamp) group, i.e. of the events at the row's own moment.
    """
    rows = np.arange(len(t))
    if len(t) == 0:
        return rows, rows
    new_user = np.diff(user_codes, prepend=-1) != 0
    new_moment = new_user | (np.diff(t, prepend=t[:1] - 1) != 0)
    return (
        np.maximum.accumulate(np.where(new_user, rows, 0)),
        np.maximum.accumulate(np.where(new_moment, rows, 0)),
    )


def point_in_time_history(
    user_start: np.ndarray, first_not_before: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """A user's last `length` events strictly before a moment, most recent first.

    Events are sorted in `EVENT_ORDER`; a query names its user's first row and the user's first
    row at or after the moment. The history is the rows between them: events sharing the
    moment's timestamp are not "before" it. For a training example at event row r that row is
    `tie_start[r]` (`event_groups`); for a moment after all of the user's events it is one past
    the user's last row.

    Args:
        user_start: int `[n]` first row of each query's user.
        first_not_before: int `[n]` the user's first row at or after each query's moment.
        length: H, the most events kept.

    Returns:
        (rows, lengths): int `[n, H]` event rows, most recent first, padded with -1; int `[n]`
        history lengths.
    """
    rows = first_not_before[:, None] - np.arange(1, length + 1)[None, :]
    inside = rows >= user_start[:, None]
    return np.where(inside, rows, -1), inside.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class UserCuts:
    """Per-user split boundaries in epoch seconds (`user_cuts.parquet` beside the features).

    Attributes:
        default: `train_end` and `eval_cut` of every user not in `table` (temporal: eval_start;
            holdout: window_end, i.e. all of their window interactions train).
        table: indexed by `user_id` (str, sorted), int64 columns `train_end <= eval_cut`.
    """

    default: int
    table: pd.DataFrame

    @classmethod
    def uniform(cls, cut: int) -> UserCuts:
        """Every user cut at one timestamp, no validation (the plain temporal split)."""
        empty = pd.Index([], dtype=object, name=USER_ID)
        return cls(int(cut), pd.DataFrame({"train_end": [], "eval_cut": []}, index=empty,
                                          dtype=np.int64))  # fmt: skip

    def lookup(self, user_ids) -> tuple[np.ndarray, np.ndarray]:
        """(train_end, eval_cut) of each user: two int64 arrays `[n]`."""
        index = pd.Index(np.asarray(user_ids, dtype=object))
        found = self.table.reindex(index)
        return (
            found["train_end"].fillna(self.default).to_numpy(np.int64),
            found["eval_cut"].fillna(self.default).to_numpy(np.int64),
        )

    def latest(self, other: UserCuts) -> UserCuts:
        """Per user, the later `train_end` of `self` and `other` (and `eval_cut` = it): what
        weights trained on both splits have seen of each user."""
        users = self.table.index.union(other.table.index)
        end = np.maximum(self.lookup(users)[0], other.lookup(users)[0])
        default = max(self.default, other.default)
        keep = end < default  # a user at the default needs no row
        index = pd.Index(np.asarray(users, dtype=object)[keep], name=USER_ID)
        return UserCuts(default, pd.DataFrame({"train_end": end[keep], "eval_cut": end[keep]},
                                              index=index, dtype=np.int64))  # fmt: skip

    def to_bytes(self) -> bytes:
        """Parquet bytes (`user_id, train_end, eval_cut`; `default` in the schema metadata)."""
        table = pa.Table.from_pandas(self.table.reset_index(), preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _DEFAULT_CUT_KEY: str(self.default).encode()}
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    @classmethod
    def read(cls, path: str) -> UserCuts:
        """Read a cuts file written by `to_bytes` (any Beam filesystem).

        Raises:
            PipelineError: the Parquet file carries no default cut.
        """
        table = pq.read_table(pa.BufferReader(files.read_bytes(path)))
        default = (table.schema.metadata or {}).get(_DEFAULT_CUT_KEY)
        if default is None:
            raise PipelineError(
                f"{path}: not a user-cuts file (no {_DEFAULT_CUT_KEY.decode()} in its Parquet "
                "metadata); rerun the feature step to rewrite it"
            )
        frame = table.to_pandas()
        frame.index = pd.Index(frame.pop(USER_ID).to_numpy(dtype=object), name=USER_ID)
        return cls(int(default), frame[["train_end", "eval_cut"]].astype(np.int64))
