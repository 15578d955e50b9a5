"""The `run` command: every step end to end in one process."""

from __future__ import annotations

import argparse

from pipelines.cli.common import command, config_flags, engine_arg, load, source_args


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = command(sub, "run", _run, help="all steps end to end in one process")
    source_args(run)
    run.add_argument(
        "--run-id", help="run directory name (default: run-<UTC time to the µs>-<random>)"
    )
    config_flags(run, "synthetic.preset", "train.epochs", "features.as_of")
    engine_arg(run)
    config_flags(run, "gate.force_promote", "gate.dry_run")
    run.add_argument(
        "--no-resume", action="store_true",
        help="re-running a run id: ignore its training checkpoints (they are used only when "
        "made from the same features and config anyway)",
    )  # fmt: skip


def _run(args) -> int:
    """validate -> features -> train (warm start from production) -> index -> evaluate -> gate ->
    promote, the same functions the Airflow DAG calls. Without --source the synthetic preset is
    generated under <artifact-root>/landing.
    """
    from pipelines.artifacts import ArtifactRoot
    from pipelines.errors import DataValidationError, PromotionConflict
    from pipelines.steps.pipeline import new_run_id, run_pipeline

    cfg = load(args, data={"source": str(args.source) if args.source else None})
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
    layout = ArtifactRoot(cfg.data.artifact_root).run_layout(run_id)  # a URL root: local copy
    print(layout.report.read_text())
    print(layout.gate_md.read_text())
    print(usage_table(summary.usage))
    print(
        f"run {run_id}: {summary.decision}; production bundle: {summary.production_bundle}"
        f" (champion was {summary.champion})"
    )
    rejected = not summary.promoted and not cfg.gate.dry_run  # the gate kept production
    return 1 if rejected else 0


def usage_table(usage: dict[str, dict]) -> str:
    """Each step's wall time and peak memory (`RunSummary.usage`) as a Markdown table."""
    lines = [
        "| step | seconds | peak GiB (process) | peak GiB (with child processes) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step, used in usage.items():
        lines.append(
            f"| {step} | {used['seconds']:.1f} | {used['peak_rss_gib']:.2f} "
            f"| {used['peak_tree_gib']:.2f} |"
        )
    return "\n".join(lines)
