"""The real-data benchmark's code path on a tiny MovieLens-latest dump the test writes itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.sources import read_source

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_real", BENCH / "bench_real.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_ml_latest(root: Path, users: int = 90, items: int = 60, seed: int = 3) -> Path:
    """A clustered ML-latest dump: three taste groups, each mostly rating its own genre.

    CRLF line endings and a 0.5-5 rating scale, as the public files have; one user rates
    three movies in the same second (ties at the cut) and one user has only three ratings.
    """
    rng = np.random.default_rng(seed)
    genres = ["Action|Thriller", "Comedy|Romance", "Documentary"]
    root.mkdir(parents=True)
    movies = ["movieId,title,genres"] + [
        f'{i + 1},"Movie {i + 1}, The ({1990 + i % 20})",{genres[i % 3]}' for i in range(items)
    ]
    (root / "movies.csv").write_bytes(("\r\n".join(movies) + "\r\n").encode())
    rows, t0 = [], 1_400_000_000
    for u in range(1, users + 1):
        n = 3 if u == 7 else int(rng.integers(10, 25))
        own = [i for i in range(items) if i % 3 == u % 3]
        pool = own if rng.random() < 0.9 else list(range(items))
        picked = rng.choice(pool, size=min(n, len(pool)), replace=False)
        times = np.sort(t0 + rng.integers(0, 200 * 86_400, size=len(picked)))
        if u == 11:
            times[-3:] = times[-3]  # the last three share one timestamp
        rows += [
            f"{u},{i + 1},{rng.integers(1, 11) / 2:.1f},{t}"
            for i, t in zip(picked, times, strict=True)
        ]
    (root / "ratings.csv").write_bytes(
        ("\r\n".join(["userId,movieId,rating,timestamp", *rows]) + "\r\n").encode()
    )
    return root


def test_split_puts_each_users_last_interactions_in_the_future_and_ties_together(bench, tmp_path):
    snapshot = read_source(write_ml_latest(tmp_path / "ml-latest-small"))
    inter = snapshot.interactions
    future = bench.split_by_user_time(inter, test_fraction=0.2, min_events=5)
    t = inter["timestamp"].astype("int64") // 10**9
    for user, rows in inter.groupby("user_id").groups.items():
        fut, past = future[inter.index.get_indexer(rows)], t.loc[rows]
        if user == "7":  # three ratings < min_events: past only
            assert not fut.any()
            continue
        assert fut.any() and (~fut).any()
        assert past[fut].min() > past[~fut].max()  # the future is strictly later
        expected = max(1, round(len(rows) * 0.2))
        assert fut.sum() == expected or (user == "11" and fut.sum() >= expected)
    assert future[inter["user_id"].to_numpy() == "11"].sum() >= 3  # the tie stays whole


def test_the_past_is_the_same_dump_minus_the_future_lines(bench, tmp_path):
    dump = write_ml_latest(tmp_path / "ml-latest-small")
    snapshot = read_source(dump)
    future = bench.split_by_user_time(snapshot.interactions, 0.2, 5)
    past_dir = bench.write_past(snapshot, dump, future, tmp_path / "past")
    past = read_source(past_dir)
    key = ["user_id", "item_id", "timestamp"]
    expected = snapshot.interactions.loc[~future, key].sort_values(key).reset_index(drop=True)
    got = past.interactions[key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert (past_dir / "movies.csv").read_bytes() == (dump / "movies.csv").read_bytes()
    assert past.issues == []
    assert (past_dir / "ratings.csv").read_bytes().count(b"\r\n") == len(got) + 1  # CRLF kept


@pytest.mark.slow
def test_bench_runs_the_product_and_baselines_on_a_movielens_dump(bench, tmp_path, capsys):
    data = tmp_path / "data"
    write_ml_latest(data / "ml-latest-small-2018")
    out = tmp_path / "results.json"
    variants = '{"tiny": {"features": {"history_length": 20}}}'
    common = '{"train": {"epochs": 2, "batch_size": 64}}'
    results = bench.main([
        "--data", str(data), "--no-defaults", "--variants", variants, "--common", common,
        "--out", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "absent, skipped: ml-100k, ml-1m, ml-latest-small-2016" in printed
    models = results["ml-latest-small-2018"]["models"]
    assert set(models) == {"popularity", "EASE", "ItemKNN", "tiny", "ID-only (tutorial)"}
    for name, m in models.items():
        for column in bench.COLUMNS:
            assert 0.0 <= m[column] <= 1.0, (name, column)
    # Three taste groups: models that use the history beat the global popularity ranking.
    assert models["EASE"]["recall@10"] > models["popularity"]["recall@10"]
    assert models["ItemKNN"]["recall@10"] > models["popularity"]["recall@10"]
    # Ours went through run_pipeline and Recommender: every test user got model results.
    assert models["tiny"]["popularity_served"] == 0
    assert models["tiny"]["served"] in ("this run's bundle", "run model (no production)")
    assert out.exists() and "R@100 / EASE" in printed


@pytest.mark.slow
def test_warm_days_run_a_scheduled_retrain_warm_started_from_day_one(bench, tmp_path, capsys):
    """Day 1 (the past without its last 30 days) promotes; day 2 warm-starts from it although
    the dump's eval design is the per-user holdout, and users get day 2's production."""
    data = tmp_path / "data"
    write_ml_latest(data / "ml-latest-small-2018")
    common = '{"train": {"epochs": 2, "batch_size": 64}, "gate": {"force_promote": true}}'
    results = bench.main([
        "--data", str(data), "--no-defaults", "--no-id-only", "--warm-days", "30",
        "--variants", '{"tiny": {"features": {"history_length": 20}}}', "--common", common,
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "day 1 leaves out the past's last 30 days" in printed
    models = results["ml-latest-small-2018"]["models"]
    assert {"tiny", "tiny, warm after 30 d"} <= set(models)
    cold, warm = models["tiny"], models["tiny, warm after 30 d"]
    assert cold["warm_start"] is None and "day1" not in cold
    assert warm["day1"]["gate"].startswith("promote")
    assert warm["eval"]["split"]["design"] == "holdout"
    assert warm["warm_start"] is not None and "warm_start_refused" not in warm
    assert warm["served"] == "this run's bundle" and warm["popularity_served"] == 0
    for column in bench.COLUMNS:
        assert 0.0 <= warm[column] <= 1.0
