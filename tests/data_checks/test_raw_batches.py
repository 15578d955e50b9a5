"""Raw checks in batches: the report does not depend on the batch size.

The source is broken in several partitions at once (so in several batches): duplicates whose
copies sit in other files, unknown items, ids that break the pattern, weights out of range,
timestamps off their partition's day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_checks.duplicates import DuplicateCounter
from data_checks.raw import validate_source
from pipelines.config import ChecksConfig
from pipelines.sources import read_source

NOW = pd.Timestamp("2026-03-20", tz="UTC")
KEYS = ["user_id", "item_id", "timestamp", "event"]


def broken_source(contract_source, fmt: str):
    src = contract_source(fmt=fmt, days=6, rows_per_day=40)
    days = sorted(src.days_frames)
    first = src.days_frames[days[0]]
    # row 3 three times (twice in its own file, once in day 4's), row 5 twice (day 0, day 4)
    src.days_frames[days[0]] = pd.concat([first, first.iloc[[3]]], ignore_index=True)
    src.days_frames[days[4]] = pd.concat(
        [src.days_frames[days[4]], first.iloc[[3, 5]]], ignore_index=True
    )
    for day, row, item in ((days[1], 2, "ghost1"), (days[3], 39, "ghost2"), (days[5], 0, "bad id")):
        src.days_frames[day].loc[row, "item_id"] = item
    for day, row in ((days[2], 0), (days[5], 39)):
        src.days_frames[day].loc[row, "weight"] = -2.0
    return src.write(), days


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batches_give_the_report_of_one_batch(contract_source, tmp_path, fmt):
    root, days = broken_source(contract_source, fmt)
    strict = ChecksConfig(max_duplicate_rate=0.0, max_unknown_item_rate=0.0, sample_rows=4)
    # 3 unknown items in 243 rows: 1.2% passes as a whole, yet a batch of 7 holding one fails
    lenient = ChecksConfig(max_unknown_item_rate=0.05, max_duplicate_rate=0.05)
    for checks in (strict, lenient):
        whole = validate_source(root, checks=checks, now=NOW, batch_rows=1_000_000)
        batched = validate_source(root, checks=checks, now=NOW, batch_rows=31)  # 8 batches
        assert batched.to_dict() == whole.to_dict()
        assert batched.summary() == whole.summary()
    paged = validate_source(root, checks=strict, now=NOW, batch_rows=100, report_dir=tmp_path)
    assert "Expectation Validation Result" in (tmp_path / "gx_interactions.html").read_text()

    failed = {r.rule.split(" (")[0].split(" must")[0]: r for r in whole.failures}
    assert set(failed) == {"ids", "timestamps", "weights"}, list(failed)
    strict_report = paged
    dup = next(r for r in strict_report.failures if r.rule.startswith("duplicate events"))
    inter = read_source(root).interactions
    assert dup.failed == int(inter.duplicated(KEYS, keep=False).sum()) == 5
    label = "row" if fmt == "parquet" else "line"
    first_rows = [3, 5, 40] if fmt == "parquet" else [5, 7, 42]  # csv: header is line 1
    assert [s.split(":")[0] for s in dup.samples] == [
        *(f"part-0.{fmt} {label} {n}" for n in first_rows),
        f"part-0.{fmt} {label} {40 if fmt == 'parquet' else 42}",
    ]
    assert dup.file == f"{root}/interactions/dt={days[0]}/part-0.{fmt} (+1 more files)"
    unknown = next(r for r in strict_report.failures if r.rule.startswith("item ids must exist"))
    assert unknown.failed == 3 and unknown.total == len(inter) == 243
    assert unknown.file == f"{root}/interactions/dt={days[1]}/part-0.{fmt} (+2 more files)"


def test_duplicate_counter_matches_pandas_across_batches():
    """Missing values and categories that differ from batch to batch hash by value."""
    rng = np.random.default_rng(3)
    n = 500
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(rng.choice(["a", "b", None], n), dtype=object),
            "item_id": rng.choice(["x", "y"], n),
            "timestamp": pd.to_datetime(rng.integers(0, 4, n), unit="s", utc=True),
            "event": rng.choice(["click", "view"], n),
        }
    )
    expected = frame.duplicated(KEYS, keep=False).to_numpy()
    counter = DuplicateCounter(KEYS)
    for start in range(0, n, 37):
        batch = frame.iloc[start : start + 37].copy()
        batch["event"] = pd.Categorical(batch["event"])  # categories of this batch only
        counter.add(batch)
    count, positions, _ = counter.duplicates(first=6)
    assert count == int(expected.sum())
    assert positions.tolist() == np.flatnonzero(expected)[:6].tolist()
