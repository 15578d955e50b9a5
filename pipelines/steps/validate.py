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
    rows written to the source afterwards (or a retry re-reading it) never reach them. The
    source is read in bounded batches: each batch is checked and written to the snapshot
    directory as it passes, so memory does not grow with the source; the snapshot is
    completed (snapshot.json) only when every rule held, and removed otherwise.

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
    from data_checks.raw import validate_scan
    from pipelines.features.snapshot import SnapshotWriter
    from pipelines.sources import scan_source

    source = _source(cfg)
    report_dir = report_dir or layout.raw_report
    shutil.rmtree(layout.snapshot, ignore_errors=True)
    scan = scan_source(source, cfg.data.format, sample_rows=cfg.checks.sample_rows)
    writer = SnapshotWriter(layout.snapshot)
    try:
        report = validate_scan(
            scan, cfg.checks, interval=interval, now=now, report_dir=report_dir,
            on_batch=writer.add,
        )  # fmt: skip
        if not report.success:
            raise DataValidationError(report.summary(), report=report)
        writer.finish(scan, validation={
            "success": True, "source": source, "now": report.now, "interval": report.interval,
            "rows": report.rows, "report_dir": str(report_dir),
        })  # fmt: skip
    except BaseException:
        shutil.rmtree(layout.snapshot, ignore_errors=True)  # never a half-written snapshot
        raise
    log.info(
        "validated snapshot of %s: %d interactions in %s", source, report.rows, layout.snapshot
    )
    return report


def validated_snapshot(cfg: PipelineConfig, layout: RunLayout) -> RawSnapshot:
    """The run's validated snapshot of `data.source` read into memory (`validated_snapshot_dir`).

    Raises:
        DataValidationError: the source failed the raw checks, or a snapshot file changed
            since it was validated.
    """
    from pipelines.features.snapshot import read_snapshot

    return read_snapshot(validated_snapshot_dir(cfg, layout), require_validated=True)


def validated_snapshot_dir(cfg: PipelineConfig, layout: RunLayout) -> Path:
    """The run's validated snapshot of `data.source`, taken now (`take_snapshot`) when the run
    has none or has one of another source; its files' hashes are checked on every use.

    Raises:
        DataValidationError: the source failed the raw checks, or a snapshot file changed
            since it was validated.
    """
    import json

    from pipelines.features.snapshot import META, verify_snapshot

    source = _source(cfg)
    meta = layout.snapshot / META
    if meta.is_file():
        taken_from = (json.loads(meta.read_text()).get("validation") or {}).get("source")
        if taken_from == source:
            verify_snapshot(layout.snapshot, require_validated=True)
            return layout.snapshot
        log.info("the run's snapshot is of %s, not %s: taking a new one", taken_from, source)
    else:
        log.info("no validated snapshot in %s: reading and checking %s now", layout.run_dir, source)
    take_snapshot(cfg, layout)
    verify_snapshot(layout.snapshot, require_validated=True)
    return layout.snapshot


def _source(cfg: PipelineConfig) -> str:
    if cfg.data.source is None:
        raise ConfigError("data.source is not set: give the source directory to read")
    return str(cfg.data.source)
