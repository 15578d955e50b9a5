"""Running rule sets with Great Expectations: one ephemeral context, one suite per table.

A `Rule` pairs a GX expectation with the words a person needs when it fails. `evaluate` runs
the rules on in-memory frames and turns GX results into `CheckResult`s; the caller supplies
how to name the file and describe the offending rows, since only it knows where rows came from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import pandas as pd

from data_checks.report import CheckResult


@dataclasses.dataclass(frozen=True)
class Rule:
    """A GX expectation plus the words a person needs when it fails."""

    table: str
    column: str | None
    rule: str
    expectation: object  # a great_expectations.expectations.Expectation


# (rule, row labels of failing rows, failed?) -> (file to name, sample descriptions)
Locator = Callable[[Rule, list, bool], tuple[str, tuple[str, ...]]]


class SuiteRunner:
    """Great Expectations set up once — an ephemeral context, one suite per table — and run on
    as many frames of a table as needed (every batch of a large table goes through the same
    suite).

    Args:
        rules: every rule; `Rule.table` picks the suite.
        suite_prefix: names the datasource and suites ("raw", "features").
        sample_rows: failing row indexes GX returns per expectation.
    """

    def __init__(self, rules: list[Rule], *, suite_prefix: str, sample_rows: int):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        datasource = context.data_sources.add_pandas(suite_prefix)
        self.sample_rows = sample_rows
        self._definitions = {}
        for table in dict.fromkeys(r.table for r in rules):
            batch = datasource.add_dataframe_asset(table).add_batch_definition_whole_dataframe(
                "all"
            )
            suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_prefix}_{table}"))
            for i, rule in enumerate(rules):
                if rule.table == table:
                    rule.expectation.meta = {
                        "rule": rule.rule,
                        "column": rule.column,
                        "rule_index": i,
                    }
                    suite.add_expectation(rule.expectation)
            self._definitions[table] = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{suite_prefix}_{table}", data=batch, suite=suite)
            )

    def run(self, table: str, frame: pd.DataFrame) -> tuple[dict[int, object], object]:
        """Run `table`'s suite on `frame`.

        Returns:
            (rule index -> GX `ExpectationValidationResult`, the suite's whole GX result).
        """
        result = self._definitions[table].run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": self.sample_rows,
            },
        )
        by_rule = {int(r.expectation_config.meta["rule_index"]): r for r in result.results}
        return by_rule, result


def evaluate(
    frames: dict[str, pd.DataFrame],
    rules: list[Rule],
    locate: Locator,
    *,
    suite_prefix: str,
    sample_rows: int,
    render: bool,
) -> tuple[list[CheckResult], dict[str, str]]:
    """Evaluate `rules` on `frames` (keyed by `Rule.table`).

    Returns:
        (one `CheckResult` per rule, in rule order; table -> rendered GX HTML page if `render`).

    Raises:
        RuntimeError: an expectation crashed inside GX (a bug, not bad data).
    """
    runner = SuiteRunner(rules, suite_prefix=suite_prefix, sample_rows=sample_rows)
    by_rule: dict[int, object] = {}
    pages: dict[str, str] = {}
    for table, frame in frames.items():
        if not any(r.table == table for r in rules):
            continue
        found, result = runner.run(table, frame)
        by_rule.update(found)
        if render:
            pages[table] = render_page(result)
    results = [
        to_check_result(rule, by_rule[i], len(frames[rule.table]), locate)
        for i, rule in enumerate(rules)
    ]
    return results, pages


def to_check_result(rule: Rule, res, rows: int, locate: Locator) -> CheckResult:
    """One GX result as a `CheckResult` (`rows`: the frame's length, when GX gives no count).

    Raises:
        RuntimeError: the expectation crashed inside GX.
    """
    raise_if_crashed(rule, res)
    result = res.result or {}
    failed = int(result.get("unexpected_count") or 0)
    if not res.success and "observed_value" in result:  # table-level rules (row counts)
        failed = max(failed, 1)
    index = failing_index(res)
    file, samples = locate(rule, index, not res.success)
    return CheckResult(
        table=rule.table,
        file=file,
        column=rule.column,
        rule=rule.rule,
        check=res.expectation_config.type,
        success=bool(res.success),
        failed=failed,
        total=int(result.get("element_count") or rows),
        samples=samples if not res.success else (),
    )


def raise_if_crashed(rule: Rule, res) -> None:
    """Raise when GX caught an exception in the expectation (a bug, not bad data)."""
    if res.exception_info and res.exception_info.get("raised_exception"):
        raise RuntimeError(
            f"expectation for rule {rule.rule!r} crashed: {res.exception_info.get('exception_message')}"
        )


def failing_index(res) -> list:
    """Row labels of the first failing rows GX returned (multi-column rules may give none)."""
    result = res.result or {}
    return [i for i in result.get("partial_unexpected_index_list") or [] if not isinstance(i, dict)]


def render_page(result) -> str:
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
