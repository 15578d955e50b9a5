"""Raw-data checks: Great Expectations suites, defined in code, run in an ephemeral context.

`validate_source` reads a source in bounded batches and evaluates the suites as it goes (the
row-level rules per batch, the whole-table ones from aggregates: see `InteractionChecks`); the
`ValidationReport` it returns also carries the problems met while reading (bad bytes, malformed
lines, missing columns, untypeable values) and does not depend on the batch size. It never
writes to the source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.interaction_checks import InteractionChecks
from data_checks.raw_rules import build_rules, full_match
from data_checks.report import CheckResult, ValidationReport
from data_checks.suite import Rule, SuiteRunner, render_page, to_check_result
from pipelines.config import ChecksConfig
from pipelines.contract import RawSnapshot
from pipelines.schema import epoch_seconds
from pipelines.sources import scan_source
from pipelines.sources.scan import BATCH_ROWS, SourceScan

__all__ = ["build_rules", "full_match", "partition_volumes", "validate_scan", "validate_snapshot",
           "validate_source"]  # fmt: skip

log = logging.getLogger(__name__)


def validate_source(
    source: str | Path,
    fmt: str = "auto",
    checks: ChecksConfig | None = None,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ValidationReport:
    """Read a source batch by batch and validate it against the data contract.

    Args:
        source: the source directory.
        fmt: source format or "auto".
        checks: thresholds (default `ChecksConfig()`).
        interval: optional data interval [start, end) every timestamp must fall in.
        now: the moment "in the future" is judged against (default: the wall clock).
        report_dir: where to write the HTML/JSON reports (not written when None).
        batch_rows: interactions checked at once (the report does not depend on it).

    Returns:
        The `ValidationReport`; `report.success` tells whether the data may be used.

    Raises:
        SourceError: the source cannot be read at all (missing, unknown format).
    """
    checks = checks or ChecksConfig()
    scan = scan_source(source, fmt, sample_rows=checks.sample_rows)
    return validate_scan(
        scan, checks, interval=interval, now=now, report_dir=report_dir, batch_rows=batch_rows
    )


def validate_snapshot(
    snapshot: RawSnapshot,
    checks: ChecksConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ValidationReport:
    """Validate an already-read snapshot (see `validate_source`)."""
    return validate_scan(
        SourceScan.of_snapshot(snapshot), checks, interval=interval, now=now,
        report_dir=report_dir, batch_rows=batch_rows,
    )  # fmt: skip


def validate_scan(
    scan: SourceScan,
    checks: ChecksConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
) -> ValidationReport:
    """Validate a source in one pass over its interactions, `batch_rows` at a time.

    Row-level rules run in Great Expectations on each batch and are added up; the whole-table
    rules come from small aggregates (row count, key hashes for duplicates, rows per
    partition); items, users and partitions are checked whole. The report is the same
    whatever `batch_rows` is.

    Args:
        on_batch: called with every batch of typed interactions before it is checked (the
            snapshot writer).

    Returns:
        The `ValidationReport` (written to `report_dir` when given).
    """
    now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC")
    rules = build_rules(scan, checks, interval=interval, now=now)
    runner = SuiteRunner(rules, suite_prefix="raw", sample_rows=checks.sample_rows)
    item_ids = None if scan.items is None else pd.Index(scan.items["item_id"]).unique()
    stream = InteractionChecks(
        scan, rules, runner, checks.sample_rows,
        lambda batch: interaction_check_frame(batch, item_ids, partitioned=scan.is_partitioned),
    )  # fmt: skip
    for batch in scan.batches(batch_rows):
        if on_batch is not None:
            on_batch(batch)
        stream.add(batch)
    results = [
        CheckResult(
            table=i.table, file=i.file, column=i.column, rule=i.rule, check="read",
            success=False, failed=i.count, samples=i.samples,
        )
        for i in scan.issues
    ]  # fmt: skip
    checked = stream.results()  # may read the source again to quote duplicate rows
    pages = {"interactions": stream.page()} if report_dir is not None else {}
    frames = table_frames(scan, checks)
    locate = _table_locator(scan, frames)
    for table, frame in frames.items():
        found, result = runner.run(table, frame)
        checked.update(
            {i: to_check_result(rules[i], res, len(frame), locate) for i, res in found.items()}
        )
        if report_dir is not None:
            pages[table] = render_page(result)
    results.extend(checked[i] for i in range(len(rules)))
    report = ValidationReport(
        source=scan.root,
        format=scan.format,
        interval=(interval[0].isoformat(), interval[1].isoformat()) if interval else None,
        now=now.isoformat(),
        rows=stream.rows,
        results=results,
    )
    if report_dir is not None:
        report.write(report_dir, pages)
    log.info("validation of %s: %s", scan.root, "passed" if report.success else "FAILED")
    return report


def interaction_check_frame(
    batch: pd.DataFrame, item_ids: pd.Index | None, *, partitioned: bool
) -> pd.DataFrame:
    """The frame the interaction rules run on: contract columns plus `timestamp_epoch_s`,
    `partition_offset_s` (partitioned sources) and `item_known` (when there is an items table).

    Args:
        batch: typed interactions (`RawSnapshot.interactions` columns).
        item_ids: the items table's distinct ids, or None.
    """
    epoch = _epoch_seconds(batch["timestamp"])
    frame = pd.DataFrame(
        {
            "user_id": batch["user_id"],
            "item_id": batch["item_id"],
            "timestamp": batch["timestamp"],
            "event": batch["event"],
            "weight": batch["weight"],
            "timestamp_epoch_s": epoch,
        }
    )
    if partitioned:
        frame["partition_offset_s"] = epoch - _day_starts(batch["dt"])
    if item_ids is not None:
        frame["item_known"] = item_ids.get_indexer(batch["item_id"]) >= 0
    return frame


def table_frames(scan: SourceScan, checks: ChecksConfig) -> dict[str, pd.DataFrame]:
    """The small tables checked whole: "partitions" (`partition_volumes`; complete once the
    interactions were read), "items" and "users" when present."""
    frames = {}
    if scan.is_partitioned:
        frames["partitions"] = partition_volumes(scan.partitions, checks)
    if scan.items is not None:
        frames["items"] = scan.items[["item_id", "title", "genres"]]
    if scan.users is not None:
        frames["users"] = scan.users[["user_id"]]
    return frames


def partition_volumes(partitions: pd.DataFrame, checks: ChecksConfig) -> pd.DataFrame:
    """Rows per partition against the median of the previous `volume_history_partitions`.

    Returns:
        `dt, rows, trailing_median, volume_ratio` sorted by date; the ratio is NaN for empty
        partitions (their own rule catches them) and before `volume_min_history` partitions.
    """
    out = partitions.sort_values("dt", kind="stable").reset_index(drop=True)[["dt", "rows"]].copy()
    history = out["rows"].astype(float).where(out["rows"] > 0)
    median = (
        history.shift(1)
        .rolling(checks.volume_history_partitions, min_periods=checks.volume_min_history)
        .median()
    )
    out["trailing_median"] = median
    out["volume_ratio"] = (out["rows"] / median).where(out["rows"] > 0)
    return out


def _table_locator(scan: SourceScan, frames: dict[str, pd.DataFrame]):
    """Names the file and describes the failing rows of a partitions/items/users rule."""

    def locate(rule: Rule, index: list, failed: bool) -> tuple[str, tuple[str, ...]]:
        samples = tuple(_describe_row(scan, frames, rule, i) for i in index) if failed else ()
        if rule.table == "partitions":
            return str(Path(scan.root) / "interactions"), samples
        return _table_file(scan, rule.table), samples

    return locate


def _describe_row(scan: SourceScan, frames, rule: Rule, index) -> str:
    if rule.table == "partitions":
        row = frames["partitions"].loc[index]
        median = row["trailing_median"]
        median_text = f", trailing median {median:,.0f}" if pd.notna(median) else ""
        return f"dt={row['dt']}: {int(row['rows']):,} rows{median_text}"
    table = scan.items if rule.table == "items" else scan.users
    row = table.loc[index]
    label = "row" if _table_file(scan, rule.table).endswith(".parquet") else "line"
    return f"{label} {row['source_row']}: {rule.column}={row[rule.column]!r}"


def _table_file(scan: SourceScan, table: str) -> str:
    return scan.table_files.get(table, str(Path(scan.root) / table))


def _day_starts(days: pd.Series) -> np.ndarray:
    """Epoch seconds `[n]` of each row's `dt` day at 00:00 UTC, parsed once per distinct day."""
    if isinstance(days.dtype, pd.CategoricalDtype):
        starts = _epoch_seconds(pd.Series(pd.to_datetime(days.cat.categories, utc=True)))
        codes = days.cat.codes.to_numpy()
        return np.where(codes >= 0, starts[codes] if len(starts) else np.nan, np.nan)
    return _epoch_seconds(pd.to_datetime(days, utc=True))


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Epoch seconds as floats `[n]` (NaN for NaT), for the range rules."""
    return epoch_seconds(ts, missing=None).to_numpy(np.float64, na_value=np.nan)
