"""Point-in-time histories: boundaries, ties, splits, against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines import schema
from pipelines.features.records import build_shard_examples, history_lengths, user_shard
from pipelines.features.window import FeatureWindow
from pipelines.formats.example_decoder import decode_example
from pipelines.formats.tfrecord import RecordFile, encode_record

WINDOW = FeatureWindow(history_start=0, window_start=0, eval_start=1000, window_end=2000)


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "weight"])


def decoded(records):
    """Decoded records in (user, timestamp, item, event) order (train files mix users)."""
    rows = [decode_example(r) for r in records]
    return sorted(
        rows, key=lambda d: (d["user_id"], d["timestamp"], d.get("item_id", []), d.get("event", []))
    )


def test_first_event_has_empty_history_and_ties_are_not_history():
    built = build_shard_examples(
        events(
            [
                ("a", "x", 100, "click", 1.0),
                ("a", "y", 200, "click", 1.0),
                ("a", "z", 200, "click", 2.0),  # same second as y: neither is the other's history
                ("a", "w", 300, "buy", 3.0),
            ]
        ),
        WINDOW,
        history_length=5,
    )
    train = decoded(built.train)
    assert [(t["item_id"], t["history_item_ids"], t["history_timestamps"]) for t in train] == [
        ([b"x"], [], []),
        ([b"y"], [b"x"], [100]),
        ([b"z"], [b"x"], [100]),
        ([b"w"], [b"z", b"y", b"x"], [200, 200, 100]),  # most recent first
    ]
    assert train[3]["event"] == [b"buy"] and train[3]["weight"] == [3.0]
    assert built.stats["min_history_gap_s"] == 100


def test_history_is_truncated_to_the_last_h_items():
    rows = [("a", f"i{k}", 10 * k, "click", 1.0) for k in range(1, 8)]
    last = decoded(build_shard_examples(events(rows), WINDOW, history_length=3).train)[-1]
    assert last["history_item_ids"] == [b"i6", b"i5", b"i4"]


def test_eval_queries_use_history_before_eval_start_and_collect_labels():
    built = build_shard_examples(
        events(
            [
                ("a", "x", 100, "click", 1.0),
                ("a", "y", 900, "click", 1.0),
                ("a", "q", 1000, "click", 1.0),  # exactly eval_start: eval, not train
                ("a", "x", 1500, "click", 1.0),  # repeat of a seen item is still a label
                ("b", "n", 1200, "click", 1.0),  # user only in the eval period
                ("c", "m", 1999, "click", 1.0),  # last second inside the window
                ("c", "late", 2000, "click", 1.0),  # window_end is exclusive
            ]
        ),
        WINDOW,
        history_length=5,
    )
    train = decoded(built.train)
    assert [t["item_id"] for t in train] == [[b"x"], [b"y"]]
    queries = {q["user_id"][0]: q for q in decoded(built.eval)}
    assert set(queries) == {b"a", b"b", b"c"}
    a = queries[b"a"]
    assert a["history_item_ids"] == [b"y", b"x"] and a["seen_item_ids"] == [b"x", b"y"]
    assert a["label_item_ids"] == [b"q", b"x"] and a["timestamp"] == [1000]
    b = queries[b"b"]
    assert (
        b["history_item_ids"] == [] and b["seen_item_ids"] == [] and b["label_item_ids"] == [b"n"]
    )
    assert queries[b"c"]["label_item_ids"] == [b"m"]
    assert built.stats["eval_interactions"] == 4


def test_user_features_and_no_derived_time_features():
    users = pd.DataFrame(
        {"country": ["DE"], "device": ["ios"]}, index=pd.Index(["a"], name="user_id")
    )
    monday_13h = int(pd.Timestamp("2026-01-05T13:20:00", tz="UTC").timestamp())
    window = FeatureWindow(0, 0, monday_13h + 10, monday_13h + 20)
    built = build_shard_examples(
        events([("a", "x", monday_13h, "click", 1.0), ("z", "x", monday_13h, "click", 1.0)]),
        window,
        5,
        users,
    )
    a, z = decoded(built.train)
    assert a["timestamp"] == [monday_13h]
    assert "hour" not in a and "day_of_week" not in a  # the query tower derives them
    assert a["user_country"] == [b"DE"] and a["user_device"] == [b"ios"]
    assert z["user_country"] == [b""]  # user missing from the users table


def brute_force_train(frame: pd.DataFrame, window: FeatureWindow, h: int) -> list[tuple]:
    """For every train event: the user's last h events strictly earlier (most recent first)."""
    out = []
    ordered = frame.sort_values(
        ["user_id", "timestamp", "item_id", "event", "weight"], kind="stable"
    )
    for row in ordered.itertuples():
        if not window.window_start <= row.timestamp < window.eval_start:
            continue
        mine = ordered[
            (ordered.user_id == row.user_id)
            & (ordered.timestamp < row.timestamp)
            & (ordered.timestamp >= window.history_start)
        ]
        last = mine.iloc[::-1].iloc[:h]
        out.append(
            (row.user_id, row.item_id, row.timestamp, tuple(last.item_id), tuple(last.timestamp))
        )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_events(seed):
    rng = np.random.default_rng(seed)
    n = 400
    frame = events(
        list(
            zip(
                rng.choice(["u1", "u2", "u3", "u4", "u5"], n),
                rng.choice([f"i{k}" for k in range(30)], n),
                rng.integers(0, 2000, n) // 7 * 7,  # coarse times: many ties
                rng.choice(["click", "buy"], n),
                rng.choice([1.0, 2.0], n),
                strict=True,
            )
        )
    )
    window = FeatureWindow(history_start=100, window_start=300, eval_start=1500, window_end=1900)
    built = build_shard_examples(frame.sample(frac=1, random_state=seed), window, history_length=4)
    got = [
        (
            d["user_id"][0].decode(),
            d["item_id"][0].decode(),
            d["timestamp"][0],
            tuple(x.decode() for x in d["history_item_ids"]),
            tuple(d["history_timestamps"]),
        )
        for d in decoded(built.train)
    ]
    assert got == brute_force_train(frame, window, 4)
    for query in decoded(built.eval):
        assert max(query["history_timestamps"], default=-1) < window.eval_start


