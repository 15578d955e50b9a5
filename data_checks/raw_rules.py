"""The raw-data suite: the contract's rules as Great Expectations expectations, in words.

Every rule names its thresholds (from `ChecksConfig`) so a failure explains itself; the order
here is the order of the report.
"""

from __future__ import annotations

import pandas as pd

from data_checks.suite import Rule
from pipelines.config import ChecksConfig
from pipelines.contract import RawSnapshot
from pipelines.schema import DAY_SECONDS
from pipelines.sources.scan import SourceScan


def build_rules(
    source: SourceScan | RawSnapshot,
    checks: ChecksConfig,
    *,
    interval: tuple[pd.Timestamp, pd.Timestamp] | None,
    now: pd.Timestamp,
) -> list[Rule]:
    """The raw-data suite: one `Rule` per expectation, thresholds from `checks`; which rules
    apply depends on the tables `source` has (partitions, items, users)."""
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
    if source.is_partitioned:
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
    if source.items is not None:
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
    low, high = source.weight_range or (checks.weight_min, checks.weight_max)
    rules.append(
        Rule(
            "interactions",
            "weight",
            f"weights (ratings) must be within [{low:g}, {high:g}]",
            gxe.ExpectColumnValuesToBeBetween(column="weight", min_value=low, max_value=high),
        )
    )
    if source.is_partitioned:
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
    if source.items is not None:
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
    if source.users is not None:
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
