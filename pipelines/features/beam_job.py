"""The feature job on Apache Beam: same code on the DirectRunner, Dataflow, Flink, Spark or Dask.

Events travel in batches (pyarrow tables of a Parquet row group), never one element per
interaction: each batch is split by user shard (compressed for the shuffle), one GroupByKey
brings every event of a shard together, and the shard is processed with numpy in one DoFn
call. Per-item and per-user counts are combined from per-batch value counts. That keeps the
Python per-element overhead of the runner off the hot path. The job uses only what every
runner runs, the DaskRunner included (Create, ParDo, GroupByKey, Flatten: no Read source, no
side input); runner options come from the config's `beam.options` or the command line
(docs/scaling.md).

    python -m pipelines.features.beam_job --raw-dir RUN/raw --out RUN/features \\
        [--window-start ISO --eval-start ISO --window-end ISO] [--eval-design auto|temporal|holdout]
        [any Beam flag, e.g.
        --runner DataflowRunner --project P --region R --temp_location gs://...]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import typing

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipelines.config import BeamConfig, EvalDesign, FeaturesConfig
from pipelines.errors import ConfigError, DataValidationError
from pipelines.features import job, workers
from pipelines.features.records import user_shard
from pipelines.features.snapshot import EVENT_COLUMNS
from pipelines.features.split import SplitPlan, plan_split_from_snapshot
from pipelines.features.window import FeatureWindow
from pipelines.formats import files
from pipelines.schema import FEATURES_MANIFEST, USER_ID, UserCuts, epoch_seconds, user_feature

log = logging.getLogger(__name__)


class ReadEventBatches(beam.PTransform):
    """Snapshot interactions as pyarrow tables, one per Parquet row group.

    The row groups are listed when the pipeline is built (file footers only) and read by a
    plain ParDo, not a Beam source: every runner, the DaskRunner included (it runs no
    `Read` transform), reads them in parallel, one element per row group.
    """

    def __init__(self, raw_dir: str):
        super().__init__()
        self.pattern = event_files(raw_dir)

    def expand(self, pbegin):
        return (
            pbegin
            | "ListRowGroups" >> beam.Create(parquet_row_groups(self.pattern))
            | "ReadRowGroup" >> beam.ParDo(_ReadRowGroup(EVENT_COLUMNS))
        )


def event_files(raw_dir: str) -> str:
    """The glob of the snapshot's interaction files."""
    return files.join(raw_dir, "interactions", "*.parquet")


def parquet_row_groups(pattern: str) -> list[tuple[str, int, int]]:
    """(path, row group index, rows) of every Parquet file matching `pattern`, in path order."""
    from apache_beam.io.filesystems import FileSystems

    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    groups = []
    for path in paths:
        with _open_parquet(path) as parquet:
            meta = parquet.metadata
            groups.extend(
                (path, group, meta.row_group(group).num_rows)
                for group in range(meta.num_row_groups)
            )
    return groups


def _rows(groups: list[tuple[str, int, int]]) -> int:
    return sum(rows for _, _, rows in groups)


@contextlib.contextmanager
def _open_parquet(path: str):
    """The Parquet file at `path` (any Beam filesystem), open for reading row groups."""
    import pyarrow.parquet as pq
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield pq.ParquetFile(handle)


class _ReadRowGroup(beam.DoFn):
    def __init__(self, columns: list[str]):
        self.columns = list(columns)

    def process(self, element):
        path, group, _ = element
        with _open_parquet(path) as parquet:
            yield parquet.read_row_group(group, columns=self.columns)