def test_same_events_in_any_order_give_identical_bytes():
    rng = np.random.default_rng(5)
    frame = events(
        [
            (f"u{k % 7}", f"i{k % 11}", int(t), "click", 1.0)
            for k, t in enumerate(rng.integers(0, 2000, 300))
        ]
    )
    first = build_shard_examples(frame, WINDOW, 5)
    second = build_shard_examples(frame.iloc[::-1], WINDOW, 5)
    assert first.train == second.train and first.eval == second.eval


def test_shard_files_are_framed_like_record_by_record():
    """`frame_records` writes the file `encode_record` would, record for record."""
    rng = np.random.default_rng(3)
    frame = events(
        [
            (f"u{k % 13}", f"i{k % 17}", int(t), "click", float(k % 3))
            for k, t in enumerate(rng.integers(0, 2000, 400))
        ]
    )
    built = build_shard_examples(frame, WINDOW, 7)
    for records in (built.train, built.eval, built.heldout):
        assert isinstance(records, RecordFile) and len(records) > 0
        assert records.data == b"".join(encode_record(r) for r in records)
        assert [decode_example(r) for r in records[:3]] == [
            decode_example(records[i]) for i in range(3)
        ]


@pytest.mark.parametrize("h", [1, 3, 100])
def test_history_ranges_match_point_in_time_history(h):
    """The records slice each history as the rows first - 1 down to first - length."""
    rng = np.random.default_rng(h)
    users = np.sort(rng.integers(0, 30, 500))
    t = np.sort(rng.integers(0, 50, 500))  # ascending within each user once sorted below
    order = np.lexsort((t, users))
    users, t = users[order], t[order]
    user_start, tie_start = schema.event_groups(users, t)
    rows, lengths = schema.point_in_time_history(user_start, tie_start, h)
    ranges = history_lengths(user_start, tie_start, h)
    assert (ranges == lengths).all()
    expected = np.where(
        np.arange(h)[None, :] < ranges[:, None], tie_start[:, None] - 1 - np.arange(h), -1
    )
    assert (rows == expected).all()


def test_user_shard_is_stable_and_spread():
    ids = np.array([f"u{k}" for k in range(1000)])
    shards = user_shard(ids, 8)
    assert shards.min() >= 0 and shards.max() < 8
    assert np.bincount(shards, minlength=8).min() > 80
    assert (user_shard(ids[::-1], 8) == shards[::-1]).all()
