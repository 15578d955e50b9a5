"""`two-tower` / `python -m pipelines`: one subcommand per pipeline step.

The CLI only parses flags into the config and calls one library function per step.
Exit codes: 0 success, 1 the step ran and said no (data refused by the checks, the gate kept
production, production changed under a promotion), 2 bad usage, bad config, unreadable input or
an environment failure (disk full, permissions). Never a traceback for any of these.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines.config import PipelineConfig, load_config
from pipelines.errors import PipelineError, UsageError

log = logging.getLogger("pipelines")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "features":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.beam_args = extra
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment said no: disk full, permissions, quota
        print(f"error: {_describe_os_error(exc)}; production unchanged", file=sys.stderr)
        return 2


def _describe_os_error(exc: OSError) -> str:
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full{where}: free space (or `two-tower registry gc`) and re-run"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}: {exc.strerror}"
    return f"{exc.strerror or exc}{where}"


_OUR_PACKAGES = {"pipelines", "data_checks", "tfrs_models", "scann_index", "dags"}


def _configure_logging(verbose: bool) -> None:
    """Our steps log at INFO; libraries (GX, TensorFlow, Beam) only from WARNING unless -v."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(
            lambda record: (
                record.levelno >= logging.WARNING or record.name.split(".")[0] in _OUR_PACKAGES
            )
        )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="two-tower",
        description="Retraining pipeline for two-tower candidate retrieval.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Config layers: defaults < --config YAML < TTR_<SECTION>__<FIELD> env vars < flags.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="write the synthetic world (landing layout + ground truth)",
        description="Simulate a synthetic world day by day and write interactions/dt=*/, "
        "items.parquet, users.parquet and _truth/ (the true preference model). "
        "Same preset, seed, days and start date give byte-identical files.",
    )
    _common(gen)
    gen.add_argument(
        "--preset", choices=["small", "medium", "large"], help="world size (default: small)"
    )
    gen.add_argument("--seed", type=int, help="random seed (default: 7)")
    gen.add_argument("--days", type=int, help="days to simulate (default: the preset's)")
    gen.add_argument(
        "--start-date",
        type=dt.date.fromisoformat,
        help="UTC date of the first partition, YYYY-MM-DD (default: 2026-01-01)",
    )
    gen.add_argument(
        "--out", type=Path, help="output directory (default: <artifact-root>/landing/<preset>)"
    )
    gen.set_defaults(handler=_generate)

    val = sub.add_parser(
        "validate",
        help="check a raw source against the data contract (Great Expectations)",
        description="Read a source (format detected when --format is omitted), run the raw-data "
        "suite, print each failed rule with file, column, counts and sample rows, and "
        "save the HTML report. Exits 1 when any rule fails. Never modifies the input.",
    )
    _common(val)
    _source_args(val)
    val.add_argument(
        "--start", type=_utc_timestamp, help="data interval start (ISO date/time, UTC)"
    )
    val.add_argument("--end", type=_utc_timestamp, help="data interval end, exclusive")
    val.add_argument(
        "--now",
        type=_utc_timestamp,
        help="judge 'in the future' against this moment instead of the clock",
    )
    val.add_argument(
        "--report-dir",
        type=Path,
        help="where to save the report (default: <artifact-root>/runs/validate-<time>/raw_report)",
    )
    val.add_argument("--json", action="store_true", help="print the full report as JSON")
    val.set_defaults(handler=_validate)

    feat = sub.add_parser(
        "features",
        help="point-in-time features with Apache Beam (examples, eval queries, catalog, vocabularies)",
        description="Snapshot a source into <run-dir>/raw, run the Beam feature job into "
        "<run-dir>/features (train/eval TFRecords, catalog.parquet, vocab/*.tsv, manifest.json) "
        "and check the output (leakage, split order, counts). Unknown flags go to Beam's "
        "PipelineOptions untouched, e.g. --runner DataflowRunner --project P --region R "
        "--temp_location gs://B/tmp, or --runner FlinkRunner --flink_master HOST:8081. "
        "Default: DirectRunner, multi_processing, 2 workers. Exits 1 when the checks fail.",
    )
    _common(feat)
    _source_args(feat)
    feat.add_argument(
        "--run-dir", type=Path, help="run directory (default: <artifact-root>/runs/features-<time>)"
    )
    for flag, text in (
        ("--window-start", "training window start"),
        ("--eval-start", "eval period start (train = [window-start, eval-start))"),
        ("--window-end", "window end, exclusive"),
    ):
        feat.add_argument(
            flag, type=_utc_timestamp, help=f"{text} (ISO, UTC; default from config/data)"
        )
    _as_of_arg(feat)
    feat.add_argument(
        "--history-length", type=int, help="items per history (features.history_length)"
    )
    feat.add_argument("--shards", type=int, help="user shards / TFRecord files per split")
    feat.add_argument(
        "--engine",
        choices=["beam", "local"],
        default="beam",
        help="beam (default) or the single-process reference (same outputs)",
    )
    feat.set_defaults(handler=_features)

    tr = sub.add_parser(
        "train",
        help="train the TFRS two-tower model on a feature run and export it",
        description="Train the query and item towers with an in-batch softmax (temperature, "
        "logQ correction, accidental-hit removal; optional mixed and hard negatives), checkpoint "
        "every epoch (a rerun resumes), early-stop on exact Recall@K of eval queries, log to "
        "TensorBoard (<model-dir>/logs) and export the query-tower SavedModel and the catalog's "
        "item embeddings. Prints Recall@K against the popularity baseline.",
    )
    _common(tr)
    tr.add_argument("--features", type=Path, required=True, help="feature job output directory")
    tr.add_argument("--model-dir", type=Path, required=True, help="checkpoints, logs and export")
    tr.add_argument("--warm-start", type=Path, help="previous model directory to initialise from")
    tr.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --model-dir")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--learning-rate", type=float)
    tr.add_argument("--embedding-dim", type=int)
    tr.add_argument("--temperature", type=float)
    tr.add_argument("--mixed-negatives", type=int)
    tr.set_defaults(handler=_train)

    idx = sub.add_parser(
        "index",
        help="build and tune the ScaNN index over a trained model's item embeddings",
        description="Build exact search (small catalogs) or tree + asymmetric hashing + exact "
        "reordering (large ones) over <run-dir>/model/item_embeddings.npy, tune leaves to "
        "search / reorder depth on eval queries to the cheapest setting reaching the target "
        "recall vs exact search, and write <run-dir>/model/index plus the serving state.",
    )
    _common(idx)
    idx.add_argument("--run-dir", type=Path, required=True, help="run with features/ and model/")
    idx.add_argument("--target-recall", type=float, help="ANN recall@k to reach (default 0.95)")
    idx.add_argument("--k", type=int, help="neighbours the index is tuned for (default 100)")
    idx.set_defaults(handler=_index)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate challenger, champion and baselines on the eval period",
        description="Answer every eval query through query tower -> index (seen items "
        "excluded) for the run's model and the production bundle, plus popularity and, on "
        "synthetic data, the oracle; write metrics.json, report.md and recall_at_k.png to "
        "<run-dir>/evaluation, then apply the gate (gate.md).",
    )
    _common(ev)
    ev.add_argument(
        "--run-dir", type=Path, required=True, help="run with features/ and model/index"
    )
    ev.add_argument(
        "--champion", type=Path, help="served directory to compare (default: production)"
    )
    ev.add_argument(
        "--source", type=Path, help="source with _truth/ for the oracle (synthetic data)"
    )
    ev.set_defaults(handler=_evaluate)

    pr = sub.add_parser(
        "promote",
        help="promote a run's bundle (if its gate passes) or an existing bundle",
        description="With --run-dir: apply the gate to the run's evaluation and, if it passes "
        "(or --force), publish the bundle and swap the production pointer atomically. With "
        "--bundle: point production at a bundle already in the registry.",
    )
    _common(pr)
    group = pr.add_mutually_exclusive_group(required=True)
    group.add_argument("--run-dir", type=Path, help="an evaluated run")
    group.add_argument("--bundle", help="bundle id in the registry")
    pr.add_argument("--force", action="store_true", help="promote even if gate rules fail")
    pr.set_defaults(handler=_promote)

    rb = sub.add_parser(
        "rollback",
        help="restore the previous production bundle",
        description="Point production back at the bundle it served before the current one.",
    )
    _common(rb)
    rb.set_defaults(handler=_rollback)

    reg = sub.add_parser("registry", help="list bundles in the registry")
    reg_sub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    lst = reg_sub.add_parser("list", help="bundles, oldest first; * marks production")
    _common(lst)
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=_registry_list)
    gc = reg_sub.add_parser(
        "gc",
        help="remove debris of killed or failed publishes",
        description="Remove temporary bundle copies, incomplete bundles and temporary pointers "
        "left by killed or failed publishes. Never touches complete bundles, production or its "
        "predecessor, or anything younger than --older-than (a publish in flight).",
    )
    _common(gc)
    gc.add_argument(
        "--older-than", type=float, default=3600.0, metavar="SECONDS",
        help="only debris untouched for this long (default 3600)",
    )  # fmt: skip
    gc.set_defaults(handler=_registry_gc)

    rec = sub.add_parser(
        "recommend",
        help="top-K recommendations from the production bundle",
        description="Recommend for one user (--user) or a file of user ids, one per line "
        "(--users FILE --out FILE: one JSON line per user, {user_id, source, items: "
        "[{item_id, score}]}). Unknown users get the recent-popularity fallback.",
    )
    _common(rec)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="one user id")
    who.add_argument("--users", type=Path, help="file with one user id per line")
    rec.add_argument("--out", type=Path, help="JSON lines output (with --users; default stdout)")
    rec.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    seen = rec.add_mutually_exclusive_group()
    seen.add_argument(
        "--exclude-seen",
        dest="exclude_seen",
        action="store_true",
        default=True,
        help="leave out items the user already interacted with (default)",
    )
    seen.add_argument("--include-seen", dest="exclude_seen", action="store_false")
    rec.add_argument("--bundle", help="bundle id (default: production)")
    rec.set_defaults(handler=_recommend)

    run = sub.add_parser(
        "run",
        help="all steps end to end in one process",
        description="validate -> features -> train (warm start from production) -> index -> "
        "evaluate -> gate -> promote, the same functions the Airflow DAG calls. Without "
        "--source the synthetic preset is generated under <artifact-root>/landing.",
    )
    _common(run)
    _source_args(run)
    run.add_argument(
        "--run-id", help="run directory name (default: run-<UTC time to the µs>-<random>)"
    )
    run.add_argument("--preset", choices=["small", "medium", "large"], help="synthetic preset")
    run.add_argument("--epochs", type=int)
    _as_of_arg(run)
    run.add_argument("--engine", choices=["beam", "local"], default="beam")
    run.add_argument("--force-promote", action="store_true", default=None)
    run.add_argument(
        "--dry-run", action="store_true", default=None, help="every step but promotion"
    )
    run.add_argument(
        "--no-resume", action="store_true",
        help="re-running a run id: ignore its training checkpoints (they are used only when "
        "made from the same features and config anyway)",
    )  # fmt: skip
    run.set_defaults(handler=_run)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--artifact-root", help="root for runs/ and registry/ (default: artifacts)")


