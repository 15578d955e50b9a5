"""The feature schema's time helper and point-in-time history rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import schema


def test_epoch_seconds_of_one_timestamp_and_of_a_series():
    assert schema.epoch_seconds("1970-01-02") == 86_400
    assert schema.epoch_seconds(pd.Timestamp("1970-01-01T01:00:00+01:00")) == 0
    series = pd.Series(pd.to_datetime(["1970-01-01T00:00:01.9", None], utc=True))
    assert schema.epoch_seconds(series).tolist() == [1, 0]  # floored; NaT -> missing
    assert schema.epoch_seconds(series, missing=None).isna().tolist() == [False, True]


def test_history_is_strictly_before_the_moment_most_recent_first():
    # Two users, sorted in EVENT_ORDER: a has events at 10, 20, 20, 30; b at 5.
    users = np.array([0, 0, 0, 0, 1])
    t = np.array([10, 20, 20, 30, 5])
    user_start, tie_start = schema.event_groups(users, t)
    assert user_start.tolist() == [0, 0, 0, 0, 4]
    assert tie_start.tolist() == [0, 1, 1, 3, 4]
    rows, lengths = schema.point_in_time_history(user_start, tie_start, 2)
    assert rows.tolist() == [[-1, -1], [0, -1], [0, -1], [2, 1], [-1, -1]]
    assert lengths.tolist() == [0, 1, 1, 2, 0]


def test_history_after_the_last_event_is_the_latest_events():
    user_start, user_end = np.array([0, 4]), np.array([4, 5])
    rows, lengths = schema.point_in_time_history(user_start, user_end, 3)
    assert rows.tolist() == [[3, 2, 1], [4, -1, -1]]
    assert lengths.tolist() == [3, 1]


def test_user_feature_and_vocabulary_names():
    assert schema.user_feature("country") == "user_country"
    assert schema.vocabulary_file(schema.ITEM_ID) == "vocab/item_id.tsv"
    assert schema.EVENT_ORDER[:3] == (schema.USER_ID, schema.TIMESTAMP, schema.ITEM_ID)
