"""The split plan: holdout cuts, validation carved from training, the auto eval design, and the
records built from them, against a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.config import FeaturesConfig
from pipelines.errors import ConfigError
from pipelines.features.records import build_shard_examples
from pipelines.features.split import holdout_cuts, plan_split, validation_order
from pipelines.features.window import FeatureWindow
from pipelines.formats.example_decoder import decode_example
from pipelines.schema import UserCuts

WINDOW = FeatureWindow(history_start=0, window_start=0, eval_start=1000, window_end=2000)
HOLDOUT = FeaturesConfig(eval_design="holdout", min_validation_queries=0,
                         validation_user_fraction=0.0)  # fmt: skip


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "weight"])


def plan(frame, cfg, window=WINDOW):
    return plan_split(frame["user_id"].to_numpy(), frame["timestamp"].to_numpy(), window, cfg)


def by_user(records):
    return {d["user_id"][0].decode(): d for d in map(decode_example, records)}


def test_holdout_cut_rounds_keeps_an_earlier_interaction_and_sends_ties_later():
    cuts = holdout_cuts(
        np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 2 + ["d"] * 3 + ["e"]),
        np.array(
            list(range(10, 110, 10))  # a: 10 events, 20% = the last 2
            + [5, 7, 7]  # b: last 1 is a tie at 7: both 7s go to the held-out side
            + [3, 3]  # c: one timestamp only: cannot be cut
            + [4, 4, 9]  # d: first two tie: the cut still keeps them both earlier
            + [1]  # e: a single interaction
        ),
        0.2,
    )
    assert cuts.to_dict() == {"a": 90, "b": 7, "d": 9}


def test_holdout_never_holds_out_everything():
    # fraction 0.9 of 2 rounds to 2: clipped to n - 1 so the user keeps one earlier interaction.
    assert holdout_cuts(np.array(["a", "a"]), np.array([1, 2]), 0.9).to_dict() == {"a": 2}
    # Every interaction but the first ties at the k-th last: all of them are held out.
    assert holdout_cuts(np.array(["a"] * 4), np.array([1, 5, 5, 5]), 0.25).to_dict() == {"a": 5}


def random_events(seed: int, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return events(
        list(
            zip(
                rng.choice([f"u{k}" for k in range(12)], n),
                rng.choice([f"i{k}" for k in range(25)], n),
                rng.integers(0, 2100, n) // 9 * 9,  # coarse times: many ties
                rng.choice(["click", "buy"], n),
                rng.choice([1.0, 2.0], n),
                strict=True,
            )
        )
    )


def brute_force(frame, window, fraction, validation_users, h):
    """Every user's cuts, train rows, validation and eval queries and held-out rows, one user
    at a time."""

    def cut_of(times):
        times = sorted(times)
        n = len(times)
        k = min(max(1, math.floor(fraction * n + 0.5)), n - 1) if n > 1 else 0
        if len(set(times)) < 2:
            return None
        cut = times[n - k]
        return cut if times[0] < cut else min(t for t in times if t > times[0])

    ordered = frame.sort_values(
        ["user_id", "timestamp", "item_id", "event", "weight"], kind="stable"
    )
    ordered = ordered[ordered.timestamp < window.window_end]
    train, valid, evaluation, heldout = [], {}, {}, []

    def query(mine, cut, end):
        before = mine[mine.timestamp < cut]
        labelled = mine[(mine.timestamp >= cut) & (mine.timestamp < end)]
        last = before.iloc[::-1].iloc[:h]
        return {
            "timestamp": int(labelled.timestamp.iloc[0]),
            "history": (tuple(last.item_id), tuple(last.timestamp)),
            "seen": tuple(sorted(set(before.item_id))),
            "labels": tuple(sorted(set(labelled.item_id))),
        }

    for user, mine in ordered.groupby("user_id"):
        inside = mine[mine.timestamp >= window.window_start]
        eval_cut = cut_of(list(inside.timestamp)) or window.window_end
        train_part = inside[inside.timestamp < eval_cut]
        train_end = eval_cut
        if user in validation_users:
            train_end = cut_of(list(train_part.timestamp))
            valid[user] = query(mine, train_end, eval_cut)
        if eval_cut < window.window_end:
            evaluation[user] = query(mine, eval_cut, window.window_end)
        for row in inside.itertuples():
            last = mine[mine.timestamp < row.timestamp].iloc[::-1].iloc[:h]
            example = (user, row.item_id, row.timestamp, tuple(last.item_id))
            (train if row.timestamp < train_end else heldout).append(example)
    return sorted(train), valid, evaluation, sorted(heldout)


def as_query(d):
    return {
        "timestamp": d["timestamp"][0],
        "history": (
            tuple(x.decode() for x in d["history_item_ids"]),
            tuple(d["history_timestamps"]),
        ),
        "seen": tuple(x.decode() for x in d["seen_item_ids"]),
        "labels": tuple(x.decode() for x in d["label_item_ids"]),
    }


def examples_of(records):
    """Train-format records as sorted (user, item, timestamp, history items) tuples."""
    return sorted(
        (d["user_id"][0].decode(), d["item_id"][0].decode(), d["timestamp"][0],
         tuple(x.decode() for x in d["history_item_ids"]))
        for d in map(decode_example, records)
    )  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holdout_records_match_brute_force(seed):
    frame = random_events(seed)
    window = FeatureWindow(history_start=0, window_start=0, eval_start=1500, window_end=2000)
    cfg = FeaturesConfig(eval_design="holdout", min_validation_queries=4,
                         validation_user_fraction=0.1, holdout_fraction=0.3)  # fmt: skip
    split = plan(frame, cfg, window)
    built = build_shard_examples(
        frame.sample(frac=1, random_state=seed), split.window, 3, cuts=split.cuts
    )
    chosen = set(split.cuts.table.index[split.cuts.table.train_end < split.cuts.table.eval_cut])
    assert len(chosen) == 4
    train, valid, evaluation, heldout = brute_force(frame, window, 0.3, chosen, 3)
    assert examples_of(built.train) == train
    # Held out: exactly the validation and eval interactions, with point-in-time histories.
    assert examples_of(built.heldout) == heldout
    assert len(heldout) == built.stats["valid_interactions"] + built.stats["eval_interactions"]
    assert {u: as_query(d) for u, d in by_user(built.valid).items()} == valid
    assert {u: as_query(d) for u, d in by_user(built.eval).items()} == evaluation
    # Holdout: every eval user is warm, and eval_start is the earliest held-out moment.
    assert split.summary["eval_queries"] == split.summary["warm_eval_queries"] == len(evaluation)
    assert split.window.eval_start == min(q["timestamp"] for q in evaluation.values())
    assert split.window.window_end == window.window_end


def test_holdout_on_a_hand_made_table():
    frame = events([
        ("a", "x", 100, "click", 1.0),
        ("a", "y", 200, "click", 1.0),
        ("a", "z", 300, "click", 1.0),
        ("a", "w", 300, "click", 1.0),  # ties with z: both held out
        ("a", "v", 400, "click", 1.0),
        ("b", "x", 500, "click", 1.0),  # one interaction: trains, no query
        ("c", "y", 50, "click", 1.0),
        ("c", "x", 1900, "click", 1.0),
    ])  # fmt: skip
    cfg = HOLDOUT.model_copy(update={"holdout_fraction": 0.4})
    split = plan(frame, cfg)
    assert split.design == "holdout" and split.cuts.table.eval_cut.to_dict() == {
        "a": 300,
        "c": 1900,
    }
    assert split.window.eval_start == 300 and split.window.window_end == 2000
    built = build_shard_examples(frame, split.window, 5, cuts=split.cuts)
    train = sorted((d["user_id"][0], d["item_id"][0]) for d in map(decode_example, built.train))
    assert train == [(b"a", b"x"), (b"a", b"y"), (b"b", b"x"), (b"c", b"y")]
    queries = by_user(built.eval)
    assert set(queries) == {"a", "c"}
    a = queries["a"]
    assert a["timestamp"] == [300] and a["label_item_ids"] == [b"v", b"w", b"z"]
    assert a["history_item_ids"] == [b"y", b"x"] and a["seen_item_ids"] == [b"x", b"y"]
    assert queries["c"]["label_item_ids"] == [b"x"] and queries["c"]["history_timestamps"] == [50]
    assert built.valid == [] and built.stats["eval_interactions"] == 4


def test_validation_is_carved_from_training_and_deterministic():
    frame = random_events(7, n=600)
    cfg = FeaturesConfig(eval_design="temporal", min_validation_queries=3,
                         validation_user_fraction=0.25)  # fmt: skip
    split = plan(frame, cfg)
    again = plan(frame.iloc[::-1], cfg)
    pd.testing.assert_frame_equal(split.cuts.table, again.cuts.table)
    table = split.cuts.table
    assert (table.eval_cut == WINDOW.eval_start).all() and split.cuts.default == WINDOW.eval_start
    chosen = list(table.index)
    eligible = sorted(frame.loc[frame.timestamp < 1000].groupby("user_id").timestamp.nunique()
                      .loc[lambda s: s >= 2].index)  # fmt: skip
    assert len(chosen) == max(3, math.ceil(0.25 * len(eligible)))
    assert chosen == sorted(validation_order(np.array(eligible))[: len(chosen)])

    built = build_shard_examples(frame, WINDOW, 4, cuts=split.cuts)
    train = [decode_example(r) for r in built.train]
    valid = by_user(built.valid)
    assert sorted(valid) == chosen
    for user, query in valid.items():
        cut = table.loc[user, "train_end"]
        mine = [d for d in train if d["user_id"][0].decode() == user]
        # Held-out interactions are labels, never examples; the user keeps earlier examples.
        assert mine and max(d["timestamp"][0] for d in mine) < cut == query["timestamp"][0]
        assert max(query["history_timestamps"]) < cut
        held = frame[(frame.user_id == user) & (frame.timestamp >= cut) & (frame.timestamp < 1000)]
        assert query["label_item_ids"] == sorted(x.encode() for x in set(held.item_id))
    window_rows = ((frame.timestamp >= 0) & (frame.timestamp < 1000)).sum()
    assert len(train) + built.stats["valid_interactions"] == window_rows
    assert built.train == build_shard_examples(frame.iloc[::-1], WINDOW, 4, cuts=split.cuts).train


def test_heldout_examples_are_the_validation_and_eval_interactions():
    """Temporal design with validation users: every window interaction at or after its user's
    train_end (validation labels and the eval period) becomes a train-format example, with
    the history strictly before it, in a fixed order that mixes users."""
    frame = random_events(8, n=600)
    cfg = FeaturesConfig(eval_design="temporal", min_validation_queries=3,
                         validation_user_fraction=0.25)  # fmt: skip
    split = plan(frame, cfg)
    built = build_shard_examples(frame.sample(frac=1, random_state=2), WINDOW, 4, cuts=split.cuts)
    ordered = frame.sort_values(["user_id", "timestamp", "item_id", "event", "weight"],
                                kind="stable")  # fmt: skip
    train_end, _ = split.cuts.lookup(ordered["user_id"].to_numpy())
    t = ordered.timestamp.to_numpy()
    held = (t >= WINDOW.window_start) & (t < WINDOW.window_end) & (t >= train_end)
    expected = []
    for row in ordered[held].itertuples():
        mine = ordered[(ordered.user_id == row.user_id) & (ordered.timestamp < row.timestamp)]
        expected.append((row.user_id, row.item_id, row.timestamp,
                         tuple(mine.item_id.iloc[::-1].iloc[:4])))  # fmt: skip
    assert examples_of(built.heldout) == sorted(expected)
    stats = built.stats
    assert stats["heldout_examples"] == stats["valid_interactions"] + stats["eval_interactions"]
    assert stats["valid_interactions"] > 0 and stats["eval_interactions"] > 0
    assert not set(examples_of(built.heldout)) & set(examples_of(built.train))
    users = [decode_example(r)["user_id"][0] for r in built.heldout]
    assert users != sorted(users)  # mixed, not user by user
    again = build_shard_examples(frame.iloc[::-1], WINDOW, 4, cuts=split.cuts)
    assert again.heldout == built.heldout


def test_validation_order_is_a_stable_hash_order():
    ids = np.array([f"user-{k}" for k in range(50)])
    order = validation_order(ids)
    assert sorted(order) == sorted(ids) and list(order) != sorted(ids)
    assert list(validation_order(ids[::-1])) == list(order)


def two_periods(warm_eval_users: int) -> pd.DataFrame:
    """40 users with three train-period events; `warm_eval_users` of them come back in eval."""
    rows = [(f"u{u}", f"i{k}", 100 * k + u, "click", 1.0) for u in range(40) for k in range(3)]
    rows += [(f"u{u}", "i9", 1500 + u, "click", 1.0) for u in range(warm_eval_users)]
    rows += [(f"new{u}", "i9", 1600 + u, "click", 1.0) for u in range(30)]  # cold eval users
    return events(rows)


def test_auto_keeps_temporal_when_the_eval_period_has_enough_warm_queries():
    cfg = FeaturesConfig(min_warm_eval_queries=20)
    split = plan(two_periods(25), cfg)
    assert split.design == "temporal" and split.window == WINDOW
    s = split.summary
    assert (s["warm_eval_queries"], s["cold_eval_queries"], s["eval_queries"]) == (25, 30, 55)
    assert "had 25 warm queries >= min_warm_eval_queries 20" in s["reason"]
    assert s["validation_queries"] == 40  # every eligible user: fewer than 500 exist


def test_auto_switches_to_holdout_when_warm_queries_are_few():
    cfg = FeaturesConfig(min_warm_eval_queries=20)
    split = plan(two_periods(5), cfg)
    s = split.summary
    assert split.design == s["design"] == "holdout"
    assert s["reason"].startswith(
        "temporal eval period [1970-01-01T00:16:40+00:00, 1970-01-01T00:33:20+00:00) had 5 warm "
        "queries < min_warm_eval_queries 20: per-user holdout of each user's last 20% interactions"
    )
    # The 40 users with several interactions each hold out their last one; the 30 one-off users
    # cannot be held out and train on theirs.
    assert s["eval_queries"] == s["warm_eval_queries"] == 40 and s["cold_eval_queries"] == 0
    assert (s["temporal_warm_eval_queries"], s["temporal_eval_queries"]) == (5, 35)
    # u0-u4 hold out their eval-period event; u5 is the first of the rest (its event at 205).
    assert split.window.eval_start == split.cuts.table.eval_cut.min() == 205


def test_forced_designs_and_a_holdout_without_candidates():
    frame = two_periods(5)
    assert plan(frame, FeaturesConfig(eval_design="temporal")).design == "temporal"
    assert plan(frame, FeaturesConfig(eval_design="holdout",
                                      min_warm_eval_queries=0)).design == "holdout"  # fmt: skip
    once = events([("a", "x", 10, "click", 1.0), ("b", "x", 1200, "click", 1.0)])
    with pytest.raises(ConfigError, match="eval_design='holdout' needs users"):
        plan(once, HOLDOUT)
    assert plan(once, FeaturesConfig()).design == "temporal"  # auto: nothing to hold out


def test_user_cuts_round_trip_through_parquet(tmp_path):
    split = plan(two_periods(5), FeaturesConfig(min_warm_eval_queries=20))
    path = tmp_path / "cuts.parquet"
    path.write_bytes(split.cuts.to_bytes())
    back = UserCuts.read(str(path))
    assert back.default == split.cuts.default == WINDOW.window_end
    pd.testing.assert_frame_equal(back.table, split.cuts.table)
    train_end, eval_cut = back.lookup(np.array(["u0", "new1"]))
    assert eval_cut.tolist() == [split.cuts.table.loc["u0", "eval_cut"], WINDOW.window_end]
    assert train_end[1] == WINDOW.window_end


@pytest.mark.parametrize("design", ["holdout", "temporal"])
def test_beam_and_local_write_identical_bytes_for_every_split(tmp_path, design):
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.features.beam_job import run_beam
    from pipelines.features.local import run_local

    raw = tmp_path / "raw"
    (raw / "interactions").mkdir(parents=True)
    frame = random_events(3, n=2000)
    frame["user_id"] = frame["user_id"] + frame.index.map(lambda k: f"-{k % 5}")  # 60 users
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                   raw / "interactions" / "part-00000.parquet", row_group_size=300)  # fmt: skip
    cfg = FeaturesConfig(eval_design=design, shards=3, min_validation_queries=10)
    manifests = {
        "local": run_local(str(raw), str(tmp_path / "local"), WINDOW, cfg),
        "beam": run_beam(str(raw), str(tmp_path / "beam"), WINDOW, cfg,
                         ["--direct_running_mode=in_memory", "--direct_num_workers=1"]),
    }  # fmt: skip

    def digest(engine):
        root = tmp_path / engine
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"
        }

    assert digest("local") == digest("beam")
    assert len([p for p in digest("beam") if p.startswith("valid/")]) == 3
    assert len([p for p in digest("beam") if p.startswith("heldout/")]) == 3
    local, beam = manifests["local"], manifests["beam"]
    assert local["counts"] == beam["counts"] and local["window"] == beam["window"]
    assert local["split"]["design"] == beam["split"]["design"] == design
    # 20% of the 60 users (12) beats min_validation_queries 10.
    assert beam["counts"]["valid_queries"] == beam["split"]["validation_queries"] == 12
    assert beam["counts"]["eval_queries"] == beam["split"]["eval_queries"]
    assert beam["counts"]["train_examples"] == beam["counts"]["train_interactions_counted"]
    counts = beam["counts"]
    assert counts["heldout_examples"] == counts["valid_interactions"] + counts["eval_interactions"]
    assert beam["splits"]["heldout"] == {
        **local["splits"]["heldout"],
        "files": [f.replace(str(tmp_path / "local"), str(tmp_path / "beam"))
                  for f in local["splits"]["heldout"]["files"]],
    }  # fmt: skip
    assert beam["splits"]["heldout"]["records"] == counts["heldout_examples"] > 0
