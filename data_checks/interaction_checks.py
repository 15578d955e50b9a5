"""The interaction rules over a stream of batches, reported as if run on the whole table.

Row-level rules run in Great Expectations on every batch (`RuleTally` adds them up). The two
whole-table rules are judged from aggregates: the row count, and the duplicate count from key
hashes (`DuplicateCounter`); the rows quoted for duplicates are found by reading the source a
second time, only when that rule fails, up to the last quoted row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_checks.duplicates import DuplicateCounter, key_hashes
from data_checks.report import CheckResult
from data_checks.suite import Rule, SuiteRunner, raise_if_crashed, render_page
from data_checks.tally import RuleTally, file_of
from pipelines.sources.columns import empty_interactions
from pipelines.sources.scan import SourceScan

log = logging.getLogger(__name__)

ROW_COUNT = "expect_table_row_count_to_be_between"
UNIQUE_KEYS = "expect_compound_columns_to_be_unique"


class InteractionChecks:
    """Checks the interactions table batch by batch with the "interactions" rules.

    Args:
        scan: the source (its items table gives the known item ids; `blocks` is read again to
            quote duplicate rows).
        rules: every raw rule (the "interactions" ones are used; indexes are kept).
        runner: the GX suites.
        sample_rows: failing rows quoted per rule.
        check_frame: typed batch -> the frame the rules run on (derived columns added).
    """

    def __init__(self, scan: SourceScan, rules: list[Rule], runner: SuiteRunner, sample_rows: int,
                 check_frame):  # fmt: skip
        self.scan, self.runner, self.sample_rows = scan, runner, sample_rows
        self.check_frame = check_frame
        self.rules = {i: r for i, r in enumerate(rules) if r.table == "interactions"}
        kinds = {i: r.expectation.expectation_type for i, r in self.rules.items()}
        self.row_count_rules = [i for i, kind in kinds.items() if kind == ROW_COUNT]
        self.unique_rules = [i for i, kind in kinds.items() if kind == UNIQUE_KEYS]
        self.tallies = {
            i: RuleTally(r, sample_rows)
            for i, r in self.rules.items()
            if kinds[i] not in (ROW_COUNT, UNIQUE_KEYS)
        }
        self.counters = {
            i: DuplicateCounter(self.rules[i].expectation.column_list) for i in self.unique_rules
        }
        self.rows = 0
        self.batches = 0
        self.files: dict[str, None] = {}  # files with typed rows, in source order
        self._first = None  # the first batch's GX result, the base of the GX page
        self._checked: dict[int, CheckResult] = {}

    def add(self, batch: pd.DataFrame) -> None:
        """Check one batch of typed interactions (`RawSnapshot.interactions` columns)."""
        frame = self.check_frame(batch)
        found, result = self.runner.run("interactions", frame)
        if self._first is None:
            self._first = result

        def describe(label) -> tuple[str, str]:
            row = batch.loc[label]
            return str(row["source_file"]), describe_interaction(row)

        for i, tally in self.tallies.items():
            tally.add(found[i], describe)
        for i, counter in self.counters.items():
            raise_if_crashed(self.rules[i], found[i])
            counter.add(frame)
        self.rows += len(batch)
        self.batches += 1
        files = batch["source_file"]
        names = files.cat.categories if isinstance(files.dtype, pd.CategoricalDtype) else files
        self.files.update(dict.fromkeys(str(f) for f in pd.unique(np.asarray(names))))

    def results(self) -> dict[int, CheckResult]:
        """rule index -> `CheckResult` over every batch added (call once, after the last)."""
        if self.batches == 0:  # GX judges an empty table too (the row count rule fails)
            self.add(empty_interactions())
        label = self.files_label()
        checked = {i: tally.check_result(label) for i, tally in self.tallies.items()}
        for i in self.row_count_rules:
            checked[i] = self._row_count(self.rules[i], label)
        for i in self.unique_rules:
            checked[i] = self._duplicates(i, label)
        self._checked = checked
        return dict(checked)

    def files_label(self) -> str:
        """The file a rule names when no failing row says which."""
        files = list(self.files)
        if not files and "interactions" in self.scan.table_files:  # name the empty file itself
            files = [self.scan.table_files["interactions"]]
        if len(files) == 1:
            return files[0]
        return f"{len(files)} interaction files" if files else "(no interaction files)"

    def page(self) -> str:
        """The GX page of the interactions suite, its numbers those of the whole table."""
        result = self._first
        for res in result.results:
            i = int(res.expectation_config.meta["rule_index"])
            checked = self._checked[i]
            res.success = checked.success
            body = dict(res.result or {})
            if i in self.row_count_rules:
                body["observed_value"] = self.rows
            if "element_count" in body:
                tally = self.tallies.get(i)
                considered = tally.considered if tally else checked.total
                body.update(
                    element_count=checked.total,
                    unexpected_count=checked.failed,
                    missing_count=checked.total - considered,
                    unexpected_percent=_percent(checked.failed, considered),
                    unexpected_percent_total=_percent(checked.failed, checked.total),
                    unexpected_percent_nonmissing=_percent(checked.failed, considered),
                    partial_unexpected_list=list(tally.values) if tally else [],
                )
                body.pop("partial_unexpected_index_list", None)  # labels of one batch only
                body.pop("partial_unexpected_counts", None)
            res.result = body
        passed = sum(r.success for r in result.results)
        result.success = passed == len(result.results)
        result.statistics.update(
            successful_expectations=passed,
            unsuccessful_expectations=len(result.results) - passed,
            success_percent=_percent(passed, len(result.results)),
        )
        return render_page(result)

    def _row_count(self, rule: Rule, label: str) -> CheckResult:
        low, high = rule.expectation.min_value, rule.expectation.max_value
        success = (low is None or self.rows >= low) and (high is None or self.rows <= high)
        return CheckResult(
            table=rule.table, file=label, column=rule.column, rule=rule.rule, check=ROW_COUNT,
            success=success, failed=0 if success else 1, total=self.rows,
        )  # fmt: skip

    def _duplicates(self, i: int, label: str) -> CheckResult:
        """Every row of a duplicate group fails (as `DataFrame.duplicated(keep=False)`); the
        share is of all rows (typed rows always have an event, so none is all-missing)."""
        rule = self.rules[i]
        count, positions, hashes = self.counters[i].duplicates(self.sample_rows)
        mostly = float(rule.expectation.mostly)
        success = self.rows == 0 or (self.rows - count) / self.rows >= mostly
        found = [] if success else self._find_rows(positions, hashes, rule.expectation.column_list)
        return CheckResult(
            table=rule.table,
            file=label if success or not found else file_of([f for f, _ in found]),
            column=rule.column,
            rule=rule.rule,
            check=UNIQUE_KEYS,
            success=success,
            failed=count,
            total=self.rows,
            samples=tuple(text for _, text in found),
        )

    def _find_rows(self, positions: np.ndarray, hashes: np.ndarray, columns: list[str]):
        """(file, description) of the rows at `positions` (table order), read again from the
        source; a row whose key no longer hashes the same (the source changed) is left out."""
        wanted = dict(zip(positions.tolist(), hashes.tolist(), strict=True))
        found: dict[int, tuple[str, str]] = {}
        last = max(wanted, default=-1)
        offset = 0
        for block in self.scan.blocks():
            end = offset + len(block)
            inside = [p for p in wanted if offset <= p < end]
            if inside:
                rows = block.iloc[[p - offset for p in inside]]
                for p, h, (_, row) in zip(
                    inside, key_hashes(rows, columns), rows.iterrows(), strict=True
                ):
                    if int(h) == wanted[p]:
                        found[p] = (str(row["source_file"]), describe_interaction(row))
            offset = end
            if offset > last:
                break
        if len(found) < len(wanted):
            log.warning("%s changed while it was validated: %d duplicate rows not quoted",
                        self.scan.root, len(wanted) - len(found))  # fmt: skip
        return [found[p] for p in sorted(found)]


def describe_interaction(row: pd.Series) -> str:
    """One typed interaction as a report quotes it: file, row/line, every contract value."""
    path = str(row["source_file"])
    label = "row" if path.endswith(".parquet") else "line"
    return (
        f"{Path(path).name} {label} {row['source_row']}: user_id={_id_text(row['user_id'])} "
        f"item_id={_id_text(row['item_id'])} timestamp={_ts_text(row['timestamp'])} "
        f"event={row['event']!r} weight={row['weight']:g}"
    )


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _id_text(value) -> str:
    return "null" if pd.isna(value) else repr(value)


def _ts_text(ts) -> str:
    return "NaT" if pd.isna(ts) else pd.Timestamp(ts).isoformat()
