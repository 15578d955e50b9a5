"""Point-in-time features with Apache Beam: snapshot -> examples, eval queries, catalog, vocabularies.

`take_snapshot` reads a source once, runs the raw checks on what it read and keeps it as the
run's immutable snapshot. `run_features` is the step the CLI and the DAG call: it reads that
snapshot (taking it first when the run has none), picks the window and the split (eval design,
validation users: `split.py`), runs the Beam job (or the single-process reference) and checks
the output.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from pipelines.config import PipelineConfig
from pipelines.contract import RawSnapshot
from pipelines.errors import ConfigError, DataValidationError
from pipelines.features.window import FeatureWindow, resolve_window
from pipelines.schema import epoch_seconds, utc_timestamp

log = logging.getLogger(__name__)
ENGINES = ("beam", "local")
SNAPSHOT = "snapshot"  # <run>/snapshot: the validated input every later step reads
RAW_REPORT = "raw_report"


@dataclasses.dataclass
class FeatureRun:
    """What one feature run produced."""

    run_dir: str
    raw_dir: str
    features_dir: str
    window: FeatureWindow
    manifest: dict
    report: object  # data_checks.report.ValidationReport, or None when not checked here


def run_features(
    source: str | Path,
    run_dir: str | Path,
    cfg: PipelineConfig,
    *,
    window_start: pd.Timestamp | None = None,
    eval_start: pd.Timestamp | None = None,
    window_end: pd.Timestamp | None = None,
    beam_args: list[str] | None = None,
    engine: str = "beam",
    check: bool = True,
) -> FeatureRun:
    """Snapshot a source into `<run_dir>/raw`, build features into `<run_dir>/features`, check them.

    Args:
        source: source directory (format from `cfg.data.format`).
        run_dir: the run's directory (created).
        cfg: the pipeline config (`features`, `beam`, `data` sections are used).
        window_start, eval_start, window_end: explicit window boundaries (else from config/data).
        beam_args: extra Beam flags (`--runner`, Dataflow/Flink/Spark options), passed untouched.
        engine: "beam" (the job) or "local" (the single-process reference, same outputs).
        check: run the feature checks here (the DAG runs them as a task of their own).

    Returns:
        A `FeatureRun`.

    Raises:
        DataValidationError: the feature checks failed (report attached; nothing downstream
            should use these features).
    """
    from data_checks.features import validate_features
    from pipelines.features.snapshot import write_snapshot
    from pipelines.features.split import plan_split

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    run_dir = Path(run_dir)
    snapshot = _validated_snapshot(source, run_dir, cfg)
    if cfg.features.as_of is not None:
        snapshot = _as_of(snapshot, cfg.features.as_of)
    raw_dir = write_snapshot(snapshot, run_dir / "raw")
    timestamps = epoch_seconds(snapshot.interactions["timestamp"]).to_numpy()
    window = resolve_window(
        timestamps, cfg.features,
        window_start=window_start, eval_start=eval_start, window_end=window_end,
    )  # fmt: skip
    # Decided here, on the whole snapshot, and handed to the job as data (per-user cuts).
    plan = plan_split(
        snapshot.interactions["user_id"].astype(str).to_numpy(), timestamps, window, cfg.features
    )
    window = plan.window
    log.info("feature window %s", window.describe())
    log.info("eval design %s: %s", plan.design, plan.summary["reason"])
    out = str(run_dir / "features")
    if engine == "beam":
        from pipelines.features.beam_job import run_beam

        manifest = run_beam(str(raw_dir), out, window, cfg.features, beam_args, cfg.beam, plan)
    else:
        from pipelines.features.local import run_local

        manifest = run_local(str(raw_dir), out, window, cfg.features, plan)
    report = None
    if check:
        report = validate_features(out, cfg.features, report_dir=run_dir / "features_report")
    result = FeatureRun(str(run_dir), str(raw_dir), out, window, manifest, report)
    if report is not None and not report.success:
        raise DataValidationError(report.summary(), report=report)
    return result


def take_snapshot(
    source: str | Path,
    run_dir: str | Path,
    cfg: PipelineConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
):
    """Read `source` once, run the raw checks on what was read, and keep it as `<run_dir>/snapshot`.

    What passed the checks is exactly what the feature job, training and serving state read:
    rows written to the source afterwards (or a retry re-reading it) never reach them.

    Returns:
        The `ValidationReport` (also written to `<run_dir>/raw_report`).

    Raises:
        DataValidationError: a rule failed (report attached); no snapshot is kept.
        SourceError: the source cannot be read at all.
    """
    import shutil

    from data_checks.raw import validate_snapshot
    from pipelines.features.snapshot import write_snapshot
    from pipelines.sources import read_source

    run_dir = Path(run_dir)
    out = run_dir / SNAPSHOT
    shutil.rmtree(out, ignore_errors=True)
    snapshot = read_source(source, cfg.data.format, sample_rows=cfg.checks.sample_rows)
    report = validate_snapshot(
        snapshot, cfg.checks, interval=interval, now=now, report_dir=run_dir / RAW_REPORT
    )
    if not report.success:
        raise DataValidationError(report.summary(), report=report)
    write_snapshot(snapshot, out, validation={
        "success": True, "source": str(source), "now": report.now, "interval": report.interval,
        "rows": report.rows, "report_dir": str(run_dir / RAW_REPORT),
    })  # fmt: skip
    log.info("validated snapshot of %s: %d interactions in %s", source, report.rows, out)
    return report


def _validated_snapshot(source: str | Path, run_dir: Path, cfg: PipelineConfig) -> RawSnapshot:
    """The run's validated snapshot of `source` (taken now if the run has none or it is of
    another source); its files' hashes are checked on every read."""
    from pipelines.features.snapshot import META, read_snapshot

    meta = run_dir / SNAPSHOT / META
    if meta.is_file():
        import json

        taken_from = (json.loads(meta.read_text()).get("validation") or {}).get("source")
        if taken_from == str(source):
            return read_snapshot(run_dir / SNAPSHOT, require_validated=True)
        log.info("the run's snapshot is of %s, not %s: taking a new one", taken_from, source)
    else:
        log.info("no validated snapshot in %s: reading and checking %s now", run_dir, source)
    take_snapshot(source, run_dir, cfg)
    return read_snapshot(run_dir / SNAPSHOT, require_validated=True)


def _as_of(snapshot: RawSnapshot, when) -> RawSnapshot:
    """The snapshot as it stood at `features.as_of` (point-in-time runs, e.g. backfills)."""
    when = utc_timestamp(when)
    past = snapshot.as_of(when)
    if past.interactions.empty:
        first = snapshot.interactions["timestamp"].min()
        raise ConfigError(
            f"features.as_of={when.isoformat()}: {snapshot.root} has no interactions before it "
            f"(its first is at {first.isoformat()})"
        )
    log.info(
        "as of %s: %d of %d interactions, %s items",
        when.isoformat(), len(past.interactions), len(snapshot.interactions),
        "no" if past.items is None else len(past.items),
    )  # fmt: skip
    return past
