"""The serving state: histories as the feature job builds them, written per user shard and
read shard by shard, and a popularity fallback of catalog items only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.errors import PipelineError
from pipelines.features.records import build_shard_examples, user_shard
from pipelines.features.window import FeatureWindow
from pipelines.formats.example_decoder import decode_example
from pipelines.serving import (
    POPULAR_FILE,
    STATE_DIR,
    STATE_FILE,
    ServingState,
    build_serving_state,
    copy_serving_state,
    popular_items,
    read_state,
)

DAY = 86_400
END = 100 * DAY


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_popularity_fallback_skips_items_outside_the_catalog():
    """An unknown item tolerated by the checks is the most popular one this week: the
    fallback must not serve it (it has no embedding, no index row)."""
    frame = events(
        [("u1", "ghost", END - DAY)] * 9
        + [("u2", "a", END - DAY)] * 3
        + [("u3", "b", END - 2 * DAY)] * 2
        + [("u4", "c", END - 30 * DAY)] * 5  # popular in the window, not this week
    )
    assert popular_items(frame, END, {"a", "b", "c", "d"}) == ["a", "b", "c", "d"]
    assert popular_items(frame, END, {"a", "b", "c", "d"}, n=2) == ["a", "b"]


def test_serving_state_fallback_matches_the_exported_catalog(tmp_path):
    run_dir, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    (run_dir / "features").mkdir(parents=True)
    (run_dir / "raw" / "interactions").mkdir(parents=True)
    model_dir.mkdir()
    manifest = {
        "window_epoch_s": {"history_start": 0, "window_end": END},
        "config": {"history_length": 5},
    }
    (run_dir / "features" / "manifest.json").write_text(json.dumps(manifest))
    frame = events([("u1", "eval-only-item", END - 10)] * 5 + [("u1", "x", END - 20)])
    frame.to_parquet(run_dir / "raw" / "interactions" / "part-00000.parquet", index=False)
    (model_dir / "item_ids.txt").write_text("x\ny\n")
    build_serving_state(run_dir, model_dir)
    served = (model_dir / POPULAR_FILE).read_text().splitlines()
    assert served == ["x", "y"]


def _run_dir(tmp_path, frame, history_length):
    run_dir, model_dir = tmp_path / "run", tmp_path / "run" / "model"
    (run_dir / "features").mkdir(parents=True)
    (run_dir / "raw" / "interactions").mkdir(parents=True)
    model_dir.mkdir()
    manifest = {
        "window_epoch_s": {"history_start": 0, "window_end": END},
        "config": {"history_length": history_length},
    }
    (run_dir / "features" / "manifest.json").write_text(json.dumps(manifest))
    frame.to_parquet(run_dir / "raw" / "interactions" / "part-00000.parquet", index=False)
    (model_dir / "item_ids.txt").write_text("x\n")
    return run_dir, model_dir


def test_serving_history_is_the_feature_jobs_history_at_the_window_end(tmp_path):
    """Same rule, same order on ties: the history served equals the history a train example
    right after the window end would carry (events sharing a timestamp in item order, whatever
    order they were stored in)."""
    rows = [("u1", "c", 300), ("u1", "b", 300), ("u1", "a", 100), ("u1", "d", 300), ("u2", "x", 50)]
    run_dir, model_dir = _run_dir(tmp_path, events(rows), history_length=3)
    build_serving_state(run_dir, model_dir)
    state, _ = read_state(model_dir)

    probes = [("u1", "probe", END + 1), ("u2", "probe", END + 1)]
    frame = events(rows + probes).assign(event="click", weight=1.0)
    built = build_shard_examples(frame, FeatureWindow(0, 0, END + 2, END + 3), history_length=3)
    trained = {
        d["user_id"][0].decode(): d
        for d in map(decode_example, built.train)
        if d["item_id"] == [b"probe"]
    }
    for user in ("u1", "u2"):
        served = state.loc[user]
        assert [i.encode() for i in served["history_item_ids"]] == trained[user]["history_item_ids"]
        assert list(served["history_timestamps"]) == trained[user]["history_timestamps"]
    assert list(state.loc["u1", "history_item_ids"]) == ["d", "c", "b"]
    assert list(state.loc["u1", "seen_item_ids"]) == ["a", "b", "c", "d"]


def _world(seed=0, users=240, items=60):
    """Events with timestamp ties, repeats and events outside the window, a user table that
    misses some event users and has users without events."""
    rng = np.random.default_rng(seed)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in rng.integers(0, users, n)],
            "item_id": [f"i{i:02d}" for i in rng.integers(0, items, n)],
            "timestamp": rng.integers(0, 40, n) * (3 * DAY) - DAY,  # some < 0, some >= END
        }
    )
    table = pd.DataFrame(
        {
            "user_id": [f"u{u:03d}" for u in range(0, users + 20, 2)],
            "country": [("DE", "FR", None)[u % 3] for u in range(0, users + 20, 2)],
        }
    )
    return frame, table


def _reference(frame, table, h):
    """The state as one pandas frame: the single-pass build this module replaced."""
    inside = frame[(frame.timestamp >= 0) & (frame.timestamp < END)]
    inside = inside.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    rows = {}
    for user, group in inside.groupby("user_id", sort=True):
        last = group.iloc[::-1][:h]
        rows[user] = {
            "history_item_ids": list(last.item_id),
            "history_timestamps": list(last.timestamp),
            "seen_item_ids": sorted(set(group.item_id)),
        }
    for user in table.user_id:
        rows.setdefault(user, {"history_item_ids": [], "history_timestamps": [],
                               "seen_item_ids": []})  # fmt: skip
    state = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    return state.join(table.set_index("user_id").add_prefix("user_")), inside


def _built(tmp_path, frame, table, shards, catalog):
    """A run whose feature job made `shards` user shards (in its config, or, with a config
    that left it to the job, only in the list of shards)."""
    run_dir, model_dir = _run_dir(tmp_path, frame, history_length=4)
    manifest = json.loads((run_dir / "features" / "manifest.json").read_text())
    manifest["config"]["shards"] = shards if shards > 2 else None
    manifest["shards"] = [{"shard": s} for s in range(shards)]
    (run_dir / "features" / "manifest.json").write_text(json.dumps(manifest))
    table.to_parquet(run_dir / "raw" / "users.parquet", index=False)
    (model_dir / "item_ids.txt").write_text("".join(f"{i}\n" for i in sorted(catalog)))
    return run_dir, model_dir


def test_sharded_state_and_fallback_equal_the_single_pass_build(tmp_path, monkeypatch):
    """Per user shard, read in batches of 7 events, written 50 at a time, item counts merged a
    few shards at a time: the same rows, lists, features and fallback (ties in
    first-appearance order) as one frame of every event gives."""
    import pipelines.serving.events
    import pipelines.serving.popularity

    frame, table = _world()
    catalog = {f"i{i:02d}" for i in range(0, 70, 2)}  # half the items, and some never seen
    run_dir, model_dir = _built(tmp_path, frame, table, shards=4, catalog=catalog)
    (model_dir / STATE_FILE).write_text("an older build's file")
    monkeypatch.setattr(pipelines.serving.events, "SCAN_ROWS", 7)
    monkeypatch.setattr(pipelines.serving.events, "SPILL_ROWS", 50)
    monkeypatch.setattr(pipelines.serving.popularity, "MERGE_ROWS", 30)
    summary = build_serving_state(run_dir, model_dir)

    expected, inside = _reference(frame, table, h=4)
    state, popular = read_state(model_dir)
    assert summary == {"users": len(expected), "window_end": END, "shards": 4}
    assert sorted(state.index) == list(expected.index)
    for column in ("history_item_ids", "history_timestamps", "seen_item_ids"):
        got = state[column].map(list).sort_index()
        assert got.to_dict() == expected[column].to_dict(), column
    got = state["user_country"].sort_index()
    assert got.fillna("-").to_dict() == expected["user_country"].fillna("-").to_dict()
    assert popular == popular_items(inside, END, catalog)
    assert not (model_dir / STATE_FILE).exists()
    assert sorted(p.name for p in model_dir.iterdir()) == ["item_ids.txt", POPULAR_FILE, STATE_DIR]

    for shard, path in enumerate(ServingState(model_dir).files):
        users = pd.read_parquet(path)["user_id"].tolist()
        assert users == sorted(users)
        assert set(user_shard(np.array(users, dtype=object), 4)) <= {shard}


def test_lookup_reads_only_the_shards_of_the_users_asked_for(tmp_path):
    frame, table = _world(seed=1)
    run_dir, model_dir = _built(tmp_path, frame, table, shards=4, catalog={"i00"})
    build_serving_state(run_dir, model_dir)
    whole, _ = read_state(model_dir)
    state = ServingState(model_dir, cache_bytes=0)  # keeps only the shard in use
    users = sorted(whole.index)
    shard = user_shard(np.array(users, dtype=object), 4)
    mine = [u for u, s in zip(users, shard, strict=True) if s == 2][:5]
    for s, path in enumerate(state.files):
        if s != 2:
            path.unlink()  # a lookup of shard-2 users must not need the others
    rows = state.lookup(["nobody", mine[3], mine[0], mine[3]])
    assert list(rows.index) == [mine[3], mine[0], mine[3]]
    assert rows.loc[mine[0], "seen_item_ids"].tolist() == list(whole.loc[mine[0], "seen_item_ids"])
    assert state.lookup(["nobody"]).empty and state.max_history == 4


def test_a_state_manifest_that_does_not_match_its_files_is_refused_by_name(tmp_path):
    frame, table = _world(seed=2, users=20)
    run_dir, model_dir = _built(tmp_path, frame, table, shards=2, catalog={"i00"})
    build_serving_state(run_dir, model_dir)
    meta_path = model_dir / STATE_DIR / "state.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(
        json.dumps({**meta, "files": ["../../elsewhere.parquet", meta["files"][1]]})
    )
    with pytest.raises(PipelineError, match="'../../elsewhere.parquet' is not part-SSSSS"):
        ServingState(model_dir)
    meta_path.unlink()
    with pytest.raises(PipelineError, match="no serving state"):
        ServingState(model_dir)


def test_a_model_with_the_same_catalog_gets_a_copy_of_the_state(tmp_path):
    """The final fit's directory: same window, same catalog, so the same state, copied."""
    frame, table = _world(seed=3, users=30)
    run_dir, model_dir = _built(tmp_path, frame, table, shards=3, catalog={"i00", "i02"})
    summary = build_serving_state(run_dir, model_dir)
    final, other = run_dir / "model_final", run_dir / "other"
    for directory, ids in ((final, "i00\ni02\n"), (other, "i00\n")):
        directory.mkdir()
        (directory / "item_ids.txt").write_text(ids)
    assert copy_serving_state(model_dir, final) == summary
    assert read_state(final)[0].equals(read_state(model_dir)[0])
    assert read_state(final)[1] == read_state(model_dir)[1]
    assert copy_serving_state(model_dir, other) is None
    assert sorted(p.name for p in other.iterdir()) == ["item_ids.txt"]
