"""Catalog, logQ sampling probabilities and vocabularies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.config import FeaturesConfig
from pipelines.features.catalog import build_catalog, build_vocabularies, title_tokens

ITEMS = pd.DataFrame({
    "item_id": ["a", "b", "c", "new"],
    "title": ["Toy Story (1995)", "Heat (1995)", "Misérables, Les", "Fresh Thing"],
    "genres": ["Animation|Comedy", "Action", "", "Comedy"],
    "created_at": [0, 0, 0, 500],
})  # fmt: skip


def test_probabilities_sum_to_one_and_follow_counts():
    counts = pd.Series({"a": 30, "b": 10, "ghost": 5})
    catalog = build_catalog(ITEMS, counts, smoothing=1.0)
    assert catalog["item_id"].tolist() == ["a", "b", "c", "ghost", "new"]
    assert catalog["sampling_probability"].sum() == pytest.approx(1.0, abs=1e-12)
    p = dict(zip(catalog["item_id"], catalog["sampling_probability"], strict=True))
    assert p["a"] == pytest.approx(31 / 50) and p["new"] == pytest.approx(1 / 50)
    assert (catalog["sampling_probability"] > 0).all()  # finite log-probabilities for logQ


def test_items_only_in_eval_or_unknown_are_in_the_catalog():
    catalog = build_catalog(ITEMS, pd.Series({"a": 3, "ghost": 1}), smoothing=0.5).set_index(
        "item_id"
    )
    assert catalog.loc["new", "train_count"] == 0 and catalog.loc["new", "in_items_table"]
    assert not catalog.loc["ghost", "in_items_table"] and catalog.loc["ghost", "title"] == ""
    assert catalog.loc["a", "genre_list"] == ["Animation", "Comedy"]
    assert catalog.loc["c", "title_tokens"] == ["misérables", "les"]
    assert catalog.loc["a", "popularity_bucket"] == 2  # floor(log2(1 + 3))


def test_vocabularies_sorted_by_count_with_min_counts():
    catalog = build_catalog(ITEMS, pd.Series({"a": 3, "b": 3, "c": 1}), smoothing=1.0)
    users = pd.Series({"u2": 4, "u1": 4, "u3": 1})
    vocabs = build_vocabularies(catalog, users, FeaturesConfig(user_min_count=2, token_min_count=1))
    assert vocabs["user_id"].values.tolist() == [["u1", 4], ["u2", 4]]
    assert vocabs["item_id"]["value"].tolist() == ["a", "b", "c"]  # "new" never trained on
    assert vocabs["genre"].values.tolist() == [["Comedy", 2], ["Action", 1], ["Animation", 1]]
    assert "1995" in set(vocabs["title_token"]["value"])


def test_title_tokens():
    assert title_tokens("Toy Story (1995)") == ["toy", "story", "1995"]
    assert title_tokens("Am\u00e9lie / L'ami_de") == ["amélie", "l", "ami", "de"]
    assert title_tokens(np.nan) == []
