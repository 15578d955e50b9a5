"""The serving path on a tiny hand-built served directory (tests/pipelines/conftest.py):
`ServingModel`, `read_state` and the popularity fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tiny_served import ITEMS, POPULAR, USER_VECTORS

import pipelines.serving
from pipelines.errors import PipelineError
from pipelines.serving import ServingModel, popular_items, read_state

DAY = 86_400
END = 100 * DAY


@pytest.fixture(scope="module")
def model(served_dir):
    return ServingModel(served_dir, threads=1)


def features(users, country=None, timestamp=5, history=(("i0", ""),)):
    out = {
        "user_id": np.array(users, dtype=object),
        "timestamp": np.full(len(users), timestamp, dtype=np.int64),
        "history_item_ids": np.array([list(history[0])] * len(users), dtype=object),
        "history_timestamps": np.zeros((len(users), len(history[0])), dtype=np.int64),
    }
    if country is not None:
        out["user_country"] = np.array(country, dtype=object)
    return out


def test_serving_model_reads_the_signature_and_the_index(model):
    assert set(model.inputs) == {
        "user_id",
        "timestamp",
        "history_item_ids",
        "history_timestamps",
        "user_country",
    }
    assert list(model.item_ids) == ITEMS and model.index.kind == "brute_force"
    assert model.row_of == {item: row for row, item in enumerate(ITEMS)}


def test_embed_feeds_every_input_and_fills_missing_ones_with_empty_strings(model):
    vectors = model.embed(features(["u1", "u2", "nobody"], country=["DE", "FR", "DE"]))
    assert vectors.shape == (3, 6) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], [*USER_VECTORS["u1"], 1, 5, 1])
    np.testing.assert_array_equal(vectors[1], [*USER_VECTORS["u2"], 0, 5, 1])
    np.testing.assert_array_equal(vectors[2], [0, 0, 0.5, 1, 5, 1])
    without_country = model.embed(features(["u1"]))
    np.testing.assert_array_equal(without_country[0], [*USER_VECTORS["u1"], 0, 5, 1])


def test_embed_in_batches_keeps_the_query_order(model, monkeypatch):
    users = ["u2", "u1", "x", "u1", "u2"]
    whole = model.embed(features(users, timestamp=7))
    monkeypatch.setattr(pipelines.serving, "_BATCH", 2)
    batched = model.embed(features(users, timestamp=7))
    np.testing.assert_array_equal(batched, whole)
    assert [tuple(v[:3]) for v in batched] == [
        (0, 1, 0),
        (1, 0, 0),
        (0, 0, 0.5),
        (1, 0, 0),
        (0, 1, 0),
    ]


def test_rows_maps_item_ids_to_index_rows_and_drops_unknown_ones(model):
    np.testing.assert_array_equal(model.rows(["i3", "ghost", "i0"]), [3, 0])
    assert model.rows([]).dtype == np.int64 and len(model.rows(["ghost"])) == 0


def test_a_directory_without_a_query_tower_is_refused_by_name(tmp_path):
    with pytest.raises(PipelineError, match=f"{tmp_path}: no query_tower/"):
        ServingModel(tmp_path)


def test_read_state_indexes_users_and_reads_the_fallback(served_dir):
    state, popular = read_state(served_dir)
    assert list(state.index) == ["u1", "u2", "u3"] and state.index.name == "user_id"
    assert list(state.loc["u1", "history_item_ids"]) == ["i0", "i2"]
    assert list(state.loc["u3", "seen_item_ids"]) == []
    assert popular == POPULAR


def events(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_popular_items_ranks_this_week_then_the_window_then_the_catalog():
    frame = events(
        [("u", "a", END - 30 * DAY)] * 5  # the window's favourite, not this week's
        + [("u", "b", END - DAY)] * 2
        + [("u", "c", END - 2 * DAY)] * 3
        + [("u", "d", END - 8 * DAY)] * 4
    )
    catalog = {"a", "b", "c", "d", "e", "f"}
    assert popular_items(frame, END, catalog) == ["c", "b", "a", "d", "e", "f"]
    assert popular_items(frame, END, catalog, n=3) == ["c", "b", "a"]
    assert popular_items(events([]), END, {"z", "y"}) == ["y", "z"]
