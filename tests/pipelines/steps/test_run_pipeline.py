"""`run_pipeline`, the whole run on the small preset: promotion, champion comparison, sabotage,
bad data, the final fit, summary.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.errors import DataValidationError
from pipelines.layout import RunLayout, RunSummary
from pipelines.registry import Registry
from pipelines.serving import read_state

pytestmark = pytest.mark.slow


def config(root: Path, source: Path, **train):
    return load_config(
        env={},
        overrides={
            "data": {"source": str(source), "artifact_root": str(root)},
            "train": {"epochs": 2, "final_fit": False, **train},
        },
    )


@pytest.fixture(scope="module")
def two_runs(small_world, tmp_path_factory):
    """Day 1 ships a final fit (train.final_fit), day 2 the selected weights."""
    from pipelines.steps.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("artifacts")
    first = run_pipeline(config(root, small_world, final_fit=True), "day-1", engine="local")
    second = run_pipeline(config(root, small_world), "day-2", engine="local")
    return root, first, second


def test_first_run_promotes_and_writes_the_report(two_runs):
    root, first, _ = two_runs
    assert first.champion is None
    assert first.steps["promote"]["promoted"] and first.steps["promote"]["bundle_id"]
    evaluation = Path(first.run_dir) / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert set(metrics) == {"challenger", "popularity", "oracle", "ann", "eval", "differences"}
    for key in ("recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@100", "mrr@100",
                "hit_rate@100", "coverage@100"):  # fmt: skip
        assert 0.0 <= metrics["challenger"][key] <= 1.0
    assert metrics["challenger"]["recall@100"] > 1.5 * metrics["popularity"]["recall@100"]
    assert metrics["oracle"]["recall@100"] > metrics["challenger"]["recall@100"]
    slices = metrics["challenger"]["slices"]
    assert set(slices) == {"warm_users", "cold_users", "head_items", "tail_items", "cold_items"}
    assert slices["cold_items"]["queries"] > 0 and slices["cold_items"]["recall@100"] > 0.1
    assert metrics["ann"]["recall@100"] >= 0.95
    assert (evaluation / "recall_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (evaluation / "report.md").read_text()
    assert "| challenger |" in report and "| oracle |" in report
    assert "no champion (first run)" in (evaluation / "gate.md").read_text()
    saved = RunSummary.read(RunLayout(first.run_dir))  # the summary.json the DAG writes too
    assert saved.promoted and saved.production_bundle == first.steps["promote"]["bundle_id"]
    assert saved.decision == first.steps["gate"]["decision"] and saved.champion is None
    assert saved.gate_report == str(evaluation / "gate.md") and saved.steps["train"]


def test_second_run_is_compared_against_the_champion(two_runs):
    root, first, second = two_runs
    assert second.champion == first.steps["promote"]["bundle_id"]
    assert second.steps["train"]["warm_start"] is not None
    metrics = json.loads((Path(second.run_dir) / "evaluation" / "metrics.json").read_text())
    assert "champion" in metrics
    gate = (Path(second.run_dir) / "evaluation" / "gate.md").read_text()
    assert "champion" in gate and "no champion" not in gate
    registry = Registry(root)
    if second.steps["promote"]["promoted"]:
        manifest = registry.manifest(second.steps["promote"]["bundle_id"])
        assert manifest["parent_bundle"] == first.steps["promote"]["bundle_id"]
    assert registry.verify(registry.production())


def test_champion_numbers_are_re_evaluated_not_copied(two_runs):
    _, first, second = two_runs
    champion_then = json.loads((Path(first.run_dir) / "evaluation" / "metrics.json").read_text())
    champion_now = json.loads((Path(second.run_dir) / "evaluation" / "metrics.json").read_text())
    # Same model, same eval period: re-evaluating the champion (its evaluated/ weights, the
    # ones day 1 measured before its final fit) reproduces its own numbers.
    assert champion_now["champion"]["recall@100"] == pytest.approx(
        champion_then["challenger"]["recall@100"], abs=1e-9
    )


def test_a_final_fit_ships_model_final_and_keeps_the_evaluated_weights(two_runs):
    from pipelines.config import EvalConfig
    from pipelines.evaluation import EvalSet
    from tfrs_models.export import load_query_tower

    root, first, _ = two_runs
    run_dir = Path(first.run_dir)
    assert first.steps["train"]["final_model_dir"] == str(run_dir / "model_final")
    assert first.steps["index"]["final"]["index_dir"] == str(run_dir / "model_final" / "index")
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    ev = metrics["eval"]
    assert ev["measured_weights"] == "selected weights (before the final fit)"
    final = json.loads((run_dir / "model_final" / "train_manifest.json").read_text())
    assert ev["final_fit"] == {
        **ev["final_fit"],
        **{k: final["final_fit"][k] for k in ("from_epoch", "epochs", "examples", "trained_until")},
    }
    assert ev["final_fit"]["trained_until"] == ev["window"]["window_end"]
    assert ev["final_fit"]["index"]["recall@100"] >= 0.95
    report = (run_dir / "evaluation" / "report.md").read_text()
    assert "measured the selected weights, before the final fit" in report
    assert "additionally trained on the held-out interactions" in report
    # The bundle serves the final fit and keeps the measured weights in evaluated/.
    bundle = Path(Registry(root).fetch(first.steps["promote"]["bundle_id"]))
    assert Registry(root).manifest(first.steps["promote"]["bundle_id"])["weights"] == "final fit"
    evaluated = bundle / "evaluated"
    assert json.loads((bundle / "train_manifest.json").read_text())["final_fit"]
    assert json.loads((evaluated / "train_manifest.json").read_text())["final_fit"] is None
    assert not (evaluated / "checkpoints").exists() and not (evaluated / "logs").exists()
    assert (evaluated / "index" / "index_manifest.json").is_file()
    assert (evaluated / "item_embeddings.npy").read_bytes() == (
        run_dir / "model" / "item_embeddings.npy"
    ).read_bytes()
    queries = EvalSet(run_dir / "features", EvalConfig(max_queries=16)).queries
    vectors = []
    for directory in (bundle, evaluated):
        tower = load_query_tower(directory)
        names = {spec.name for spec in tower.structured_input_signature[1].values()}
        vectors.append(tower(**{n: v for n, v in queries.items() if n in names})["embedding"])
    assert np.abs(vectors[0].numpy() - vectors[1].numpy()).max() > 1e-3


def test_the_next_run_re_evaluates_the_champions_evaluated_weights(two_runs):
    root, first, second = two_runs
    run_dir = Path(second.run_dir)
    ev = json.loads((run_dir / "evaluation" / "metrics.json").read_text())["eval"]
    assert ev["champion_weights"].startswith("evaluated/: the production bundle's selected")
    assert ev["measured_weights"] == "selected weights (the shipped model)"
    assert "final_fit" not in ev and second.steps["train"]["final_model_dir"] is None
    assert second.steps["train"]["warm_start"].endswith("/evaluated")
    assert not (run_dir / "model_final").exists() and second.steps["index"]["final"] is None
    if second.steps["promote"]["promoted"]:
        bundle = Path(Registry(root).fetch(second.steps["promote"]["bundle_id"]))
        assert not (bundle / "evaluated").exists()
        assert (
            Registry(root).manifest(second.steps["promote"]["bundle_id"])["weights"] == "selected"
        )


def test_sabotaged_challenger_is_rejected_and_production_untouched(two_runs, small_world):
    from pipelines.steps import evaluate, gate, index, promote, train

    root, _, _ = two_runs
    registry = Registry(root)
    pointer_before = (root / "registry" / "production.json").read_bytes()
    champion = registry.production()
    cfg = config(root, small_world, epochs=1)
    layout = RunLayout.for_run(root, "sabotaged")
    day1 = RunLayout.for_run(root, "day-1")
    shutil.copytree(day1.features, layout.features)
    shutil.copytree(day1.raw, layout.raw)
    train.train(cfg, layout, None)
    ids_file = layout.model / "item_ids.txt"  # shuffled item ids: vectors of other items
    ids = ids_file.read_text().splitlines()
    ids_file.write_text("\n".join(np.random.default_rng(0).permutation(ids)) + "\n")
    index.build_index(cfg, layout)
    evaluate.evaluate(cfg, layout, registry.production_dir())
    decision = gate.gate(cfg, layout)
    assert not decision["promote"]
    failed = {r["name"] for r in decision["rules"] if not r["passed"]}
    assert {"beats_popularity", "no_regression"} <= failed
    out = promote.promote(cfg, layout, decision, "sabotaged", champion)
    assert out == {"promoted": False, "decision": decision["decision"], "bundle_id": None}
    assert (root / "registry" / "production.json").read_bytes() == pointer_before
    assert registry.verify(champion)


def test_replay_of_the_past_neither_learns_from_nor_replaces_newer_production(
    two_runs, small_world
):
    """A point-in-time run (what a backfill is) behind production: production trained on its
    eval period, so it may neither warm-start the run nor be scored on it, and stays served."""
    from pipelines.steps.pipeline import run_pipeline

    root, _, _ = two_runs
    pointer_before = (root / "registry" / "production.json").read_bytes()
    cfg = config(root, small_world, epochs=1)
    cfg = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"as_of": pd.Timestamp("2026-01-10")})}
    )
    replay = run_pipeline(cfg, "replay-2026-01-10", engine="local")
    assert replay.steps["train"]["warm_start"] is None
    assert "after this eval period starts" in replay.steps["train"]["warm_start_refused"]
    evaluation = Path(replay.run_dir) / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert "champion" not in metrics
    assert metrics["eval"]["window"]["window_end"].startswith("2026-01-10T00:00:00")
    assert "after this eval period starts" in metrics["eval"]["champion_excluded"]
    assert "production model was not evaluated" in (evaluation / "report.md").read_text()
    failed = {r["name"] for r in replay.steps["gate"]["rules"] if not r["passed"]}
    assert failed == {"no_regression"} and not replay.steps["promote"]["promoted"]
    assert (root / "registry" / "production.json").read_bytes() == pointer_before


def test_bad_data_stops_the_run_before_anything_is_promoted(two_runs, small_world, tmp_path):
    from pipelines.steps.pipeline import run_pipeline

    root, _, _ = two_runs
    pointer_before = (root / "registry" / "production.json").read_bytes()
    bad = tmp_path / "bad"
    shutil.copytree(small_world, bad)
    part = sorted((bad / "interactions").rglob("*.parquet"))[-1]
    frame = pd.read_parquet(part)
    frame.loc[frame.index[:5], "user_id"] = None
    frame.to_parquet(part)
    with pytest.raises(DataValidationError, match="user_id must not be null"):
        run_pipeline(config(root, bad), "bad-data", engine="local")
    assert (root / "registry" / "production.json").read_bytes() == pointer_before
    assert not (root / "runs" / "bad-data" / "model").exists()


def test_recommend_cli_serves_the_production_bundle(two_runs, tmp_path):
    root, _, _ = two_runs
    users = tmp_path / "users.txt"
    users.write_text("u0000001\nu0000002\nstranger\n")
    out = tmp_path / "recs.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "recommend", "--artifact-root", root, "--users",
         users, "--out", out, "--k", "7"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in lines] == ["u0000001", "u0000002", "stranger"]
    assert [r["source"] for r in lines] == ["model", "model", "popularity"]
    state, _ = read_state(Registry(root).production_dir())
    seen = set(state.loc["u0000001", "seen_item_ids"])
    for r in lines:
        items = [i["item_id"] for i in r["items"]]
        assert len(items) == len(set(items)) == 7
    assert not seen & {i["item_id"] for i in lines[0]["items"]}
    scores = [i["score"] for i in lines[0]["items"]]
    assert scores == sorted(scores, reverse=True)


def test_movielens_format_runs_end_to_end_without_oracle_or_user_table(small_world, tmp_path):
    """A MovieLens-latest layout (ratings.csv + movies.csv, integer ids, no users file)."""
    import pyarrow.dataset as ds

    from pipelines.steps.pipeline import run_pipeline

    events = ds.dataset(small_world / "interactions", format="parquet").to_table().to_pandas()
    items = pd.read_parquet(small_world / "items.parquet")
    users = {u: n + 1 for n, u in enumerate(sorted(events["user_id"].unique()))}
    movies = {i: n + 1 for n, i in enumerate(sorted(items["item_id"]))}
    seconds = (
        pd.to_datetime(events["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")
    ) // pd.Timedelta(seconds=1)
    ml = tmp_path / "ml"
    ml.mkdir()
    pd.DataFrame({"userId": events["user_id"].map(users), "movieId": events["item_id"].map(movies),
                  "rating": 4.0, "timestamp": seconds}).to_csv(ml / "ratings.csv", index=False)  # fmt: skip
    pd.DataFrame({"movieId": items["item_id"].map(movies), "title": items["title"] + " (1999)",
                  "genres": items["genres"]}).to_csv(ml / "movies.csv", index=False)  # fmt: skip
    cfg = config(tmp_path / "artifacts", ml)
    summary = run_pipeline(cfg, "ml", engine="local")
    assert summary.steps["promote"]["promoted"]
    # every step's time and peak memory, in the summary on disk too
    on_disk = json.loads((Path(summary.run_dir) / "summary.json").read_text())["usage"]
    assert list(on_disk) == list(summary.steps)
    assert all(u["seconds"] > 0 and u["peak_tree_gib"] >= u["peak_rss_gib"] > 0.1
               for u in on_disk.values())  # fmt: skip
    assert on_disk["train"]["seconds"] > on_disk["gate"]["seconds"]
    metrics = json.loads((Path(summary.run_dir) / "evaluation" / "metrics.json").read_text())
    assert "oracle" not in metrics and metrics["eval"]["queries"] > 1000
    assert metrics["challenger"]["recall@100"] > 1.5 * metrics["popularity"]["recall@100"]
