"""Each Beam step on a TestPipeline, checked with assert_that."""

from __future__ import annotations

import apache_beam as beam
import pandas as pd
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.config import FeaturesConfig
from pipelines.features.beam_job import (
    BuildShardFiles,
    CountTrainInteractions,
    GroupEventsByUserShard,
    ReadEventBatches,
    pack_table,
    unpack_table,
)
from pipelines.features.records import user_shard
from pipelines.features.window import FeatureWindow

WINDOW = FeatureWindow(history_start=0, window_start=0, eval_start=1000, window_end=2000)


def table(rows) -> pa.Table:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "weight"])
    return pa.Table.from_pandas(frame, preserve_index=False)


BATCH_1 = table(
    [("a", "x", 10, "click", 1.0), ("b", "y", 20, "click", 1.0), ("c", "x", 1500, "click", 1.0)]
)
BATCH_2 = table(
    [("a", "z", 30, "click", 1.0), ("d", "x", 40, "click", 1.0), ("b", "x", 1200, "click", 1.0)]
)


def test_group_by_user_shard_keeps_every_user_in_one_group():
    shards = 3
    expected_shard = dict(zip("abcd", user_shard(list("abcd"), shards), strict=True))
    expected = {}
    for batch in (BATCH_1, BATCH_2):
        for user in batch.column("user_id").to_pylist():
            expected.setdefault(int(expected_shard[user]), []).append(user)
    with TestPipeline() as p:
        grouped = (
            p
            | beam.Create([BATCH_1, BATCH_2])
            | GroupEventsByUserShard(shards)
            | beam.Map(
                lambda kv: (
                    kv[0],
                    sorted(pa.concat_tables(list(kv[1])).column("user_id").to_pylist()),
                )
            )
        )
        assert_that(grouped, equal_to([(k, sorted(v)) for k, v in expected.items()]))


def test_count_train_interactions_counts_only_the_training_period():
    with TestPipeline() as p:
        counts = (
            p
            | beam.Create([BATCH_1, BATCH_2])
            | CountTrainInteractions(WINDOW)
            | beam.Map(lambda c: (c[0].sort_index().to_dict(), c[1].sort_index().to_dict()))
        )
        assert_that(counts, equal_to([({"x": 2, "y": 1, "z": 1}, {"a": 2, "b": 1, "d": 1})]))


def test_count_train_interactions_leaves_out_held_out_interactions(tmp_path):
    """With a cuts file: user a's interaction at 30 is a validation label, not training."""
    from pipelines.schema import UserCuts

    table = pd.DataFrame(
        {"train_end": [30], "eval_cut": [1000]}, index=pd.Index(["a"], name="user_id")
    )
    path = tmp_path / "user_cuts.parquet"
    path.write_bytes(UserCuts(1000, table).to_bytes())
    with TestPipeline() as p:
        counts = (
            p
            | beam.Create([BATCH_1, BATCH_2])
            | CountTrainInteractions(WINDOW, str(path))
            | beam.Map(lambda c: (c[0].sort_index().to_dict(), c[1].sort_index().to_dict()))
        )
        assert_that(counts, equal_to([({"x": 2, "y": 1}, {"a": 1, "b": 1, "d": 1})]))


def test_build_shard_files_writes_tfrecords_and_summarises(tmp_path):
    out = str(tmp_path / "features")
    (tmp_path / "features" / "train").mkdir(parents=True)
    (tmp_path / "features" / "eval").mkdir()
    (tmp_path / "features" / "valid").mkdir()
    (tmp_path / "features" / "heldout").mkdir()
    cfg = FeaturesConfig(shards=2, history_length=3)
    with TestPipeline() as p:
        summaries = (
            p
            | beam.Create([(1, [BATCH_1, BATCH_2])])
            | beam.ParDo(BuildShardFiles(str(tmp_path / "no-raw"), out, WINDOW, cfg))
            | beam.Map(
                lambda s: (
                    s["shard"],
                    s["train_examples"],
                    s["eval_queries"],
                    s["eval_interactions"],
                    s["files"]["train"]["records"],
                    s["heldout_examples"],
                    s["files"]["heldout"]["records"],
                )
            )
        )
        assert_that(summaries, equal_to([(1, 4, 2, 2, 4, 2, 2)]))
    assert (tmp_path / "features" / "train" / "part-00001-of-00002.tfrecord").stat().st_size > 0
    assert (tmp_path / "features" / "eval" / "part-00001-of-00002.tfrecord").stat().st_size > 0