def _as_of_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=_utc_timestamp,
        help="see only what existed before this moment (ISO, UTC): later interactions and "
        "items are ignored, as in a backfill (features.as_of)",
    )


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", type=Path, help="source directory (or data.source in the config)"
    )
    parser.add_argument(
        "--format",
        choices=["auto", "contract", "ml-100k", "ml-1m", "ml-latest"],
        help="source format (default: auto-detect)",
    )


def _load_with_source(args, **sections) -> PipelineConfig:
    """Config with --source/--format applied; a missing source is a usage error."""
    source = str(args.source) if args.source else None
    cfg = _load(args, data={"source": source, "format": args.format}, **sections)
    if cfg.data.source is None:
        raise UsageError("give --source DIR (or data.source in the config)")
    return cfg


def _load(args, **sections) -> PipelineConfig:
    data = {"artifact_root": args.artifact_root, **sections.pop("data", {})}
    overrides = {"data": data, **sections}
    return load_config(args.config, overrides=overrides)


def _generate(args) -> int:
    from pipelines.synthetic import generate

    cfg = _load(
        args,
        synthetic={
            "preset": args.preset,
            "seed": args.seed,
            "days": args.days,
            "start_date": args.start_date,
        },
    )
    syn = cfg.synthetic
    out = args.out or Path(cfg.data.artifact_root) / "landing" / syn.preset
    summary = generate(
        out,
        preset=syn.preset,
        seed=syn.seed,
        days=syn.days,
        start_date=syn.start_date,
        on_day=_progress("generate"),
    )
    print(
        f"wrote {summary.events:,} events, {summary.users:,} users, {summary.items:,} items "
        f"in {summary.partitions} daily partitions to {summary.out}"
    )
    return 0


