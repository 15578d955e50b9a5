"""The reliability suite's tally: every case a test tries is recorded with its outcome, and the
totals are printed at the end of the pytest run (and asserted by the tests themselves).

Outcomes:
    clear_error   refused with a clear message (right exit code, names what is wrong)
    handled       a fault the system survived as promised (production complete, rollback works)
    crash         a traceback or a wrong exit code where a clear error was due
    silent_accept invalid data accepted without a word
    data_lost     an input modified, or production left incomplete / unrecoverable
"""

from __future__ import annotations

import collections

import pytest

OUTCOMES = ("clear_error", "handled", "crash", "silent_accept", "data_lost")


class Tally:
    """Counts per suite and outcome; `record` returns the outcome so tests can assert on it."""

    def __init__(self):
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.failures: list[str] = []

    def record(self, suite: str, case: str, outcome: str, detail: str = "") -> str:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        self.counts[suite][outcome] += 1
        if outcome in ("crash", "silent_accept", "data_lost"):
            self.failures.append(f"{suite}/{case}: {outcome} {detail}".rstrip())
        return outcome

    def lines(self) -> list[str]:
        total: collections.Counter = collections.Counter()
        out = []
        for suite, counts in sorted(self.counts.items()):
            total.update(counts)
            out.append(_line(suite, counts))
        if len(self.counts) > 1:
            out.append(_line("total", total))
        return out + [f"  {f}" for f in self.failures]


def _line(name: str, counts: collections.Counter) -> str:
    tried = sum(counts.values())
    parts = ", ".join(f"{counts[o]} {o.replace('_', ' ')}" for o in OUTCOMES)
    return f"{name}: {tried} cases tried: {parts}"


_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return _TALLY


def pytest_terminal_summary(terminalreporter):
    if _TALLY.counts:
        terminalreporter.section("reliability suite")
        for line in _TALLY.lines():
            terminalreporter.write_line(line)
