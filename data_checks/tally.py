"""Great Expectations results of one row-level rule over many batches, added up.

A row-level rule (not null, regex, range, in set) judges each row on its own, so a table's
result is the sum of its batches': failing rows add up, the samples are the first failing rows
in table order, and `mostly` is applied to the totals, never batch by batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from data_checks.report import CheckResult
from data_checks.suite import Rule, failing_index, raise_if_crashed

# (row label in the batch) -> (file the row is in, description of the row)
Describe = Callable[[object], tuple[str, str]]


@dataclasses.dataclass
class RuleTally:
    """One row-level rule's results over the batches of a table.

    Attributes:
        rule: the rule.
        sample_rows: failing rows kept (the first ones, in table order).
        elements: rows seen; considered: rows that were not missing (what `mostly` is a share
            of); failed: failing rows; batch_failed: some batch failed the rule on its own.
        samples: (file, description) of the first failing rows.
        values: the GX `partial_unexpected_list` entries of those rows (for the GX page).
        check: the GX expectation type.
    """

    rule: Rule
    sample_rows: int
    elements: int = 0
    considered: int = 0
    failed: int = 0
    batch_failed: bool = False
    samples: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    values: list = dataclasses.field(default_factory=list)
    check: str = ""

    def add(self, res, describe: Describe) -> None:
        """Add one batch's GX `ExpectationValidationResult`; `describe` names its failing rows.

        Raises:
            RuntimeError: the expectation crashed inside GX.
        """
        raise_if_crashed(self.rule, res)
        result = res.result or {}
        self.check = res.expectation_config.type
        elements = int(result.get("element_count") or 0)
        self.elements += elements
        self.considered += elements - int(result.get("missing_count") or 0)
        failed = int(result.get("unexpected_count") or 0)
        self.failed += failed
        self.batch_failed |= not res.success
        room = self.sample_rows - len(self.samples)
        if failed and room > 0:
            self.samples.extend(describe(i) for i in failing_index(res)[:room])
            self.values.extend((result.get("partial_unexpected_list") or [])[:room])

    @property
    def mostly(self) -> float:
        mostly = getattr(self.rule.expectation, "mostly", None)
        return 1.0 if mostly is None else float(mostly)

    @property
    def success(self) -> bool:
        """As GX judges the whole table: `mostly` of the non-missing rows pass (vacuous when
        none); with no `mostly`, every batch passed."""
        if self.mostly >= 1.0:
            return not self.batch_failed
        if self.considered == 0:
            return True
        return (self.considered - self.failed) / self.considered >= self.mostly

    def check_result(self, files_label: str) -> CheckResult:
        """The rule's `CheckResult` for the whole table.

        Args:
            files_label: the file to name when no failing row says which ("12 interaction
                files").
        """
        success = self.success
        samples = () if success else tuple(text for _, text in self.samples)
        file = files_label if success or not samples else file_of([f for f, _ in self.samples])
        return CheckResult(
            table=self.rule.table,
            file=file,
            column=self.rule.column,
            rule=self.rule.rule,
            check=self.check,
            success=success,
            failed=self.failed,
            total=self.elements,
            samples=samples,
        )


def file_of(files: list[str]) -> str:
    """The file of the sample rows: the first, with how many others there are."""
    names = list(dict.fromkeys(files))
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more files)"
