"""Point-in-time runs (`features.as_of`, what backfills use): the run sees the source exactly as
it stood at that moment, however much data landed since."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.layout import RunLayout
from pipelines.sources import read_source
from pipelines.steps.features import run_features

AS_OF = pd.Timestamp("2026-01-10", tz="UTC")


@pytest.fixture(scope="module")
def past_run(small_world, tmp_path_factory):
    cfg = load_config(
        env={}, overrides={"data": {"source": str(small_world)}, "features": {"as_of": AS_OF}}
    )
    return run_features(cfg, RunLayout(tmp_path_factory.mktemp("as_of")), engine="local")


def test_window_and_snapshot_end_at_as_of(past_run, small_world):
    source = read_source(small_world).interactions
    assert source["timestamp"].max() > AS_OF + pd.Timedelta(days=3)  # later data exists
    window = past_run.manifest["window"]
    assert pd.Timestamp(window["window_end"]) == AS_OF  # the last day before it is complete
    raw = pd.read_parquet(Path(past_run.raw_dir) / "interactions")
    assert len(raw) == (source["timestamp"] < AS_OF).sum()
    counts = past_run.manifest["counts"]
    t = source["timestamp"]
    assert counts["eval_interactions"] == ((t >= window["eval_start"]) & (t < AS_OF)).sum()
    assert (
        counts["train_examples"] + counts["valid_interactions"]
        == ((t >= window["window_start"]) & (t < window["eval_start"])).sum()
    )
    assert pd.Timestamp(past_run.manifest["config"]["as_of"]) == AS_OF
    assert past_run.report.success, past_run.report.summary()


def test_catalog_has_no_item_created_after_as_of(past_run, small_world):
    items = read_source(small_world).items
    later = set(items.loc[items["created_at"] >= AS_OF, "item_id"])
    assert later, "the small world keeps adding items after the as-of date"
    catalog = pd.read_parquet(Path(past_run.features_dir) / "catalog.parquet")
    assert not later & set(catalog["item_id"])
    assert len(catalog) == len(items) - len(later)


def test_snapshot_as_of_keeps_undated_and_already_used_items(contract_source):
    src = contract_source(days=4, fmt="parquet")
    created = [pd.NaT] * len(src.items)
    created[0] = pd.Timestamp("2026-03-02T12:00", tz="UTC")  # it0 is used before that
    created[29] = pd.Timestamp("2026-03-03", tz="UTC")
    src.items["created_at"] = pd.Series(created, dtype="datetime64[ns, UTC]")
    src.days_frames = {day: f.loc[f["item_id"] != "it29"] for day, f in src.days_frames.items()}
    snap = read_source(src.write()).as_of(pd.Timestamp("2026-03-02T12:00", tz="UTC"))
    assert snap.interactions["timestamp"].max() < pd.Timestamp("2026-03-02T12:00", tz="UTC")
    assert "it0" in set(snap.interactions["item_id"])  # data older than the item's own date
    assert set(snap.items["item_id"]) == {f"it{i}" for i in range(29)}
    assert list(snap.partitions["dt"]) == ["2026-03-01", "2026-03-02"]


def test_as_of_before_the_first_event_names_the_field_and_source(small_world, tmp_path):
    cfg = load_config(
        env={},
        overrides={
            "data": {"source": str(small_world)},
            "features": {"as_of": "2025-06-01T00:00:00"},
        },
    )
    with pytest.raises(
        ConfigError, match=r"features.as_of=2025-06-01T00:00:00\+00:00: .*small_world"
    ):
        run_features(cfg, RunLayout(tmp_path), engine="local")
    assert not (tmp_path / "features").exists()


def test_manifest_is_json_with_as_of_unset(small_features):
    manifest = json.loads((Path(small_features.features_dir) / "manifest.json").read_text())
    assert manifest["config"]["as_of"] is None


@pytest.mark.parametrize("as_of", [None, AS_OF])
def test_raw_is_derived_part_by_part_as_the_in_memory_snapshot_would_be(
    small_world, tmp_path, as_of
):
    """`derive_snapshot` (one part file at a time) writes the same tables as reading the whole
    snapshot, applying `RawSnapshot.as_of` and writing it back."""
    from pipelines.features.snapshot import derive_snapshot, read_snapshot, write_snapshot
    from pipelines.steps.validate import take_snapshot

    cfg = load_config(env={}, overrides={"data": {"source": str(small_world)}})
    layout = RunLayout(tmp_path / "run")
    take_snapshot(cfg, layout)
    whole = read_snapshot(layout.snapshot)
    write_snapshot(whole if as_of is None else whole.as_of(as_of), tmp_path / "reference")
    derived = derive_snapshot(layout.snapshot, tmp_path / "derived", as_of)
    reference = json.loads((tmp_path / "reference" / "snapshot.json").read_text())
    assert derived["files"] == reference["files"]  # every file byte for byte
    assert {k: derived[k] for k in reference} == reference
    assert derived["first_timestamp"] == int(whole.interactions["timestamp"].min().timestamp())
    read_snapshot(tmp_path / "derived")  # complete and checksummed
