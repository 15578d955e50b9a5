"""Features: the point-in-time feature job on the run's validated snapshot, and its checks."""

from __future__ import annotations

import dataclasses

import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.errors import DataValidationError
from pipelines.layout import RunLayout


def build_features(
    cfg: PipelineConfig,
    layout: RunLayout,
    engine: str = "beam",
    beam_args: list[str] | None = None,
    check: bool = True,
) -> dict:
    """`run_features` with the window from config and data.

    Returns:
        `features_dir` and the manifest's `counts`.
    """
    run = run_features(cfg, layout, engine=engine, beam_args=beam_args, check=check)
    return {"features_dir": run.features_dir, "counts": run.manifest["counts"]}


def run_features(
    cfg: PipelineConfig,
    layout: RunLayout,
    *,
    window_start: pd.Timestamp | None = None,
    eval_start: pd.Timestamp | None = None,
    window_end: pd.Timestamp | None = None,
    engine: str = "beam",
    beam_args: list[str] | None = None,
    check: bool = True,
):
    """Features of the run's validated snapshot (taken first when the run has none), checked.

    Args:
        window_start, eval_start, window_end: explicit window boundaries (else from config/data).
        engine: "beam" (the job) or "local" (the single-process reference, same outputs).
        beam_args: extra Beam flags (`--runner`, Dataflow/Flink/Spark options), passed untouched.
        check: run the feature checks here (the DAG runs them as a task of their own).

    Returns:
        The `pipelines.features.FeatureRun`, with the checks' report when `check`.

    Raises:
        DataValidationError: the raw checks failed, a snapshot file changed since it was
            validated, or the feature checks failed (report attached; nothing downstream
            should use these features).
    """
    from pipelines.features import features_from_snapshot
    from pipelines.steps.validate import validated_snapshot_dir

    run = features_from_snapshot(
        validated_snapshot_dir(cfg, layout), layout, cfg,
        window_start=window_start, eval_start=eval_start, window_end=window_end,
        beam_args=beam_args, engine=engine,
    )  # fmt: skip
    if check:
        run = dataclasses.replace(run, report=check_features(cfg, layout))
    return run


def check_features(cfg: PipelineConfig, layout: RunLayout):
    """Feature checks (leakage, split order, counts) on `layout.features`; the report goes to
    `layout.features_report`.

    Returns:
        The passing `ValidationReport`.

    Raises:
        DataValidationError: a check failed (report attached).
    """
    from data_checks.features import validate_features

    report = validate_features(
        str(layout.features), cfg.features, report_dir=layout.features_report
    )
    if not report.success:
        raise DataValidationError(report.summary(), report=report)
    return report
