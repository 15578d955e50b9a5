"""The synthetic world: deterministic bytes and the statistical properties it was designed with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tree_digest

from pipelines.sources import read_source
from pipelines.synthetic import PRESETS, GroundTruth, generate

START = pd.Timestamp("2026-01-01", tz="UTC")


@pytest.fixture(scope="module")
def world(small_world):
    snapshot = read_source(small_world)
    return snapshot, GroundTruth.load(small_world)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    a, b, c = (
        generate(tmp_path / name, preset="small", seed=seed, days=4)
        for name, seed in (("a", 5), ("b", 5), ("c", 6))
    )
    digest_a = tree_digest(tmp_path / "a")
    assert len(digest_a) == 4 + 2 + 8  # partitions, items/users, _truth files
    assert digest_a == tree_digest(tmp_path / "b")
    assert digest_a != tree_digest(tmp_path / "c")
    assert a.events == b.events


def test_small_preset_sizes(world):
    snapshot, truth = world
    preset = PRESETS["small"]
    assert len(snapshot.partitions) == preset.days
    assert 0.9 * preset.events < len(snapshot.interactions) < 1.1 * preset.events
    assert len(snapshot.items) == preset.items == len(truth.item_vectors)
    assert len(snapshot.users) == preset.users == len(truth.user_vectors)
    assert set(snapshot.users.columns) >= {"user_id", "age_bucket", "country", "device"}


def test_popularity_has_a_power_law_tail(world):
    counts = world[0].interactions["item_id"].value_counts().to_numpy()
    top_decile_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile_share > 0.5
    rank = np.arange(1, len(counts) + 1)
    body = (rank >= 5) & (rank <= len(counts) // 2)
    slope = np.polyfit(np.log(rank[body]), np.log(counts[body]), 1)[0]
    assert -1.6 < slope < -0.6  # Zipf-like, alpha near 1


def test_content_predicts_the_latent_item_vector(world):
    """Ridge regression from genres + title tokens to the true item vector, on held-out items."""
    snapshot, truth = world
    items = snapshot.items
    features = np.hstack(
        [
            items["genres"].str.get_dummies("|").to_numpy(float),
            items["title"].str.get_dummies(" ").to_numpy(float),
            np.ones((len(items), 1)),
        ]
    )
    targets = truth.item_vectors[items["item_id"].str[1:].astype(int).to_numpy()]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(items))
    train, test = order[:700], order[700:]

    def held_out_r2(y):
        w = np.linalg.solve(
            features[train].T @ features[train] + np.eye(features.shape[1]),
            features[train].T @ y[train],
        )
        residual = ((y[test] - features[test] @ w) ** 2).sum()
        return 1 - residual / ((y[test] - y[train].mean(0)) ** 2).sum()

    assert held_out_r2(targets) > 0.4
    assert held_out_r2(targets[rng.permutation(len(targets))]) < 0.05


def test_new_items_arrive_every_day_and_are_consumed_only_after_arrival(world):
    snapshot, _ = world
    items = snapshot.items.set_index("item_id")
    new = items[items["created_at"] >= START]
    per_day = new["created_at"].dt.normalize().value_counts()
    assert len(per_day) == PRESETS["small"].days and per_day.min() >= 1
    first_seen = snapshot.interactions.groupby("item_id")["timestamp"].min()
    assert (first_seen >= items["created_at"].reindex(first_seen.index)).all()
    reached = (first_seen.reindex(new.index) - new["created_at"]) < pd.Timedelta(days=2)
    assert reached.mean() > 0.8  # the freshness boost gets new items seen quickly


def test_users_join_over_time_and_act_only_after_joining(world):
    snapshot, truth = world
    inter = snapshot.interactions
    first = inter.groupby("user_id")["timestamp"].min()
    join = START + pd.to_timedelta(truth.user_join_day[first.index.str[1:].astype(int)], unit="D")
    assert (first.to_numpy() >= join.to_numpy()).all()
    late = (first >= START + pd.Timedelta(days=7)).sum()
    assert late > 20  # some users exist only in the later part of the window


def test_user_features_carry_taste(world):
    """Predicting a user's taste cluster from (age, country, device) beats the majority class."""
    snapshot, truth = world
    users = snapshot.users
    key = users["age_bucket"] + "/" + users["country"] + "/" + users["device"]
    cluster = pd.Series(truth.user_cluster[users["user_id"].str[1:].astype(int)], index=users.index)
    half = np.arange(len(users)) % 2 == 0
    by_key = pd.crosstab(key[half], cluster[half])
    fallback = cluster[half].mode()[0]
    predicted = key[~half].map(by_key.idxmax(axis=1)).fillna(fallback)
    accuracy = (predicted.to_numpy() == cluster[~half].to_numpy()).mean()
    majority = (cluster[~half] == fallback).mean()
    assert accuracy > 2 * majority


def test_daily_and_weekly_rhythm(world):
    ts = world[0].interactions["timestamp"]
    hours = np.bincount(ts.dt.hour, minlength=24)
    assert hours[18:22].sum() > 4 * hours[1:5].sum()
    per_weekday = (
        ts.groupby(ts.dt.day_of_week).size()
        / ts.dt.normalize().groupby(ts.dt.day_of_week).nunique()
    )
    assert per_weekday[5] > 1.1 * per_weekday[1]  # Saturday busier than Tuesday


def test_oracle_ranking_beats_popularity(world):
    """The true model is a real ceiling: it ranks held-out next-day items far better."""
    snapshot, truth = world
    inter = snapshot.interactions
    cut = inter["timestamp"].max().normalize()
    train, test = inter[inter["timestamp"] < cut], inter[inter["timestamp"] >= cut]
    targets = test.groupby("user_id")["item_id"].agg(set)
    seen = train.groupby("user_id")["item_id"].agg(set)
    popular = train["item_id"].value_counts().index.to_numpy()
    logits = truth.logits(targets.index.str[1:].astype(int).to_numpy(), cut)
    item_ids = np.array([f"i{i:07d}" for i in range(logits.shape[1])])
    oracle_hits = popularity_hits = total = 0
    for row, (user, wanted) in enumerate(targets.items()):
        already = seen.get(user, set())
        wanted = wanted - already
        if not wanted:
            continue
        ranked = [i for i in item_ids[np.argsort(-logits[row])] if i not in already][:10]
        pop_top = [i for i in popular if i not in already][:10]
        oracle_hits += len(wanted & set(ranked))
        popularity_hits += len(wanted & set(pop_top))
        total += len(wanted)
    assert total > 500
    assert oracle_hits / total > 2 * popularity_hits / total > 0


def test_popularity_logits_are_the_popularity_part_of_the_true_logit(world):
    """What the bench's deployable oracle swaps out for items it cannot know."""
    _, truth = world
    at = truth.start + pd.Timedelta(days=40)  # every item is old: freshness ~ 0
    old = np.flatnonzero(truth.item_arrival_day < 0)[::-1][:50]  # any order of ids
    ids = [f"i{i:07d}" for i in old]
    logits = truth.logits(np.array([3]), at)[0, old]
    affinity = truth.item_vectors[old] @ truth.user_vectors[3]
    np.testing.assert_allclose(logits - truth.popularity_logits(ids), affinity, atol=1e-4)
    assert np.ptp(truth.popularity_logits(ids)) > 1.0
