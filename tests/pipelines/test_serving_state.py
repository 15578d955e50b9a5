"""The serving state's popularity fallback serves only catalog items."""

from __future__ import annotations

import json

import pandas as pd

from pipelines.serving import POPULAR_FILE, build_serving_state, popular_items

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
