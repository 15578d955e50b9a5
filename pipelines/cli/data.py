"""Data commands: `generate` (the synthetic world), `land` (one day into a source, announced to
Airflow), `validate` (raw-data checks) and `features` (the point-in-time feature job)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from pipelines.cli.common import (
    command,
    config_flags,
    engine_arg,
    load,
    load_with_source,
    progress,
    source_args,
    utc_timestamp,
)
from pipelines.cli.registry import event_flag


def add_commands(sub: argparse._SubParsersAction) -> None:
    gen = command(
        sub, "generate", _generate, help="write the synthetic world (landing layout + ground truth)"
    )
    config_flags(
        gen, "synthetic.preset", "synthetic.seed", "synthetic.days", "synthetic.start_date"
    )
    gen.add_argument(
        "--out", type=Path, help="output directory (default: <artifact-root>/landing/<preset>)"
    )

    land = command(
        sub, "land", _land, help="land one day's interactions in a source (and tell Airflow)"
    )
    land.add_argument(
        "path", type=Path, help="a *.parquet / *.csv file, or a directory of them (dt=YYYY-MM-DD/)"
    )
    land.add_argument(
        "--dt", help="the partition's day, YYYY-MM-DD (default: from PATH's dt= directory)"
    )
    land.add_argument(
        "--source",
        help="source directory relative to the data root (default: data.source of the config)",
    )
    land.add_argument(
        "--data-root", type=Path, help="the data root (default: TTR_DATA_ROOT, else ./data)"
    )
    event_flag(land)

    val = command(
        sub,
        "validate",
        _validate,
        help="check a raw source against the data contract (Great Expectations)",
    )
    source_args(val)
    val.add_argument("--start", type=utc_timestamp, help="data interval start (ISO date/time, UTC)")
    val.add_argument("--end", type=utc_timestamp, help="data interval end, exclusive")
    val.add_argument(
        "--now",
        type=utc_timestamp,
        help="judge 'in the future' against this moment instead of the clock",
    )
    val.add_argument(
        "--report-dir",
        type=Path,
        help="where to save the report (default: <artifact-root>/runs/validate-<time>/raw_report)",
    )
    val.add_argument("--json", action="store_true", help="print the full report as JSON")

    feat = command(
        sub,
        "features",
        _features,
        help="point-in-time features with Apache Beam (examples, eval queries, catalog, vocabularies)",
    )
    source_args(feat)
    feat.add_argument(
        "--run-dir", type=Path, help="run directory (default: <artifact-root>/runs/features-<time>)"
    )
    for flag, text in (
        ("--window-start", "training window start"),
        ("--eval-start", "eval period start (train = [window-start, eval-start))"),
        ("--window-end", "window end, exclusive"),
    ):
        feat.add_argument(
            flag, type=utc_timestamp, help=f"{text} (ISO, UTC; default from config/data)"
        )
    config_flags(feat, "features.as_of", "features.history_length", "features.shards")
    engine_arg(feat)


def _generate(args) -> int:
    """Simulate a synthetic world day by day and write interactions/dt=*/, items.parquet,
    users.parquet and _truth/ (the true preference model). Same preset, seed, days and start
    date give byte-identical files.
    """
    from pipelines.artifacts import ArtifactRoot
    from pipelines.synthetic import generate

    cfg = load(args)
    syn = cfg.synthetic
    root = ArtifactRoot(cfg.data.artifact_root)
    out = args.out or root.landing(syn.preset)
    summary = generate(
        out,
        preset=syn.preset,
        seed=syn.seed,
        days=syn.days,
        start_date=syn.start_date,
        on_day=progress("generate"),
    )
    if not args.out and root.remote:  # a URL root's landing: generated here, then uploaded
        root.push(root.relative(out), last=("items.parquet",))
    print(
        f"wrote {summary.events:,} events, {summary.users:,} users, {summary.items:,} items "
        f"in {summary.partitions} daily partitions to {summary.out}"
    )
    return 0


def _land(args) -> int:
    """Copy one day of interactions (a file, or a dt=YYYY-MM-DD directory of *.parquet / *.csv)
    into <source>/interactions/dt=YYYY-MM-DD/ of a contract source under the data root. The
    partition appears whole or not at all (copied aside, then renamed into place); its header
    must name user_id, item_id and timestamp and it must hold rows. A landed day is never
    replaced: the same files again change nothing, different ones are refused (exit 2).

    Then, when this environment names an Airflow deployment (AIRFLOW_HOME or
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN; --no-airflow-event skips it), records a
    `two_tower_landing` asset event with extra {partition, source, rows, path, user}. The
    `two_tower_retrain` DAG is scheduled on that asset (or its timer): if the DAG is unpaused,
    Airflow queues one asset-triggered run (events arriving before that run is created make
    one run), which reads the deployment's configured source (TTR_DATA__SOURCE or data.source,
    as the DAG's description says), validates it and retrains; a paused DAG records the event
    and starts nothing. Landing into a source other than the configured one is allowed and
    said: that run will not read it.
    """
    from pipelines.config import DeploymentSettings
    from pipelines.errors import UsageError
    from pipelines.orchestration import events
    from pipelines.orchestration.params import resolve_source
    from pipelines.registry import os_user
    from pipelines.sources.landing import land_partition

    cfg = load(args)
    root = (args.data_root or DeploymentSettings.from_env().data_root).resolve()
    if args.source:
        source = Path(resolve_source(args.source, root))
    elif cfg.data.source:
        source = Path(cfg.data.source).resolve()
    else:
        raise UsageError("give --source DIR (relative to the data root) or set data.source")
    landed = land_partition(source, args.path, args.dt)
    verb = "already landed (same files)" if landed.already else "landed"
    print(f"{verb}: dt={landed.partition}, {landed.rows:,} rows, {len(landed.files)} file(s) "
          f"-> {landed.path}")  # fmt: skip
    configured = Path(cfg.data.source).resolve() if cfg.data.source else None
    if configured != source:
        reads = configured or f"the synthetic '{cfg.synthetic.preset}' preset"
        print(f"note: with this config, timer and landing runs read {reads}, not {source}")
    name = str(source.relative_to(root)) if root in source.parents else str(source)
    extra = {"rows": landed.rows, "path": str(landed.path), "user": os_user()}
    if args.airflow_event and events.emit_landing_event(landed.partition, name, extra):
        print(f"recorded in Airflow: {events.LANDING_ASSET} asset event")
    return 0


def _validate(args) -> int:
    """Read a source (format detected when --format is omitted), run the raw-data suite, print each
    failed rule with file, column, counts and sample rows, and save the HTML report. Exits 1
    when any rule fails. Never modifies the input; what passed is kept as a checksummed
    snapshot in <artifact-root>/runs/validate-<time>/snapshot (the run's validate step).
    """
    from pipelines.artifacts import ArtifactRoot
    from pipelines.errors import DataValidationError
    from pipelines.steps.pipeline import new_run_id
    from pipelines.steps.validate import take_snapshot

    cfg = load_with_source(args)
    if (args.start is None) != (args.end is None):
        print("error: --start and --end go together", file=sys.stderr)
        return 2
    interval = (args.start, args.end) if args.start is not None else None
    if interval and interval[0] >= interval[1]:
        print("error: --start must be before --end", file=sys.stderr)
        return 2
    root = ArtifactRoot(cfg.data.artifact_root)
    with root.synced_run(new_run_id("validate")) as layout:
        try:
            report = take_snapshot(
                cfg, layout, interval=interval, now=args.now, report_dir=args.report_dir
            )
        except DataValidationError as exc:
            report = exc.report
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.summary())
    return 0 if report.success else 1


def _features(args) -> int:
    """Snapshot a source into <run-dir>/raw, run the Beam feature job into <run-dir>/features
    (train/eval TFRecords, catalog.parquet, vocab/*.tsv, manifest.json) and check the output
    (leakage, split order, counts). Unknown flags go to Beam's PipelineOptions untouched, e.g.
    --runner DataflowRunner --project P --region R --temp_location gs://B/tmp, or --runner
    FlinkRunner --flink_master HOST:8081. Default: DirectRunner, multi_processing, 2 workers.
    Exits 1 when the checks fail.
    """
    from pipelines.artifacts import ArtifactRoot
    from pipelines.errors import DataValidationError
    from pipelines.layout import RunLayout
    from pipelines.steps.features import run_features
    from pipelines.steps.pipeline import new_run_id

    cfg = load_with_source(args)
    if args.run_dir:
        run_dir = contextlib.nullcontext(RunLayout(args.run_dir))
    else:
        run_dir = ArtifactRoot(cfg.data.artifact_root).synced_run(new_run_id("features"))
    try:
        with run_dir as layout:
            run = run_features(
                cfg,
                layout,
                window_start=args.window_start,
                eval_start=args.eval_start,
                window_end=args.window_end,
                beam_args=args.beam_args,
                engine=args.engine,
            )
    except DataValidationError as exc:
        print(str(exc))
        return 1
    counts = run.manifest["counts"]
    window = run.manifest["window"]
    print(f"features written to {run.features_dir}")
    print(
        f"  window [{window['window_start']}, {window['window_end']}), eval from {window['eval_start']}"
    )
    print(
        f"  {counts['train_examples']:,} train examples, {counts['eval_queries']:,} eval queries "
        f"({counts['eval_interactions']:,} eval interactions), {counts['catalog_items']:,} catalog items"
    )
    print(run.report.summary())
    return 0
