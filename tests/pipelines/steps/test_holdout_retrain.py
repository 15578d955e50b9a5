"""Scheduled retrains under the holdout eval design (what `auto` picks on sparse data such as
MovieLens): the next day's run warm-starts from production and is compared with it, because
production's selected weights held out the same users' latest interactions; a replay behind
production is still refused both."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.layout import ModelLayout
from pipelines.registry import Registry

pytestmark = pytest.mark.slow


def holdout_config(root: Path, source: Path, as_of: str | None):
    return load_config(
        env={},
        overrides={
            "data": {"source": str(source), "artifact_root": str(root)},
            "features": {"eval_design": "holdout",
                         **({"as_of": pd.Timestamp(as_of)} if as_of else {})},
            "train": {"epochs": 1, "final_fit": True},
        },
    )  # fmt: skip


def test_next_day_warm_starts_and_is_gated_against_production(small_world, tmp_path):
    from pipelines.steps.pipeline import run_pipeline

    root = tmp_path / "artifacts"
    day1 = run_pipeline(holdout_config(root, small_world, "2026-01-13"), "day-1", engine="local")
    assert day1.steps["promote"]["promoted"]
    champion = Path(Registry(root).production_dir())
    # The bundle shipped a final fit; its evaluated/ weights carry their per-user training ends.
    assert ModelLayout(ModelLayout(champion).evaluated).trained_cuts.is_file()
    assert not ModelLayout(champion).trained_cuts.exists()

    day2 = run_pipeline(holdout_config(root, small_world, None), "day-2", engine="local")
    assert day2.steps["train"]["warm_start"] is not None
    assert "warm_start_refused" not in day2.steps["train"]
    metrics = json.loads((Path(day2.run_dir) / "evaluation" / "metrics.json").read_text())
    assert metrics["eval"]["split"]["design"] == "holdout"
    assert "champion_excluded" not in metrics["eval"]
    assert 0.0 < metrics["champion"]["recall@100"] <= 1.0
    rule = {r["name"]: r for r in day2.steps["gate"]["rules"]}["no_regression"]
    assert "champion" in rule["threshold"] and "first run" not in rule["threshold"]

    # A replay behind production: production trained on interactions after its window.
    pointer = (root / "registry" / "production.json").read_bytes()
    replay = run_pipeline(holdout_config(root, small_world, "2026-01-10"), "replay", engine="local")
    assert replay.steps["train"]["warm_start"] is None
    assert "after this run's window" in replay.steps["train"]["warm_start_refused"]
    replay_metrics = json.loads((Path(replay.run_dir) / "evaluation" / "metrics.json").read_text())
    assert "after this run's window" in replay_metrics["eval"]["champion_excluded"]
    assert not replay.steps["promote"]["promoted"]
    assert (root / "registry" / "production.json").read_bytes() == pointer
