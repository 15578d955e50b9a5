"""Raw-data checks: Great Expectations suites, defined in code, run in an ephemeral context.

`validate_source` reads a source, evaluates the suites on the normalized snapshot and returns a
`ValidationReport` that also carries the problems met while reading (bad bytes, malformed
lines, missing columns, untypeable values). It never writes to the source.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.report import CheckResult, ValidationReport
from data_checks.suite import Rule, evaluate
from pipelines.config import ChecksConfig
from pipelines.contract import RawSnapshot
from pipelines.schema import DAY_SECONDS, epoch_seconds
from pipelines.sources import read_source

log = logging.getLogger(__name__)


def validate_source(
    source: str | Path,
    fmt: str = "auto",
    checks: ChecksConfig | None = None,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
) -> ValidationReport:
    """Read a source and validate it against the data contract.

    Args:
        source: the source directory.
        fmt: source format or "auto".
        checks: thresholds (default `ChecksConfig()`).
        interval: optional data interval [start, end) every timestamp must fall in.
        now: the moment "in the future" is judged against (default: the wall clock).
        report_dir: where to write the HTML/JSON reports (not written when None).

    Returns:
        The `ValidationReport`; `report.success` tells whether the data may be used.

    Raises:
        SourceError: the source cannot be read at all (missing, unknown format).
    """
    checks = checks or ChecksConfig()
    snapshot = read_source(source, fmt, sample_rows=checks.sample_rows)
    return validate_snapshot(snapshot, checks, interval=interval, now=now, report_dir=report_dir)


def validate_snapshot(
    snapshot: RawSnapshot,
    checks: ChecksConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    now: pd.Timestamp | None = None,
    report_dir: str | Path | None = None,
) -> ValidationReport:
    """Validate an already-read snapshot (see `validate_source`)."""
    now = (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC")
    results = [
        CheckResult(
            table=i.table,
            file=i.file,
            column=i.column,
            rule=i.rule,
            check="read",
            success=False,
            failed=i.count,
            samples=i.samples,
        )
        for i in snapshot.issues
    ]
    frames = build_check_frames(snapshot, checks, interval=interval)
    rules = build_rules(snapshot, checks, frames, interval=interval, now=now)
    checked, pages = evaluate(
        frames, rules, _locator(snapshot, frames), suite_prefix="raw",
        sample_rows=checks.sample_rows, render=report_dir is not None,
    )  # fmt: skip
    results.extend(checked)
    report = ValidationReport(
        source=snapshot.root,
        format=snapshot.format,
        interval=(interval[0].isoformat(), interval[1].isoformat()) if interval else None,
        now=now.isoformat(),
        rows=len(snapshot.interactions),
        results=results,
    )
    if report_dir is not None:
        report.write(report_dir, pages)
    log.info("validation of %s: %s", snapshot.root, "passed" if report.success else "FAILED")
    return report


def build_check_frames(
    snapshot: RawSnapshot,
    checks: ChecksConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> dict[str, pd.DataFrame]:
    """The tables the expectations run on, with derived columns the rules need.

    Returns:
        "interactions" (contract columns + `timestamp_epoch_s`, `partition_offset_s`,
        `item_known`), "partitions" (`dt`, `rows`, `trailing_median`, `volume_ratio`), and
        "items" / "users" when present.
    """
    inter = snapshot.interactions
    epoch = _epoch_seconds(inter["timestamp"])
    frame = pd.DataFrame(
        {
            "user_id": inter["user_id"],
            "item_id": inter["item_id"],
            "timestamp": inter["timestamp"],
            "event": inter["event"],
            "weight": inter["weight"],
            "timestamp_epoch_s": epoch,
        }
    )
    if snapshot.is_partitioned:
        day_start = _epoch_seconds(pd.to_datetime(inter["dt"], utc=True))
        frame["partition_offset_s"] = epoch - day_start
    if snapshot.items is not None:
        frame["item_known"] = inter["item_id"].isin(snapshot.items["item_id"]).to_numpy()
    frames = {"interactions": frame}
    if snapshot.is_partitioned:
        frames["partitions"] = partition_volumes(snapshot.partitions, checks)
    if snapshot.items is not None:
        frames["items"] = snapshot.items[["item_id", "title", "genres"]]
    if snapshot.users is not None:
        frames["users"] = snapshot.users[["user_id"]]
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


def build_rules(
    snapshot: RawSnapshot,
    checks: ChecksConfig,
    frames: dict[str, pd.DataFrame],
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None,
    now: pd.Timestamp,
) -> list[Rule]:
    """The raw-data suite: one `Rule` per expectation, thresholds from `checks`."""
    import great_expectations.expectations as gxe

    rules: list[Rule] = [
        Rule(
            "interactions",
            None,
            "the interactions table must not be empty",
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ),
    ]
    for column in ("user_id", "item_id", "timestamp"):
        rules.append(
            Rule(
                "interactions",
                column,
                f"{column} must not be null",
                gxe.ExpectColumnValuesToNotBeNull(column=column),
            )
        )
    id_regex = full_match(checks.id_pattern)
    for column in ("user_id", "item_id"):
        rules.append(
            Rule(
                "interactions",
                column,
                f"ids must match {checks.id_pattern} (whole value: no spaces or line breaks)",
                gxe.ExpectColumnValuesToMatchRegex(column=column, regex=id_regex),
            )
        )
    earliest = pd.Timestamp(checks.min_timestamp, tz="UTC")
    rules.append(
        Rule(
            "interactions",
            "timestamp",
            f"timestamps must not be implausibly old (before {earliest.date().isoformat()}, "
            "checks.min_timestamp)",
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp_epoch_s", min_value=float(earliest.timestamp())
            ),
        )
    )
    latest = now + pd.Timedelta(seconds=checks.max_future_skew_seconds)
    rules.append(
        Rule(
            "interactions",
            "timestamp",
            f"timestamps must not be in the future (after {latest.isoformat()})",
            gxe.ExpectColumnValuesToBeBetween(
                column="timestamp_epoch_s", max_value=float(latest.timestamp())
            ),
        )
    )
    if interval is not None:
        start, end = interval
        rules.append(
            Rule(
                "interactions",
                "timestamp",
                f"timestamps must fall inside the data interval [{start.isoformat()}, {end.isoformat()})",
                gxe.ExpectColumnValuesToBeBetween(
                    column="timestamp_epoch_s",
                    min_value=float(start.timestamp()),
                    max_value=float(end.timestamp()),
                    strict_max=True,
                ),
            )
        )
    if "partition_offset_s" in frames["interactions"]:
        rules.append(
            Rule(
                "interactions",
                "timestamp",
                "timestamps must fall on their dt=YYYY-MM-DD partition's day (UTC)",
                gxe.ExpectColumnValuesToBeBetween(
                    column="partition_offset_s",
                    min_value=0.0,
                    max_value=float(DAY_SECONDS),
                    strict_max=True,
                ),
            )
        )
    rules.append(
        Rule(
            "interactions",
            "user_id, item_id, timestamp, event",
            f"duplicate events (same user, item, timestamp, event) must stay under "
            f"{checks.max_duplicate_rate:.2%} of rows",
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=["user_id", "item_id", "timestamp", "event"],
                mostly=1.0 - checks.max_duplicate_rate,
            ),
        )
    )
    if "item_known" in frames["interactions"]:
        rules.append(
            Rule(
                "interactions",
                "item_id",
                f"item ids must exist in the items table (unknown share under {checks.max_unknown_item_rate:.2%})",
                gxe.ExpectColumnValuesToBeInSet(
                    column="item_known", value_set=[True], mostly=1.0 - checks.max_unknown_item_rate
                ),
            )
        )
    low, high = snapshot.weight_range or (checks.weight_min, checks.weight_max)
    rules.append(
        Rule(
            "interactions",
            "weight",
            f"weights (ratings) must be within [{low:g}, {high:g}]",
            gxe.ExpectColumnValuesToBeBetween(column="weight", min_value=low, max_value=high),
        )
    )
    if "partitions" in frames:
        rules.append(
            Rule(
                "partitions",
                None,
                "every dt= partition must hold at least one row",
                gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1),
            )
        )
        rules.append(
            Rule(
                "partitions",
                None,
                f"partition volume must be within [{checks.volume_min_ratio:g}, {checks.volume_max_ratio:g}] "
                f"x the median of the previous {checks.volume_history_partitions} partitions",
                gxe.ExpectColumnValuesToBeBetween(
                    column="volume_ratio",
                    min_value=checks.volume_min_ratio,
                    max_value=checks.volume_max_ratio,
                ),
            )
        )
    if "items" in frames:
        rules.append(
            Rule(
                "items",
                None,
                "the items table must not be empty (every item id is checked against it)",
                gxe.ExpectTableRowCountToBeBetween(min_value=1),
            )
        )
        rules.append(
            Rule(
                "items",
                "item_id",
                "item_id must not be null",
                gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            )
        )
        rules.append(
            Rule(
                "items",
                "item_id",
                "item_id must be unique in the items table",
                gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            )
        )
        rules.append(
            Rule(
                "items",
                "item_id",
                f"ids must match {checks.id_pattern} (whole value: no spaces or line breaks)",
                gxe.ExpectColumnValuesToMatchRegex(column="item_id", regex=id_regex),
            )
        )
    if "users" in frames:
        rules.append(
            Rule(
                "users",
                "user_id",
                "user_id must not be null",
                gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            )
        )
        rules.append(
            Rule(
                "users",
                "user_id",
                "user_id must be unique in the users table",
                gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            )
        )
        rules.append(
            Rule(
                "users",
                "user_id",
                f"ids must match {checks.id_pattern} (whole value: no spaces or line breaks)",
                gxe.ExpectColumnValuesToMatchRegex(column="user_id", regex=id_regex),
            )
        )
    return rules


def full_match(pattern: str) -> str:
    """`pattern` anchored to the whole value.

    GX tests regexes with `re.search`-like matching, and `$` also matches before a trailing
    newline, so `^[a-z]+$` accepts "abc\\n" — an id that later breaks vocabularies.
    """
    return rf"\A(?:{pattern})\Z"


def _locator(snapshot: RawSnapshot, frames):
    """Names the file and describes the failing rows of a raw rule."""
    inter = snapshot.interactions
    files = list(inter["source_file"].cat.categories) if len(inter) else []
    if not files and "interactions" in snapshot.table_files:  # name the empty file itself
        files = [snapshot.table_files["interactions"]]

    def locate(rule: Rule, index: list, failed: bool) -> tuple[str, tuple[str, ...]]:
        samples = tuple(_describe_row(snapshot, frames, rule, i) for i in index) if failed else ()
        if rule.table == "interactions":
            file = _file_of(inter, index) if (index and failed) else _files_label(files)
        elif rule.table == "partitions":
            file = str(Path(snapshot.root) / "interactions")
        else:
            file = _table_file(snapshot, rule.table)
        return file, samples

    return locate


def _describe_row(snapshot: RawSnapshot, frames, rule: Rule, index) -> str:
    if rule.table == "partitions":
        row = frames["partitions"].loc[index]
        median = row["trailing_median"]
        median_text = f", trailing median {median:,.0f}" if pd.notna(median) else ""
        return f"dt={row['dt']}: {int(row['rows']):,} rows{median_text}"
    if rule.table == "interactions":
        row = snapshot.interactions.loc[index]
        path = str(row["source_file"])
        label = "row" if path.endswith(".parquet") else "line"
        return (
            f"{Path(path).name} {label} {row['source_row']}: user_id={_id_text(row['user_id'])} "
            f"item_id={_id_text(row['item_id'])} timestamp={_ts_text(row['timestamp'])} "
            f"event={row['event']!r} weight={row['weight']:g}"
        )
    table = snapshot.items if rule.table == "items" else snapshot.users
    row = table.loc[index]
    label = "row" if _table_file(snapshot, rule.table).endswith(".parquet") else "line"
    return f"{label} {row['source_row']}: {rule.column}={row[rule.column]!r}"


def _file_of(inter: pd.DataFrame, index: list) -> str:
    names = inter.loc[index, "source_file"].astype(str).unique()
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more files)"


def _files_label(files) -> str:
    files = list(files)
    if len(files) == 1:
        return str(files[0])
    return f"{len(files)} interaction files" if files else "(no interaction files)"


def _table_file(snapshot: RawSnapshot, table: str) -> str:
    return snapshot.table_files.get(table, str(Path(snapshot.root) / table))


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Epoch seconds as floats `[n]` (NaN for NaT), for the range rules."""
    return epoch_seconds(ts, missing=None).to_numpy(np.float64, na_value=np.nan)


def _id_text(value) -> str:
    return "null" if pd.isna(value) else repr(value)


def _ts_text(ts) -> str:
    return "NaT" if pd.isna(ts) else pd.Timestamp(ts).isoformat()