def _validate(args) -> int:
    from data_checks.raw import validate_source
    from pipelines.run import new_run_id

    cfg = _load_with_source(args)
    if (args.start is None) != (args.end is None):
        print("error: --start and --end go together", file=sys.stderr)
        return 2
    interval = (args.start, args.end) if args.start is not None else None
    if interval and interval[0] >= interval[1]:
        print("error: --start must be before --end", file=sys.stderr)
        return 2
    report_dir = args.report_dir or (
        Path(cfg.data.artifact_root) / "runs" / new_run_id("validate") / "raw_report"
    )
    report = validate_source(
        cfg.data.source,
        cfg.data.format,
        cfg.checks,
        interval=interval,
        now=args.now,
        report_dir=report_dir,
    )
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.summary())
    return 0 if report.success else 1


def _features(args) -> int:
    from pipelines.errors import DataValidationError
    from pipelines.features import run_features
    from pipelines.run import new_run_id

    cfg = _load_with_source(
        args,
        features={
            "history_length": args.history_length,
            "shards": args.shards,
            "as_of": args.as_of,
        },
    )
    run_dir = args.run_dir or Path(cfg.data.artifact_root) / "runs" / new_run_id("features")
    try:
        run = run_features(
            cfg.data.source,
            run_dir,
            cfg,
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


def _train(args) -> int:
    cfg = _load(args, train={
        "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "embedding_dim": args.embedding_dim, "temperature": args.temperature,
        "mixed_negatives": args.mixed_negatives,
    })  # fmt: skip
    if not (args.features / "manifest.json").is_file():
        print(
            f"error: {args.features} has no manifest.json; run `two-tower features` first",
            file=sys.stderr,
        )
        return 2
    from tfrs_models.train import train_model

    result = train_model(
        args.features,
        args.model_dir,
        cfg.train,
        warm_start_from=args.warm_start,
        resume=not args.no_resume,
    )
    m, k = result.manifest, cfg.train.eval_k
    print(
        f"model written to {result.model_dir} (best epoch {m['best_epoch']} of {m['epochs_run']}, "
        f"{m['train_examples_per_second']:,.0f} examples/s)"
    )
    if m[f"validation_recall@{k}"] is None:
        print("  no validation split in these features: every epoch ran, the last one kept")
    else:
        print(
            f"  Recall@{k} on {m['validation_queries']:,} validation queries (selection only; "
            f"the evaluate step scores the eval period): model "
            f"{m[f'validation_recall@{k}']:.4f}, popularity "
            f"{m[f'validation_popularity_recall@{k}']:.4f}"
        )
    print(
        f"  query tower: {m['export']['query_tower']}; item embeddings: {m['export']['item_embeddings']}"
    )
    return 0


def _index(args) -> int:
    from pipelines.run import build_index

    cfg = _load(args, index={"target_recall": args.target_recall, "k": args.k})
    out = build_index(cfg, args.run_dir)
    print(
        f"index written to {out['index_dir']} ({out['kind']}): recall@{cfg.index.k} vs exact "
        f"{out['recall']:.4f} (target {out['target_recall']}), leaves {out['leaves_to_search']}, "
        f"reorder {out['pre_reorder']}, {out['qps_batched']} queries/s, p99 {out['latency_p99_ms']} ms"
    )
    return 0


def _evaluate(args) -> int:
    from pipelines.registry import Registry
    from pipelines.run import evaluate, gate

    cfg = _load(args, data={"source": str(args.source) if args.source else None})
    champion = args.champion or Registry(cfg.data.artifact_root).production_dir()
    out = evaluate(cfg, args.run_dir, champion)
    decision = gate(cfg, args.run_dir)
    print((Path(out["report"])).read_text())
    print(Path(args.run_dir, "evaluation", "gate.md").read_text())
    return 0 if decision["promote"] else 1


def _promote(args) -> int:
    from pipelines.registry import Registry

    cfg = _load(args, gate={"force_promote": args.force or None})
    registry = Registry(cfg.data.artifact_root)
    if args.bundle:
        pointer = registry.promote(args.bundle, reason="manual promote")
        print(f"production -> {pointer['bundle_id']} (was {pointer['previous']})")
        return 0
    from pipelines.run import gate, promote

    decision = gate(cfg, args.run_dir)
    out = promote(cfg, args.run_dir, decision, Path(args.run_dir).name, registry.production())
    print(Path(args.run_dir, "evaluation", "gate.md").read_text())
    if out["promoted"]:
        print(f"production -> {out['bundle_id']}")
        return 0
    print("not promoted; production unchanged")
    return 1


def _rollback(args) -> int:
    from pipelines.registry import Registry

    cfg = _load(args)
    pointer = Registry(cfg.data.artifact_root).rollback()
    print(f"production -> {pointer['bundle_id']} (rolled back)")
    return 0


def _registry_gc(args) -> int:
    from pipelines.registry import Registry

    cfg = _load(args)
    if args.older_than < 0:
        raise UsageError(f"--older-than must be >= 0 seconds, got {args.older_than}")
    removed = Registry(cfg.data.artifact_root).gc(older_than_s=args.older_than)
    for path in removed:
        print(f"removed {path}")
    print(f"registry gc: {len(removed)} debris entries removed")
    return 0


def _registry_list(args) -> int:
    from pipelines.registry import Registry

    cfg = _load(args)
    bundles = Registry(cfg.data.artifact_root).bundles()
    if args.json:
        print(json.dumps(bundles, indent=2))
        return 0
    if not bundles:
        print(f"no bundles in {cfg.data.artifact_root}/registry")
    for b in bundles:
        value = b["primary_value"]
        metric = f"{b['primary_metric']}={value:.4f}" if value is not None else ""
        print(f"{'*' if b['production'] else ' '} {b['bundle_id']}  {b['created_at']}  "
              f"run={b['run_id']}  {metric}  parent={b['parent']}")  # fmt: skip
    return 0


def _recommend(args) -> int:
    from pipelines.recommend import Recommender
    from pipelines.registry import Registry

    cfg = _load(args)
    registry = Registry(cfg.data.artifact_root)
    bundle = args.bundle or registry.production()
    if bundle is None:
        raise UsageError(
            f"no production bundle in {cfg.data.artifact_root}/registry; run `two-tower run` first"
        )
    recommender = Recommender(registry.fetch(bundle))
    if args.user:
        users = [args.user]
    else:
        try:
            users = [line.strip() for line in args.users.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise UsageError(f"cannot read --users {args.users}: {exc.strerror}") from None
    results = recommender.recommend(users, k=args.k, exclude_seen=args.exclude_seen)
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if args.out:
        args.out.write_text(lines)
        print(f"wrote {len(results)} users to {args.out} (bundle {bundle})", file=sys.stderr)
    else:
        sys.stdout.write(lines)
    return 0


def _run(args) -> int:
    from pipelines.errors import DataValidationError, PromotionConflict
    from pipelines.run import new_run_id, run_pipeline

    cfg = _load(
        args,
        data={"source": str(args.source) if args.source else None, "format": args.format},
        synthetic={"preset": args.preset},
        features={"as_of": args.as_of},
        train={"epochs": args.epochs},
        gate={"force_promote": args.force_promote, "dry_run": args.dry_run},
    )
    run_id = args.run_id or new_run_id()
    try:
        summary = run_pipeline(cfg, run_id, engine=args.engine, resume=not args.no_resume)
    except DataValidationError as exc:
        print(str(exc))
        print(f"run {run_id} stopped: data checks failed; production unchanged")
        return 1
    except PromotionConflict as exc:
        print(f"run {run_id} not promoted: {exc}")
        return 1
    run_dir = Path(summary["run_dir"])
    print((run_dir / "evaluation" / "report.md").read_text())
    print((run_dir / "evaluation" / "gate.md").read_text())
    promoted = summary["promote"]
    print(
        f"run {run_id}: {promoted['decision']}; production bundle: {summary['production']}"
        f" (champion was {summary['champion']})"
    )
    rejected = not summary["gate"]["promote"] and not cfg.gate.dry_run
    return 1 if rejected else 0


def _progress(step: str) -> Callable[[int, int, int], None]:
    interactive = sys.stderr.isatty()

    def report(day: int, days: int, events: int) -> None:
        width = 30
        done = int(width * (day + 1) / days)
        line = (
            f"{step}: [{'#' * done}{'.' * (width - done)}] day {day + 1}/{days} ({events:,} events)"
        )
        end = "\r" if interactive and day + 1 < days else "\n"
        if interactive or (day + 1) % max(1, days // 4) == 0 or day + 1 == days:
            print(line, end=end, file=sys.stderr, flush=True)

    return report


def _utc_timestamp(text: str):
    from pipelines.features.window import utc_timestamp

    try:
        return utc_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None


if __name__ == "__main__":
    raise SystemExit(main())
