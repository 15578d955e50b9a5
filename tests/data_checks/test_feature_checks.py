"""Feature checks pass on real output and catch leakage, empty splits and broken counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_checks.features import validate_features
from pipelines.formats.example_decoder import Example
from pipelines.formats.tfrecord import read_tfrecords, write_tfrecords


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
    # Every record read, of all four splits.
    assert report.rows == (
        counts["train_examples"] + counts["valid_queries"] + counts["eval_queries"]
        + counts["heldout_examples"]
    )  # fmt: skip
    assert counts["valid_queries"] > 0 and counts["heldout_examples"] > 0


def valid_user(features_copy: Path, shard: int = 0) -> tuple[Path, str, int]:
    """A shard's valid file, its first validation user and that user's query timestamp."""
    path = features_copy / "valid" / f"part-{shard:05d}-of-00008.tfrecord"
    first = Example.FromString(next(read_tfrecords(str(path)))).features.feature
    return (
        path,
        first["user_id"].bytes_list.value[0].decode(),
        first["timestamp"].int64_list.value[0],
    )


def test_a_valid_history_reaching_its_query_fails(features_copy):
    path, _, _ = valid_user(features_copy)

    def leak(number, example):
        if number == 0:  # the held-out moment itself shows up in the history
            feature = example.features.feature
            feature["history_timestamps"].int64_list.value.insert(
                0, feature["timestamp"].int64_list.value[0]
            )
            feature["history_item_ids"].bytes_list.value.insert(0, b"i0000001")

    rewrite(path, leak)
    report = validate_features(str(features_copy))
    found = failure(report, "validation-query histories must be strictly before")
    assert found.failed == 1 and found.file == str(path)
    assert found.samples[0].startswith("part-00000-of-00008.tfrecord record 0:")
    assert failure(report, "validation-query histories must end before the user's train_end")


def test_a_validation_label_left_in_train_fails(features_copy):
    """A train example of a validation user at its held-out moment: labels leak into training."""
    _, user, cut = valid_user(features_copy)
    train = features_copy / "train" / "part-00000-of-00008.tfrecord"

    def move(number, example):
        feature = example.features.feature
        if feature["user_id"].bytes_list.value[0].decode() == user and not move.done:
            feature["timestamp"].int64_list.value[0] = cut
            move.done = True

    move.done = False
    rewrite(train, move)
    assert move.done
    report = validate_features(str(features_copy))
    assert failure(report, "train examples must precede their user's train_end").failed == 1
    found = failure(report, "no train example of a user may be at or after the user's validation")
    assert found.failed == 1 and found.table == "valid"


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


def test_a_heldout_example_before_train_end_or_with_a_leaky_history_fails(features_copy):
    """A held-out record moved into its user's training period, another whose history reaches
    its own moment: both rules name the heldout file."""
    path = features_copy / "heldout" / "part-00001-of-00008.tfrecord"
    cuts = json.loads((features_copy / "manifest.json").read_text())["window_epoch_s"]

    def corrupt(number, example):
        feature = example.features.feature
        if number == 0:  # temporal: every user's train_end is at or before eval_start
            feature["timestamp"].int64_list.value[0] = cuts["window_start"]
            del feature["history_timestamps"].int64_list.value[:]
            del feature["history_item_ids"].bytes_list.value[:]
        if number == 1:
            feature["history_timestamps"].int64_list.value.insert(
                0, feature["timestamp"].int64_list.value[0]
            )
            feature["history_item_ids"].bytes_list.value.insert(0, b"i0000001")

    rewrite(path, corrupt)
    report = validate_features(str(features_copy))
    early = failure(report, "held-out examples must fall at or after their user's train_end")
    leak = failure(report, "held-out example histories must be strictly before")
    assert early.failed == 1 and early.file == str(path) and early.table == "heldout"
    assert leak.failed == 1 and leak.samples[0].startswith("part-00001-of-00008.tfrecord record 1:")
    assert {r.table for r in report.failures} == {"heldout"}


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


def test_holdout_features_pass_and_a_leak_past_a_user_cut_fails(small_world, tmp_path):
    from pipelines.config import load_config
    from pipelines.layout import RunLayout
    from pipelines.steps.features import run_features

    cfg = load_config(
        env={},
        overrides={"data": {"source": str(small_world)}, "features": {"eval_design": "holdout"}},
    )
    run = run_features(cfg, RunLayout(tmp_path / "run"), engine="local")
    assert run.manifest["split"]["design"] == "holdout"
    assert run.report.success, run.report.summary()  # train examples after eval_start are fine
    features = Path(run.features_dir)
    path = features / "eval" / "part-00003-of-00008.tfrecord"

    def leak(number, example):
        if number == 2:  # a held-out interaction leaks into the query's history
            feature = example.features.feature
            moment = feature["timestamp"].int64_list.value[0]
            feature["history_timestamps"].int64_list.value.insert(0, moment)
            feature["history_item_ids"].bytes_list.value.insert(0, b"i0000001")

    rewrite(path, leak)
    report = validate_features(str(features))
    found = failure(report, "eval-query histories must end before the user's eval_cut")
    assert found.failed == 1 and found.samples[0].startswith(
        "part-00003-of-00008.tfrecord record 2:"
    )
    assert failure(report, "eval-query histories must be strictly before the query's timestamp")
