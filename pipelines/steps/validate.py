"""Validate: read the source once, check it, and keep what passed as the run's snapshot."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.contract import RawSnapshot
from pipelines.errors import ConfigError, DataValidationError
from pipelines.layout import RunLayout

log = logging.getLogger(__name__)


def validate_raw(
    cfg: PipelineConfig,
    layout: RunLayout,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
) -> dict:
    """Take the run's validated snapshot (`take_snapshot`).

    Returns:
        `success`, `report_dir`, `failed` (rules), `html` (report), `snapshot_dir`.

    Raises:
        DataValidationError: a rule failed (the report is attached and written to disk).
    """
    report = take_snapshot(cfg, layout, interval=interval, now=now)
    return {
        "success": report.success,
        "report_dir": str(layout.raw_report),
        "failed": [f.rule for f in report.failures],
        "html": report.html_path,
        "snapshot_dir": str(layout.snapshot),
    }


def take_snapshot(
    cfg: PipelineConfig,
    layout: RunLayout,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
):
    """Read `data.source` once, run the raw checks on what was read, keep it as the snapshot.

    What passed the checks is exactly what the feature job, training and serving state read:
    rows written to the source afterwards (or a retry re-reading it) never reach them.

    Args:
        interval: the data interval [start, end) timestamps must fall in (else any).
        now: judge "in the future" against this moment instead of the clock.
        report_dir: where the report goes (default `layout.raw_report`).

    Returns:
        The `ValidationReport` (also written to the report directory).

    Raises:
        DataValidationError: a rule failed (report attached); no snapshot is kept.
        SourceError: the source cannot be read at all.
        ConfigError: `data.source` is not set.
    """
    from data_checks.raw import validate_snapshot
    from pipelines.features.snapshot import write_snapshot
    from pipelines.sources import read_source

    source = _source(cfg)
    report_dir = report_dir or layout.raw_report
    shutil.rmtree(layout.snapshot, ignore_errors=True)
    snapshot = read_source(source, cfg.data.format, sample_rows=cfg.checks.sample_rows)
    report = validate_snapshot(
        snapshot, cfg.checks, interval=interval, now=now, report_dir=report_dir
    )
    if not report.success:
        raise DataValidationError(report.summary(), report=report)
    write_snapshot(snapshot, layout.snapshot, validation={
        "success": True, "source": source, "now": report.now, "interval": report.interval,
        "rows": report.rows, "report_dir": str(report_dir),
    })  # fmt: skip
    log.info(
        "validated snapshot of %s: %d interactions in %s", source, report.rows, layout.snapshot
    )
    return report


def validated_snapshot(cfg: PipelineConfig, layout: RunLayout) -> RawSnapshot:
    """The run's validated snapshot of `data.source`, taken now (`take_snapshot`) when the run
    has none or has one of another source; its files' hashes are checked on every read.

    Raises:
        DataValidationError: the source failed the raw checks, or a snapshot file changed
            since it was validated.
    """
    import json

    from pipelines.features.snapshot import META, read_snapshot

    source = _source(cfg)
    meta = layout.snapshot / META
    if meta.is_file():
        taken_from = (json.loads(meta.read_text()).get("validation") or {}).get("source")
        if taken_from == source:
            return read_snapshot(layout.snapshot, require_validated=True)
        log.info("the run's snapshot is of %s, not %s: taking a new one", taken_from, source)
    else:
        log.info("no validated snapshot in %s: reading and checking %s now", layout.run_dir, source)
    take_snapshot(cfg, layout)
    return read_snapshot(layout.snapshot, require_validated=True)


def _source(cfg: PipelineConfig) -> str:
    if cfg.data.source is None:
        raise ConfigError("data.source is not set: give the source directory to read")
    return str(cfg.data.source)
