"""Feature checks pass on real output and catch leakage, empty splits and broken counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_checks.features import validate_features
from pipelines.features.encoding import Example
from pipelines.features.tfrecord import read_tfrecords, write_tfrecords


@pytest.fixture
def features_copy(small_features, tmp_path) -> Path:
    """A private copy of the small world's features that a test may corrupt."""
    copy = tmp_path / "features"
    shutil.copytree(small_features.features_dir, copy)
    manifest_path = copy / "manifest.json"
    text = manifest_path.read_text().replace(small_features.features_dir, str(copy))
    manifest_path.write_text(text)
    return copy


def rewrite(path: Path, edit) -> None:
    """Apply `edit(number, example)` to every record of a TFRecord file."""
    records = []
    for number, data in enumerate(read_tfrecords(str(path))):
        example = Example.FromString(data)
        edit(number, example)
        records.append(example.SerializeToString(deterministic=True))
    write_tfrecords(str(path), records)


def failure(report, fragment):
    matches = [r for r in report.failures if fragment in r.rule]
    assert matches, [r.rule for r in report.failures]
    return matches[0]


def test_real_output_passes(small_features):
    report = small_features.report
    assert report.success, report.summary()
    counts = small_features.manifest["counts"]
    assert report.rows == counts["train_examples"] + counts["eval_queries"]  # every record read


def test_a_leaky_history_fails_naming_file_and_record(features_copy):
    shard = features_copy / "train" / "part-00000-of-00008.tfrecord"

    def leak(number, example):
        if number == 3:
            feature = example.features.feature
            feature["history_timestamps"].int64_list.value[0] = feature[
                "timestamp"
            ].int64_list.value[0]

    rewrite(shard, leak)
    report = validate_features(str(features_copy))
    found = failure(report, "strictly before the example's timestamp (no leakage)")
    assert found.failed == 1 and found.file == str(shard) and found.column == "history_timestamps"
    assert found.samples[0].startswith("part-00000-of-00008.tfrecord record 3:")
    assert [r.rule for r in report.failures] == [found.rule]


def test_eval_history_reaching_into_the_eval_period_fails(features_copy):
    manifest = json.loads((features_copy / "manifest.json").read_text())
    eval_start = manifest["window_epoch_s"]["eval_start"]

    def leak(number, example):
        if number == 0:
            example.features.feature["history_timestamps"].int64_list.value.append(eval_start)
            example.features.feature["history_item_ids"].bytes_list.value.append(b"i0000001")

    rewrite(features_copy / "eval" / "part-00002-of-00008.tfrecord", leak)
    report = validate_features(str(features_copy))
    assert failure(report, "must end before eval_start").failed == 1


def test_train_example_inside_the_eval_period_breaks_the_split(features_copy):
    manifest = json.loads((features_copy / "manifest.json").read_text())
    eval_start = manifest["window_epoch_s"]["eval_start"]

    def move(number, example):
        if number == 0:
            example.features.feature["timestamp"].int64_list.value[0] = eval_start + 86_000

    rewrite(features_copy / "train" / "part-00001-of-00008.tfrecord", move)
    report = validate_features(str(features_copy))
    assert failure(report, "train examples must fall in [window_start, eval_start)").failed == 1
    assert failure(report, "latest train example must precede the earliest eval query")


def test_empty_eval_split_and_count_mismatch_fail(features_copy):
    for path in (features_copy / "eval").iterdir():
        write_tfrecords(str(path), [])
    manifest = json.loads((features_copy / "manifest.json").read_text())
    manifest["counts"]["eval_queries"] = 0
    manifest["counts"]["train_interactions_counted"] += 1
    (features_copy / "manifest.json").write_text(json.dumps(manifest))
    report = validate_features(str(features_copy))
    assert failure(report, "eval split must hold at least 1 queries").file.endswith("manifest.json")
    assert failure(report, "train examples written must equal training-period interactions counted")
