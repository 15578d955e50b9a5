"""`Recommender` on a tiny hand-built served directory (tests/conftest.py), whose rankings
are known in advance: u1's query is item i0's direction, u2's is i2's. Its state is one
serving_state.parquet, as in bundles built before the state was sharded."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from tiny_served import ITEMS, POPULAR, WINDOW_END

from pipelines.errors import UsageError
from pipelines.recommend import Recommender, recommend_stream
from pipelines.serving import build_serving_state


@pytest.fixture(scope="module")
def recommender(served_dir):
    return Recommender(served_dir)


def ids(result: dict) -> list[str]:
    return [item["item_id"] for item in result["items"]]


def test_seen_items_are_excluded_unless_asked_not_to(recommender):
    [u1] = recommender.recommend(["u1"], k=3)  # u1 saw i0 and i2
    assert u1["user_id"] == "u1" and u1["source"] == "model"
    assert ids(u1) == ["i1", "i3", "i4"]
    assert [item["score"] for item in u1["items"]] == [0.9, 0.0, -1.0]
    [with_seen] = recommender.recommend(["u1"], k=2, exclude_seen=False)
    assert ids(with_seen) == ["i0", "i1"]


def test_unknown_users_get_the_popularity_fallback_in_request_order(recommender):
    results = recommender.recommend(["nobody", "u2", "someone"], k=2)
    assert [r["user_id"] for r in results] == ["nobody", "u2", "someone"]
    assert [r["source"] for r in results] == ["popularity", "model", "popularity"]
    assert results[0]["items"] == [{"item_id": i, "score": None} for i in POPULAR[:2]]
    assert results[2]["items"] == results[0]["items"]
    assert ids(results[1])[0] == "i1"  # u2 saw i2; i1 is the only other item along i2


def test_a_user_with_features_but_no_history_is_served_by_the_model(recommender):
    [u3] = recommender.recommend(["u3"], k=1)
    assert u3["source"] == "model" and ids(u3) == ["i3"]


def test_k_bigger_than_the_catalog_returns_what_there_is_without_padding(recommender):
    [u1, nobody] = recommender.recommend(["u1", "nobody"], k=10)
    assert ids(u1) == ["i1", "i3", "i4"]  # five items, two seen
    assert sorted(ids(recommender.recommend(["u1"], k=10, exclude_seen=False)[0])) == ITEMS
    assert ids(nobody) == POPULAR


def test_k_below_one_is_a_usage_error(recommender):
    with pytest.raises(UsageError, match="--k must be >= 1, got 0"):
        recommender.recommend(["u1"], k=0)


def spy_on_embed(recommender, monkeypatch) -> list[dict]:
    calls = []
    embed = recommender.model.embed

    def spy(features):
        calls.append(features)
        return embed(features)

    monkeypatch.setattr(recommender.model, "embed", spy)
    return calls


def test_queries_are_built_from_the_state_at_the_data_window_end(served_dir, monkeypatch):
    recommender = Recommender(served_dir)
    calls = spy_on_embed(recommender, monkeypatch)
    recommender.recommend(["u2", "u1"], k=1)
    [features] = calls
    assert list(features["user_id"]) == ["u2", "u1"]
    np.testing.assert_array_equal(features["timestamp"], [WINDOW_END, WINDOW_END])
    assert features["history_item_ids"].tolist() == [["i2", ""], ["i0", "i2"]]
    assert features["history_timestamps"].tolist() == [[700, 0], [900, 800]]
    assert list(features["user_country"]) == ["", "DE"]  # a missing feature is ""


def test_query_time_is_given_or_follows_the_newest_history_event(served_dir, tmp_path, monkeypatch):
    at_given = Recommender(served_dir, at=1234)
    calls = spy_on_embed(at_given, monkeypatch)
    at_given.recommend(["u1"], k=1)
    assert calls[-1]["timestamp"].tolist() == [1234]

    copy = shutil.copytree(served_dir, tmp_path / "served")
    (copy / "manifest.json").unlink()  # no data window known
    no_window = Recommender(copy)
    calls = spy_on_embed(no_window, monkeypatch)
    no_window.recommend(["u1", "u2"], k=1)
    assert calls[-1]["timestamp"].tolist() == [901, 901]


@pytest.fixture(scope="module")
def sharded_dir(served_dir, tmp_path_factory):
    """The tiny served directory with its state rebuilt by `build_serving_state` (2 user
    shards) from events that give the same histories, and the same fallback file."""
    root = tmp_path_factory.mktemp("sharded")
    model_dir = shutil.copytree(served_dir, root / "run" / "model")
    (model_dir / "serving_state.parquet").unlink()
    (root / "run" / "features").mkdir()
    (root / "run" / "features" / "manifest.json").write_text(json.dumps({
        "window_epoch_s": {"history_start": 0, "window_end": WINDOW_END},
        "config": {"history_length": 2, "shards": 2},
    }))  # fmt: skip
    (root / "run" / "raw" / "interactions").mkdir(parents=True)
    events = [("u1", "i2", 800), ("u1", "i0", 900), ("u2", "i2", 700), ("u9", "i1", WINDOW_END)]
    pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]).to_parquet(
        root / "run" / "raw" / "interactions" / "part-0.parquet", index=False
    )
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "country": ["DE", None, "FR"]})
    users.to_parquet(root / "run" / "raw" / "users.parquet", index=False)
    build_serving_state(root / "run", model_dir)
    shutil.copy(served_dir / "popular_items.txt", model_dir / "popular_items.txt")
    return model_dir


def test_a_sharded_state_serves_what_the_single_file_state_served(served_dir, sharded_dir):
    """Old bundles (one serving_state.parquet) and new ones (a file per user shard) load, and
    the same events give the same recommendations."""
    assert not (sharded_dir / "serving_state.parquet").exists()
    old, new = Recommender(served_dir), Recommender(sharded_dir)
    assert len(new.state.files) == 2 and new.h == old.h == 2
    users = ["u1", "nobody", "u3", "u2", "u1"]
    for k, exclude_seen in ((1, True), (3, True), (10, True), (4, False)):
        assert new.recommend(users, k, exclude_seen) == old.recommend(users, k, exclude_seen)
    assert sorted(new.state.index) == ["u1", "u2", "u3"]


def test_recommend_stream_answers_a_file_batch_by_batch_in_input_order(sharded_dir, monkeypatch):
    recommender = Recommender(sharded_dir)
    lines = io.StringIO("u1\n\nnobody\nu2\n u3 \nu1\n")
    batches = []
    recommend = recommender.recommend

    def spy(users, **kwargs):
        batches.append(list(users))
        return recommend(users, **kwargs)

    monkeypatch.setattr(recommender, "recommend", spy)
    out = io.StringIO()
    assert recommend_stream(recommender, lines, out, k=2, batch=2) == 5
    assert batches == [["u1", "nobody"], ["u2", "u3"], ["u1"]]
    expected = recommend(["u1", "nobody", "u2", "u3", "u1"], k=2)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == expected
    with pytest.raises(UsageError, match="--k must be >= 1, got 0"):
        recommend_stream(recommender, io.StringIO("u1\n"), out, k=0)


def test_recommend_command_streams_a_users_file_into_out(
    sharded_dir, tmp_path, monkeypatch, capsys
):
    """`two-tower recommend --users FILE --out FILE` on a production bundle with a sharded
    state: answered 2 users at a time, written in input order, no partial file left."""
    import pipelines.recommend
    from pipelines.cli import main
    from pipelines.registry import Registry

    staging = shutil.copytree(sharded_dir, tmp_path / "staging")
    (staging / "manifest.json").unlink()
    registry = Registry(tmp_path / "root")
    registry.promote(registry.publish(staging, {"data_window": {"window_end": WINDOW_END}}))
    batches = []
    recommend = Recommender.recommend

    def spy(self, users, **kwargs):
        batches.append(len(users))
        return recommend(self, users, **kwargs)

    monkeypatch.setattr(pipelines.recommend, "STREAM_BATCH", 2)
    monkeypatch.setattr(Recommender, "recommend", spy)
    users, out = tmp_path / "users.txt", tmp_path / "recs.jsonl"
    users.write_text("u2\nnobody\n\nu1\nu3\nu2\n")
    root = str(tmp_path / "root")
    assert main(["recommend", "--artifact-root", root, "--users", str(users), "--out", str(out),
                 "--k", "2"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in lines] == ["u2", "nobody", "u1", "u3", "u2"]
    assert [r["source"] for r in lines] == ["model", "popularity", "model", "model", "model"]
    assert ids(lines[2]) == ["i1", "i3"] and batches == [2, 2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recs.jsonl", "root", "staging",
                                                          "users.txt"]  # fmt: skip
    assert "wrote 5 users to" in capsys.readouterr().err
    missing = ["recommend", "--artifact-root", root, "--users", str(tmp_path / "none.txt")]
    assert main(missing) == 2
    assert f"cannot read --users {tmp_path / 'none.txt'}: No such file" in capsys.readouterr().err