def test_read_event_batches_reads_every_row_group(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "interactions").mkdir()
    pq.write_table(
        pa.concat_tables([BATCH_1, BATCH_2]),
        tmp_path / "interactions" / "part-00000.parquet",
        row_group_size=2,
    )
    with TestPipeline() as p:
        rows = (
            p
            | ReadEventBatches(str(tmp_path))
            | beam.FlatMap(lambda t: t.column("item_id").to_pylist())
        )
        assert_that(rows, equal_to(["x", "y", "x", "z", "x", "x"]))


def test_write_catalog_and_vocabularies_from_counts(tmp_path):
    from pipelines.features.beam_job import WriteCatalogAndVocabularies

    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame(
        {
            "item_id": ["x", "y", "z", "w"],
            "title": ["X one", "Y two", "Z", "W new"],
            "genres": ["A", "B", "A|B", "A"],
        }
    ).to_parquet(raw / "items.parquet")
    counts = (pd.Series({"x": 2, "y": 1, "z": 1}), pd.Series({"a": 2, "b": 1, "d": 1}))
    with TestPipeline() as p:
        summary = (
            p
            | beam.Create([counts])
            | WriteCatalogAndVocabularies(str(raw), str(tmp_path / "out"), FeaturesConfig())
            | beam.Map(
                lambda s: (
                    s["catalog"]["items"],
                    round(s["probability_sum"], 9),
                    {k: v["size"] for k, v in s["vocabularies"].items()},
                )
            )
        )
        assert_that(
            summary,
            equal_to([(4, 1.0, {"user_id": 3, "item_id": 3, "genre": 2, "title_token": 0})]),
        )
    assert (tmp_path / "out" / "vocab" / "item_id.tsv").read_text() == "x\t2\ny\t1\nz\t1\n"


def test_standalone_job_passes_beam_flags_through(tmp_path):
    """`python -m pipelines.features.beam_job` with explicit window and any Beam flag."""
    import pyarrow.parquet as pq

    from pipelines.features.beam_job import run

    raw = tmp_path / "raw"
    (raw / "interactions").mkdir(parents=True)
    pq.write_table(
        pa.concat_tables([BATCH_1, BATCH_2]), raw / "interactions" / "part-00000.parquet"
    )
    manifest = run([
        "--raw-dir", str(raw), "--out", str(tmp_path / "features"),
        "--window-start", "1970-01-01T00:00:00", "--eval-start", "1970-01-01T00:16:40",
        "--window-end", "1970-01-01T00:33:20", "--shards", "2", "--eval-design", "temporal",
        "--runner", "DirectRunner", "--direct_running_mode", "in_memory",
    ])  # fmt: skip
    # User a (events at 10 and 30) is the one validation user: its event at 30 is a label.
    counts = manifest["counts"]
    assert counts["train_examples"] == 3 and counts["eval_queries"] == 2
    assert counts["valid_queries"] == 1 and manifest["splits"]["valid"]["records"] == 1
    assert manifest["window_epoch_s"]["eval_start"] == 1000
    assert manifest["split"]["design"] == "temporal"


def test_packed_tables_come_back_exactly_and_smaller():
    # What the shuffle carries: a shard's events, compressed; unpacked they are the same table.
    users = [f"user-{i % 50:05d}" for i in range(5000)]
    big = table([(u, f"item-{i % 700:06d}", 10 + i, "click", 1.0) for i, u in enumerate(users)])
    packed = pack_table(big)
    assert unpack_table(packed).equals(big, check_metadata=True)
    assert len(packed) < big.nbytes / 3
