"""Raw-data checks: good data passes; each kind of bad input fails naming file, column and rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import tree_digest

from data_checks.raw import partition_volumes, validate_source
from pipelines.config import ChecksConfig

NOW = pd.Timestamp("2026-03-20", tz="UTC")


def validate(root, **kwargs):
    kwargs.setdefault("now", NOW)
    return validate_source(root, **kwargs)


def only_failure(report, rule_fragment: str):
    """The single failed check whose rule mentions `rule_fragment` (asserting it is the one)."""
    matches = [r for r in report.failures if rule_fragment in r.rule]
    assert matches, (
        f"no failure about {rule_fragment!r}; failures: {[r.rule for r in report.failures]}"
    )
    return matches[0]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_clean_source_passes_every_check(contract_source, tmp_path, fmt):
    root = contract_source(fmt=fmt).write()
    report = validate(root, report_dir=tmp_path / "report")
    assert report.success, report.summary()
    assert report.rows == 600
    assert len(report.results) >= 15
    assert (tmp_path / "report" / "index.html").is_file()
    gx_page = (tmp_path / "report" / "gx_interactions.html").read_text()
    assert "Expectation Validation Result" in gx_page and "values must never be null" in gx_page
    saved = json.loads((tmp_path / "report" / "validation.json").read_text())
    assert saved["success"] is True and saved["rows"] == 600


def test_missing_column_names_file_and_column(contract_source):
    src = contract_source()
    day = src.last_day
    src.days_frames[day] = src.days_frames[day].drop(columns=["timestamp"])
    report = validate(src.write())
    failure = only_failure(report, "required column 'timestamp' is missing")
    assert failure.file == str(src.partition_file(day))
    assert failure.column == "timestamp"
    assert failure.failed == 60


def test_wrong_type_reports_line_and_value(contract_source):
    src = contract_source()
    day = src.last_day
    frame = src.days_frames[day].astype({"timestamp": object, "weight": object})
    frame.loc[4, "timestamp"] = "yesterday"
    frame.loc[7, "weight"] = "heavy"
    src.days_frames[day] = frame
    report = validate(src.write())
    ts = only_failure(report, "timestamps must be datetimes")
    assert ts.file == str(src.partition_file(day)) and ts.column == "timestamp" and ts.failed == 1
    assert ts.samples == ("line 6: 'yesterday'",)  # header is line 1, row 4 is line 6
    weight = only_failure(report, "weights must be numbers")
    assert weight.column == "weight" and weight.samples == ("line 9: 'heavy'",)


def test_wrong_parquet_type_for_ids(contract_source):
    src = contract_source(fmt="parquet")
    day = src.last_day
    frame = src.days_frames[day]
    frame["user_id"] = [0.5 + k for k in range(len(frame))]  # fractional ids are not ids
    report = validate(src.write())
    failure = only_failure(report, "ids must be strings or integers")
    assert failure.column == "user_id" and failure.failed == 60
    assert failure.samples[0] == "row 0: 0.5"


def test_null_ids(contract_source):
    src = contract_source()
    day = src.last_day
    src.days_frames[day].loc[[3, 9], "user_id"] = None
    report = validate(src.write())
    failure = only_failure(report, "user_id must not be null")
    assert failure.failed == 2 and failure.column == "user_id"
    assert failure.file == str(src.partition_file(day))
    assert failure.samples[0].startswith("part-0.csv line 5: user_id=")


def test_future_timestamps(contract_source):
    src = contract_source()
    report = validate(src.write(), now=pd.Timestamp(f"{src.last_day}T12:00:00", tz="UTC"))
    failure = only_failure(report, "must not be in the future")
    assert failure.column == "timestamp"
    # Events come every 20 min from 00:01; those after 12:05 (now + 5 min skew) are k = 37..59.
    assert failure.failed == 23
    assert failure.file == str(src.partition_file(src.last_day))


def test_timestamp_outside_its_partition_day(contract_source):
    src = contract_source()
    day = src.last_day
    src.days_frames[day].loc[0, "timestamp"] = pd.Timestamp("2026-02-01T10:00:00", tz="UTC")
    report = validate(src.write())
    failure = only_failure(report, "partition's day")
    assert failure.failed == 1 and failure.column == "timestamp"
    assert "2026-02-01T10:00:00" in failure.samples[0]


def test_timestamp_outside_explicit_interval(contract_source):
    src = contract_source()
    root = src.write()
    interval = (pd.Timestamp("2026-03-01", tz="UTC"), pd.Timestamp("2026-03-09", tz="UTC"))
    report = validate(root, interval=interval)
    failure = only_failure(report, "inside the data interval")
    assert failure.failed == 2 * 60  # the last two days fall after the interval end


def test_duplicate_events_over_threshold(contract_source):
    src = contract_source()
    day = src.last_day
    frame = src.days_frames[day]
    src.days_frames[day] = pd.concat([frame, frame.iloc[:6]], ignore_index=True)
    report = validate(src.write())
    failure = only_failure(report, "duplicate events")
    assert failure.column == "user_id, item_id, timestamp, event"
    assert failure.failed == 12  # both copies of each of the 6 duplicated events


def test_duplicates_under_threshold_pass(contract_source):
    src = contract_source()
    day = src.last_day
    frame = src.days_frames[day]
    src.days_frames[day] = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    report = validate(src.write(), checks=ChecksConfig(max_duplicate_rate=0.01))
    assert report.success, report.summary()


def test_empty_partition(contract_source):
    src = contract_source()
    src.days_frames[src.last_day] = src.days_frames[src.last_day].iloc[:0]
    report = validate(src.write())
    failure = only_failure(report, "must hold at least one row")
    assert failure.table == "partitions" and failure.failed == 1
    assert failure.samples == (f"dt={src.last_day}: 0 rows, trailing median 60",)


@pytest.mark.parametrize("factor, expected", [(10, "600 rows"), (0.1, "6 rows")])
def test_volume_spike_and_drop(contract_source, factor, expected):
    src = contract_source()
    day = src.last_day
    frame = src.days_frames[day]
    if factor > 1:
        copies = []
        for k in range(int(factor)):
            shifted = frame.copy()
            shifted["timestamp"] = shifted["timestamp"] + pd.Timedelta(seconds=k)
            copies.append(shifted)
        src.days_frames[day] = pd.concat(copies, ignore_index=True)
    else:
        src.days_frames[day] = frame.iloc[: int(len(frame) * factor)]
    report = validate(src.write())
    failure = only_failure(report, "partition volume")
    assert failure.samples == (f"dt={day}: {expected}, trailing median 60",)


def test_unknown_items(contract_source):
    src = contract_source()
    day = src.last_day
    src.days_frames[day].loc[:4, "item_id"] = "ghost-item"
    report = validate(src.write())
    failure = only_failure(report, "must exist in the items table")
    assert failure.column == "item_id" and failure.failed == 5
    assert "item_id='ghost-item'" in failure.samples[0]


def test_malformed_csv_line(contract_source):
    src = contract_source()
    root = src.write()
    path = src.partition_file(src.last_day)
    lines = path.read_text().splitlines()
    lines[10] += ",extra,fields"
    path.write_text("\n".join(lines) + "\n")
    report = validate(root)
    failure = only_failure(report, "fields")
    assert failure.file == str(path) and failure.failed == 1
    assert failure.samples[0].startswith("line 11: expected 5 fields, saw 7")


def test_non_utf8_text(contract_source):
    src = contract_source()
    root = src.write()
    path = root / "items.csv"
    data = path.read_bytes().replace(b"Title number 7", b"Caf\xe9 number 7")
    path.write_bytes(data)
    report = validate(root)
    failure = only_failure(report, "UTF-8")
    assert failure.file == str(path) and failure.table == "items"
    assert failure.samples == ("line 9: byte 0xe9 at column 8",)


def test_weight_out_of_range_for_movielens(tmp_path):
    root = tmp_path / "ml"
    root.mkdir()
    (root / "ratings.dat").write_text("1::10::5::978300760\n1::11::9::978300761\n")
    (root / "movies.dat").write_text(
        "10::Toy Story (1995)::Animation|Comedy\n11::Heat (1995)::Action\n"
    )
    report = validate(root)
    failure = only_failure(report, "weights (ratings) must be within [1, 5]")
    assert failure.failed == 1 and failure.samples[0].startswith("ratings.dat line 2:")


def test_every_failure_is_in_the_summary(contract_source, tmp_path):
    src = contract_source()
    day = src.last_day
    src.days_frames[day].loc[0, "user_id"] = None
    src.days_frames[day].loc[1, "item_id"] = "ghost"
    report = validate(src.write(), report_dir=tmp_path / "rep")
    text = report.summary()
    assert text.startswith("Raw data validation FAILED")
    for failure in report.failures:
        assert failure.rule in text and failure.file in text
    assert str(tmp_path / "rep" / "index.html") in text
    assert "FAIL" in (tmp_path / "rep" / "index.html").read_text()


def test_validation_never_modifies_the_input(contract_source, tmp_path):
    src = contract_source()
    src.days_frames[src.last_day].loc[0, "user_id"] = None
    root = src.write()
    before = tree_digest(root)
    report = validate(root, report_dir=tmp_path / "rep")
    assert not report.success
    assert tree_digest(root) == before


def test_partition_volumes_need_history():
    parts = pd.DataFrame(
        {
            "dt": [f"2026-01-0{d}" for d in range(1, 6)],
            "path": "x",
            "rows": [100, 100, 100, 0, 1000],
        }
    )
    vols = partition_volumes(parts, ChecksConfig(volume_min_history=3))
    assert vols["volume_ratio"].isna().tolist() == [True, True, True, True, False]
    assert vols["volume_ratio"].iloc[4] == pytest.approx(10.0)  # the empty day is not history


def test_generated_world_passes(small_world):
    report = validate_source(small_world)
    assert report.success, report.summary()
    assert report.rows > 90_000


# -- issue 13 regressions --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_id_ending_in_a_newline_fails_the_id_pattern(contract_source, fmt):
    src = contract_source(fmt=fmt)
    day = src.last_day
    src.days_frames[day].loc[3, "user_id"] = "us1\n"
    report = validate(src.write())
    failure = only_failure(report, "ids must match")
    assert failure.column == "user_id" and failure.failed == 1
    assert "user_id='us1\\n'" in failure.samples[0]


def test_id_pattern_is_a_full_match_whatever_its_anchor():
    import re

    from data_checks.raw import full_match

    for pattern in (r"^[a-z0-9]+$", r"[a-z0-9]+", ChecksConfig().id_pattern):
        assert re.search(full_match(pattern), "us1")
        assert not re.search(full_match(pattern), "us1\n")


def test_timestamps_from_1900_fail_the_plausibility_rule(contract_source):
    src = contract_source()
    src.days_frames[src.last_day].loc[2, "timestamp"] = pd.Timestamp("1900-01-01", tz="UTC")
    report = validate(src.write())
    failure = only_failure(report, "implausibly old")
    assert failure.column == "timestamp" and failure.failed == 1 and "1995-01-01" in failure.rule
    assert failure.samples[0].startswith("part-0.csv line 4:")


def test_min_timestamp_is_configurable(contract_source):
    root = contract_source().write()
    checks = ChecksConfig(min_timestamp="2026-03-05")
    report = validate(root, checks=checks)
    assert only_failure(report, "implausibly old").failed == 4 * 60


def test_empty_weight_fails_validation_instead_of_becoming_1(contract_source):
    src = contract_source()
    frame = src.days_frames[src.last_day].astype({"weight": object})
    frame.loc[5, "weight"] = None
    src.days_frames[src.last_day] = frame
    report = validate(src.write())
    failure = only_failure(report, "weights must not be empty")
    assert failure.column == "weight" and failure.samples == ("line 7: (empty)",)


def test_empty_items_table_fails(contract_source):
    src = contract_source()
    src.items = src.items.iloc[:0]
    report = validate(src.write())
    assert only_failure(report, "the items table must not be empty").file.endswith("items.csv")
