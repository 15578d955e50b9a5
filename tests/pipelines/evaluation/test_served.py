"""Eval queries through a served model (the tiny served directory of tests/pipelines/conftest.py),
and the index's own check against exact search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tiny_served import ITEMS

import pipelines.evaluation.ann
from pipelines.evaluation import ann_section, evaluate_served
from pipelines.evaluation.served import to_eval_catalog
from pipelines.serving import ServingModel


@pytest.fixture(scope="module")
def model(served_dir):
    return ServingModel(served_dir, threads=1)


@dataclasses.dataclass
class Cfg:
    ks: list


class StubEvalSet:
    """What `evaluate_served` reads of an `EvalSet`; `metrics` hands back what it was given."""

    def __init__(self, users, seen, item_ids, ks, created=None, times=None):
        n = len(users)
        self.cfg = Cfg(ks)
        self.item_ids = item_ids
        self.seen_ids = seen
        created = dict(sorted((created or {}).items(), key=lambda kv: kv[1]))  # oldest first
        self.created_ids = np.array(list(created), dtype=str)
        self.created_times = np.array(list(created.values()), np.float64)
        self.query_times = np.zeros(n) if times is None else np.asarray(times, np.float64)
        self.queries = {
            "user_id": np.array(users, dtype=object),
            "timestamp": np.zeros(n, np.int64),
            "history_item_ids": np.full((n, 1), "", dtype=object),
            "history_timestamps": np.zeros((n, 1), np.int64),
        }

    def metrics(self, ranked):
        return {"ranked": ranked}


def test_index_rows_map_to_the_eval_catalog_by_item_id():
    found = np.array([[0, 2, -1], [1, 0, 2]])
    ranked = to_eval_catalog(found, ["a", "b", "c"], ["c", "a", "z"])
    np.testing.assert_array_equal(ranked, [[1, 0, -1], [-1, 1, 0]])


def test_served_rankings_exclude_seen_items_and_use_the_eval_item_space(model):
    eval_items = ITEMS[::-1]  # another order than the index rows: mapped by id
    evalset = StubEvalSet(["u1", "u1"], [["i0", "i2"], []], eval_items, ks=[1, 2])
    metrics, ranked, ann = evaluate_served(model, evalset)
    position = {item: i for i, item in enumerate(eval_items)}
    expected = [[position["i1"], position["i3"]], [position["i0"], position["i1"]]]
    np.testing.assert_array_equal(ranked, expected)
    np.testing.assert_array_equal(metrics["ranked"], expected)
    assert ann["kind"] == "brute_force" and ann["queries"] == 2


def test_items_created_after_a_querys_moment_are_not_shown_to_it(model):
    """The same query asked at two moments: i1 (created at 100) and a created item the index
    does not hold are hidden at 50, i1 is shown at 100; items without a time always are."""
    eval_items = ITEMS[::-1]
    evalset = StubEvalSet(
        ["u1", "u1"], [["i0", "i2"], ["i0", "i2"]], eval_items, ks=[1, 2],
        created={"i1": 100.0, "i3": 10.0, "not-indexed": 60.0}, times=[50.0, 100.0],
    )  # fmt: skip
    _, ranked, _ = evaluate_served(model, evalset)
    _, unfiltered, _ = evaluate_served(
        model, StubEvalSet(["u1"], [["i0", "i2"]], eval_items, [1, 2])
    )
    position = {item: i for i, item in enumerate(eval_items)}
    assert position["i1"] in unfiltered[0]  # i1 would be shown without its creation time
    assert position["i1"] not in ranked[0] and position["i1"] in ranked[1]
    np.testing.assert_array_equal(ranked[1], unfiltered[0])
    assert position["i3"] in ranked[0]  # created (at 10) before both moments


def test_ann_section_measures_the_index_against_exact_search(model, monkeypatch):
    vectors = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    ann = ann_section(model, vectors)
    assert ann["k"] == len(ITEMS) and ann[f"recall@{len(ITEMS)}"] == 1.0  # brute force is exact
    assert ann["queries"] == 10 and ann["build_seconds"] == model.index.manifest["build_seconds"]
    assert ann["size_mb"] == round(model.index.manifest["size_bytes"] / 2**20, 3)
    assert ann["latency_p50_ms"] is None  # the tiny index was never tuned
    monkeypatch.setattr(pipelines.evaluation.ann, "ANN_SAMPLE", 3)
    assert ann_section(model, vectors)["queries"] == 3
