"""The whole feature job: Beam and the single-process reference agree, runs are reproducible,
and TensorFlow reads the records."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.config import load_config
from pipelines.formats.tfrecord import read_tfrecords
from pipelines.layout import RunLayout
from pipelines.steps.features import run_features

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def beam_run(small_world, tmp_path_factory):
    cfg = load_config(env={}, overrides={"data": {"source": str(small_world)}})
    return run_features(cfg, RunLayout(tmp_path_factory.mktemp("beam_run")))


def hashes(manifest):
    return (
        manifest["splits"]["train"]["content_sha256"],
        manifest["splits"]["valid"]["content_sha256"],
        manifest["splits"]["eval"]["content_sha256"],
        manifest["splits"]["heldout"]["content_sha256"],
        manifest["split"]["user_cuts"]["sha256"],
        manifest["catalog"]["sha256"],
        {name: v["sha256"] for name, v in manifest["vocabularies"].items()},
    )


def test_beam_and_reference_write_identical_content(beam_run, small_features):
    assert beam_run.report.success, beam_run.report.summary()
    assert hashes(beam_run.manifest) == hashes(small_features.manifest)
    assert beam_run.manifest["counts"] == small_features.manifest["counts"]
    assert beam_run.manifest["counts"]["valid_queries"] == 500  # min_validation_queries
    for split in ("valid", "heldout"):
        assert [s["files"][split]["sha256"] for s in beam_run.manifest["shards"]] == [
            s["files"][split]["sha256"] for s in small_features.manifest["shards"]
        ]


def test_rerun_gives_identical_files(beam_run, small_world, tmp_path):
    cfg = load_config(env={}, overrides={"data": {"source": str(small_world)}})
    again = run_features(cfg, RunLayout(tmp_path / "again"))
    assert hashes(again.manifest) == hashes(beam_run.manifest)
    first = [f["files"]["train"]["sha256"] for f in beam_run.manifest["shards"]]
    second = [f["files"]["train"]["sha256"] for f in again.manifest["shards"]]
    assert first == second and len(first) == 8


def test_counts_match_the_raw_data(beam_run, small_world):
    from pipelines.sources import read_source

    inter = read_source(small_world).interactions
    window = beam_run.manifest["window"]
    t = inter["timestamp"]
    train = inter[(t >= window["window_start"]) & (t < window["eval_start"])]
    evaluation = inter[(t >= window["eval_start"]) & (t < window["window_end"])]
    counts = beam_run.manifest["counts"]
    # The validation users' latest train-period interactions are validation labels, not examples.
    assert counts["train_examples"] + counts["valid_interactions"] == len(train)
    assert 0 < counts["valid_interactions"] < 0.2 * len(train)
    assert counts["eval_interactions"] == len(evaluation)
    assert counts["eval_queries"] == evaluation["user_id"].nunique()
    # Held out for the final fit: exactly the validation and eval interactions.
    assert counts["heldout_examples"] == counts["valid_interactions"] + len(evaluation)
    assert beam_run.manifest["splits"]["heldout"]["records"] == counts["heldout_examples"]
    assert beam_run.manifest["sampling_probability_sum"] == pytest.approx(1.0, abs=1e-9)
    # The eval period is the most recent slice: about eval_fraction of the events, day-aligned.
    assert 0.05 < len(evaluation) / len(inter) < 0.25
    assert pd.Timestamp(window["eval_start"]).hour == 0
    # The small world's last period holds plenty of warm users: "auto" keeps it.
    split = beam_run.manifest["split"]
    assert split["design"] == "temporal" and split["warm_eval_queries"] >= 300
    assert split["warm_eval_queries"] + split["cold_eval_queries"] == counts["eval_queries"]


def test_catalog_covers_items_only_in_eval(beam_run, small_world):
    catalog = pd.read_parquet(os.path.join(beam_run.features_dir, "catalog.parquet"))
    assert len(catalog) == 1000
    eval_items = set()
    for path in beam_run.manifest["splits"]["eval"]["files"]:
        from pipelines.formats.example_decoder import decode_example

        for record in read_tfrecords(path):
            eval_items.update(x.decode() for x in decode_example(record)["label_item_ids"])
    only_eval = eval_items - set(catalog.loc[catalog["train_count"] > 0, "item_id"])
    assert only_eval, "the small world has items that arrive in the eval period"
    assert only_eval <= set(catalog["item_id"])


def test_tensorflow_parses_the_records(beam_run):
    """tf.io.parse_example reads our TFRecords (run in a subprocess: TF is heavy to import)."""
    script = f"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
files = {beam_run.manifest["splits"]["train"]["files"]!r}
spec = {{
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "item_id": tf.io.FixedLenFeature([], tf.string),
    "timestamp": tf.io.FixedLenFeature([], tf.int64),
    "history_item_ids": tf.io.VarLenFeature(tf.string),
    "history_timestamps": tf.io.VarLenFeature(tf.int64),
    "user_country": tf.io.FixedLenFeature([], tf.string),
    "weight": tf.io.FixedLenFeature([], tf.float32),
}}
n = 0
for batch in tf.data.TFRecordDataset(files).batch(4096).map(lambda x: tf.io.parse_example(x, spec)):
    ts = batch["timestamp"]
    hist = tf.sparse.to_dense(batch["history_timestamps"], default_value=-1)
    tf.debugging.assert_less(tf.reduce_max(hist, axis=1), ts)
    n += int(tf.shape(ts)[0])
print(n)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        int(result.stdout.strip().splitlines()[-1]) == beam_run.manifest["counts"]["train_examples"]
    )


def test_cli_features_on_small_preset(small_world, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "features", "--source", str(small_world),
         "--run-dir", str(tmp_path / "run"), "--shards", "4", "--direct_num_workers=1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Feature validation PASSED" in result.stdout
    files = sorted(p.name for p in (tmp_path / "run" / "features" / "train").iterdir())
    assert files == [f"part-0000{k}-of-00004.tfrecord" for k in range(4)]
    assert np.isclose(
        pd.read_parquet(tmp_path / "run" / "features" / "catalog.parquet")[
            "sampling_probability"
        ].sum(),
        1.0,
    )