def split_by_shard(table: pa.Table, shards: int):
    """Yield (shard, packed sub-table) for every user shard present in a batch.

    Each sub-table is a compact copy (`take`), not a slice, packed by `pack_table`: the
    shuffle carries about 10 bytes per event instead of about 60 for a pickled table.
    """
    shard = user_shard(table.column("user_id").to_numpy(zero_copy_only=False), shards)
    order = np.argsort(shard, kind="stable")
    sorted_shard = shard[order]
    bounds = np.flatnonzero(np.r_[True, sorted_shard[1:] != sorted_shard[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        yield int(sorted_shard[start]), pack_table(table.take(pa.array(order[start:end])))


def pack_table(table: pa.Table) -> bytes:
    """`table` as a zstd-compressed Arrow IPC stream (`unpack_table` reads it back exactly).

    What goes through the shuffle is held in memory by runners that keep it there (the
    DirectRunner's launcher holds all of it, and hands each worker its share in one bundle), so
    its size is the feature job's peak memory on one machine; on a cluster it is network and
    disk.
    """
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def unpack_table(packed: bytes) -> pa.Table:
    """The table `pack_table` packed."""
    return pa.ipc.open_stream(pa.py_buffer(packed)).read_all()


def _unpack_all(packed) -> list[pa.Table]:
    return [unpack_table(b) for b in packed]


class GroupEventsByUserShard(beam.PTransform):
    """Event batches -> (shard, [tables]): every event of a user lands in one group."""

    def __init__(self, shards: int):
        super().__init__()
        self.shards = shards

    def expand(self, batches):
        return (
            batches
            | "SplitByShard" >> beam.FlatMap(split_by_shard, self.shards)
            | "GroupByShard" >> beam.GroupByKey()
            | "Unpack" >> beam.MapTuple(lambda shard, packed: (shard, _unpack_all(packed)))
        )


def load_cuts(cuts_path: str | None) -> UserCuts | None:
    """The split plan's per-user cuts (None without a path: temporal split, no validation)."""
    return None if cuts_path is None else UserCuts.read(cuts_path)


class BuildShardFiles(beam.DoFn):
    """Builds and writes one shard's train/valid/eval/heldout TFRecords; emits the shard summary.

    The per-user cuts are read from `cuts_path` once per worker (a file, not a side input, so
    the job graph stays small however many users there are).
    """

    def __init__(
        self,
        raw_dir: str,
        out: str,
        window: FeatureWindow,
        cfg: FeaturesConfig,
        cuts_path: str | None = None,
    ):
        self.raw_dir, self.out, self.window, self.cfg = raw_dir, out, window, cfg
        self.cuts_path = cuts_path
        self.users = self.cuts = None

    def setup(self):
        self.users = load_users(self.raw_dir)
        self.cuts = load_cuts(self.cuts_path)

    def process(self, element):
        shard, tables = element
        events = pa.concat_tables(list(tables)).to_pandas()
        yield job.process_shard(
            shard, events, self.users, self.window, self.cfg, self.out, self.cuts
        )


class _CountBatch(beam.DoFn):
    def __init__(self, window: FeatureWindow, cuts_path: str | None):
        self.window, self.cuts_path, self.cuts = window, cuts_path, None

    def setup(self):
        self.cuts = load_cuts(self.cuts_path)

    def process(self, table):
        yield job.count_train_interactions(table.to_pandas(), self.window, self.cuts)


class CountTrainInteractions(beam.PTransform):
    """Event batches -> one (item_counts, user_counts) pair of the training interactions."""

    def __init__(self, window: FeatureWindow, cuts_path: str | None = None):
        super().__init__()
        self.window, self.cuts_path = window, cuts_path

    def expand(self, batches):
        return (
            batches
            | "CountBatch" >> beam.ParDo(_CountBatch(self.window, self.cuts_path))
            # without_defaults: no side input to inject an empty default (the DaskRunner has
            # none to give); run_beam refuses a snapshot without row groups.
            | "SumCounts" >> beam.CombineGlobally(_SumCounts()).without_defaults()
        )


class _SumCounts(beam.CombineFn):
    def create_accumulator(self):
        return (pd.Series(dtype=np.int64), pd.Series(dtype=np.int64))

    def add_input(self, accumulator, element):
        return job.add_counts(accumulator, element)

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = job.add_counts(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class WriteCatalogAndVocabularies(beam.PTransform):
    """Training counts -> catalog.parquet and vocab/*.tsv; emits their summary."""

    def __init__(self, raw_dir: str, out: str, cfg: FeaturesConfig):
        super().__init__()
        self.raw_dir, self.out, self.cfg = raw_dir, out, cfg

    def expand(self, counts):
        raw_dir, out, cfg = self.raw_dir, self.out, self.cfg
        return counts | "Write" >> beam.Map(
            lambda c: job.write_catalog_and_vocabularies(load_items(raw_dir), c, cfg, out)
        )


def load_users(raw_dir: str) -> pd.DataFrame | None:
    """User features indexed by user_id, or None when the snapshot has no users table."""
    path = files.join(raw_dir, "users.parquet")
    if not files.exists(path):
        return None
    users = _read_parquet(path)
    return users.drop_duplicates("user_id").set_index("user_id")


def user_feature_names(raw_dir: str) -> list[str]:
    """Names of the `user_<column>` features the records carry (from the users table)."""
    path = files.join(raw_dir, "users.parquet")
    if not files.exists(path):
        return []
    import pyarrow.parquet as pq

    schema = pq.read_schema(pa.BufferReader(files.read_bytes(path)))
    return [
        user_feature(name) for name in schema.names if name not in (USER_ID, "__index_level_0__")
    ]


def load_items(raw_dir: str) -> pd.DataFrame | None:
    path = files.join(raw_dir, "items.parquet")
    return _read_parquet(path) if files.exists(path) else None


def _read_parquet(path: str) -> pd.DataFrame:
    import io as _io

    return pd.read_parquet(_io.BytesIO(files.read_bytes(path)))


def build_pipeline(
    pipeline: beam.Pipeline,
    raw_dir: str,
    out: str,
    window: FeatureWindow,
    cfg: FeaturesConfig,
    split: dict | None = None,
) -> None:
    """Add the feature job's transforms to `pipeline` (the caller runs it).

    Args:
        split: the manifest's `split` section from `job.write_user_cuts` (its
            `user_cuts.path` is read by the workers); None = temporal split, no validation.
    """
    cuts_path = split["user_cuts"]["path"] if split else None
    extra = {"user_features": user_feature_names(raw_dir), **({"split": split} if split else {})}
    batches = pipeline | "ReadEvents" >> ReadEventBatches(raw_dir)
    shard_summaries = (
        batches
        | "GroupByUserShard" >> GroupEventsByUserShard(cfg.shards)
        | "BuildShardFiles" >> beam.ParDo(BuildShardFiles(raw_dir, out, window, cfg, cuts_path))
    )
    catalog_summary = (
        batches
        | "CountTrainInteractions" >> CountTrainInteractions(window, cuts_path)
        | "WriteCatalog" >> WriteCatalogAndVocabularies(raw_dir, out, cfg)
    )
    _ = (shard_summaries, catalog_summary) | "WriteManifest" >> WriteManifest(
        out, window, cfg, extra
    )


class WriteManifest(beam.PTransform):
    """(shard summaries, catalog summary) -> manifest.json, written once all are in.

    The summaries meet in one GroupByKey rather than as side inputs, so the manifest is the
    job's single sink: runners that compute only what the last transform needs (the
    DaskRunner) still run every branch, once.
    """

    def __init__(self, out: str, window: FeatureWindow, cfg: FeaturesConfig, extra: dict):
        super().__init__()
        self.out, self.window, self.cfg, self.extra = out, window, cfg, extra

    def expand(self, summaries):
        shards, catalog = summaries
        out, window, cfg, extra = self.out, self.window, self.cfg, self.extra
        return (
            (
                shards | "TagShards" >> beam.Map(lambda s: (0, ("shard", s))),
                catalog | "TagCatalog" >> beam.Map(lambda c: (0, ("catalog", c))),
            )
            | "Flatten" >> beam.Flatten()
            | "Gather" >> beam.GroupByKey()
            | "Write"
            >> beam.MapTuple(lambda _, tagged: _write_manifest(out, window, cfg, tagged, extra))
        )


def _write_manifest(out, window, cfg, tagged, extra) -> dict:
    tagged = list(tagged)
    shards = [summary for tag, summary in tagged if tag == "shard"]
    (catalog,) = [summary for tag, summary in tagged if tag == "catalog"]
    return job.write_manifest(out, window, cfg, shards, catalog, extra)


def beam_options(
    beam_args: list[str], defaults: BeamConfig, work_units: int | None = None
) -> PipelineOptions:
    """Pipeline options: the config's (`beam.*`, `beam.options`), overridden by any flag given.

    Args:
        work_units: the job's units of input (row groups). On the DaskRunner, unless
            `dask_npartitions` or `dask_partition_size` is set, each becomes a Dask partition:
            its default (128 elements per partition) would read them all, and group every
            shard, in one task on one worker.

    Raises:
        ConfigError: a `beam.options` name is no flag of Beam's (nor of the runner's).
    """
    args = list(beam_args)
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    configured = {
        "runner": defaults.runner,
        "direct_num_workers": defaults.direct_num_workers,
        "direct_running_mode": defaults.direct_running_mode,
        **defaults.options,
    }
    for name, value in configured.items():
        if f"--{name}" not in given:
            args.extend(option_flags(name, value))
    options = PipelineOptions(args)
    runner = options.view_as(StandardOptions).runner or ""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if (
        work_units
        and runner.rsplit(".", 1)[-1] == "DaskRunner"
        and not flags & {"--dask_npartitions", "--dask_partition_size"}
    ):
        options = PipelineOptions([*args, f"--dask_npartitions={work_units}"])
    _check_known(options, defaults)
    return options


def option_flags(name: str, value) -> list[str]:
    """A config option as Beam flags: true -> `--name`, false -> none, a list -> the flag once
    per item, anything else -> `--name=value`."""
    if value is True:
        return [f"--{name}"]
    if value is False:
        return []
    if isinstance(value, list):
        return [f"--{name}={item}" for item in value]
    return [f"--{name}={value}"]


def _check_known(options: PipelineOptions, cfg: BeamConfig) -> None:
    """Refuse `beam.options` names that no Beam options class parses (Beam would only warn
    and drop them: a misspelt `flink_mastr` would silently run elsewhere)."""
    if not cfg.options:
        return
    runner = options.view_as(StandardOptions).runner
    try:  # the runner's module registers its own options (DaskOptions, ...)
        from apache_beam.runners.runner import create_runner

        create_runner(runner)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"beam.runner: {runner!r} cannot be loaded here: {exc}") from None
    # Options no class parses are kept under their flag name only when asked to retain them.
    parsed = options.get_all_options()
    kept = options.get_all_options(retain_unknown_options=True)
    unknown = sorted(set(cfg.options) & (set(kept) - set(parsed)))
    if unknown:
        raise ConfigError(
            f"beam.options: {', '.join(unknown)} "
            f"{'is not a Beam pipeline option' if len(unknown) == 1 else 'are not Beam pipeline options'}"
            f" (for the runner {runner}); see `python -m apache_beam.examples.wordcount --help` "
            "or the runner's docs for the flag names"
        )


def run_beam(
    raw_dir: str,
    out: str,
    window: FeatureWindow,
    cfg: FeaturesConfig,
    beam_args: list[str] | None = None,
    beam_cfg: BeamConfig | None = None,
    plan: SplitPlan | None = None,
) -> dict:
    """Run the feature job with Beam and return the manifest it wrote.

    Args:
        window: the resolved window (used to plan the split when `plan` is None).
        beam_args: Beam flags (`--runner`, runner options); they win over `beam_cfg`.
        beam_cfg: the config's runner and `options` (docs/scaling.md).
        plan: the split plan (`split.plan_split`); None = plan it here from the snapshot (the
            launcher reads its user ids and timestamps with pandas).

    Raises:
        ConfigError: a `beam.options` name Beam does not know, or a runner that cannot load.
        DataValidationError: the snapshot has no interactions.
    """
    groups = parquet_row_groups(event_files(raw_dir))
    row_groups = len(groups)
    if not row_groups:  # every branch would be empty and no manifest written
        raise DataValidationError(f"{raw_dir}: no interactions to build features from")
    cfg = job.with_shards(cfg, _rows(groups))
    options = beam_options(beam_args or [], beam_cfg or BeamConfig(), work_units=row_groups)
    files.makedirs(out)
    for split in job.SPLITS:
        files.makedirs(files.join(out, split))
    if plan is None:
        plan = plan_split_from_snapshot(raw_dir, window, cfg)
    split_summary = job.write_user_cuts(out, plan)
    # DirectRunner multi_processing: SDK worker processes die with this process, even SIGKILLed.
    workers.guard_local_workers(
        options.view_as(StandardOptions).runner, options.view_as(DirectOptions).direct_running_mode
    )
    pipeline = beam.Pipeline(options=options)
    try:
        with pipeline:
            build_pipeline(pipeline, raw_dir, out, plan.window, cfg, split_summary)
    finally:
        _disconnect(getattr(pipeline, "result", None))
    return files.read_json(files.join(out, FEATURES_MANIFEST))


def _disconnect(result) -> None:
    """Close the DaskRunner's client (the runner leaves it connected to the cluster)."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close()


def run(argv: list[str] | None = None) -> dict:
    """Standalone entry point: known flags here, everything else goes to PipelineOptions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--raw-dir", required=True, help="snapshot directory (local or gs://, s3://)"
    )
    parser.add_argument("--out", required=True, help="features output directory")
    parser.add_argument("--window-start", required=True, help="ISO date/time (UTC)")
    parser.add_argument("--eval-start", required=True)
    parser.add_argument("--window-end", required=True)
    parser.add_argument("--history-length", type=int, default=FeaturesConfig().history_length)
    parser.add_argument(
        "--shards", type=int, default=None, help="user shards (default: from the event count)"
    )
    parser.add_argument(
        "--eval-design", choices=typing.get_args(EvalDesign),
        default=FeaturesConfig().eval_design, help="features.eval_design",
    )  # fmt: skip
    known, beam_args = parser.parse_known_args(argv)
    seconds = [epoch_seconds(v) for v in (known.window_start, known.eval_start, known.window_end)]
    window = FeatureWindow(seconds[0], seconds[0], seconds[1], seconds[2])
    cfg = FeaturesConfig(
        history_length=known.history_length, shards=known.shards, eval_design=known.eval_design
    )
    return run_beam(known.raw_dir, known.out, window, cfg, beam_args)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
