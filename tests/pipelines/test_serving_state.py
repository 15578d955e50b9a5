"""The serving state: histories as the feature job builds them, a popularity fallback of
catalog items only."""

from __future__ import annotations

import json

import pandas as pd

from pipelines.features.records import build_shard_examples
from pipelines.features.window import FeatureWindow
from pipelines.formats.example_decoder import decode_example
from pipelines.serving import POPULAR_FILE, STATE_FILE, build_serving_state, popular_items

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
    state = pd.read_parquet(model_dir / STATE_FILE).set_index("user_id")

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
