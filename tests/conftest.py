"""Shared fixtures: every test builds its own data; nothing comes from the network."""

from __future__ import annotations

import collections
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """The `small` synthetic preset, generated once per session (read-only for tests)."""
    from pipelines.synthetic import generate

    out = tmp_path_factory.mktemp("small_world")
    generate(out, preset="small", seed=11)
    return out


class ContractSource:
    """Builds a tiny contract-layout source: `days` partitions, `rows_per_day` events each.

    Tests mutate `self.days_frames` / `self.items` / `self.users` before `write()`, or edit
    the written files, to craft one kind of bad input at a time.
    """

    def __init__(self, root: Path, *, days: int = 10, rows_per_day: int = 60, fmt: str = "csv"):
        self.root, self.fmt = root, fmt
        start = pd.Timestamp("2026-03-01", tz="UTC")
        self.items = pd.DataFrame(
            {
                "item_id": [f"it{i}" for i in range(30)],
                "title": [f"Title number {i}" for i in range(30)],
                "genres": ["Drama|Comedy" if i % 2 else "Action" for i in range(30)],
            }
        )
        self.users = pd.DataFrame(
            {"user_id": [f"us{u}" for u in range(12)], "country": ["DE", "US", "FR"] * 4}
        )
        self.days_frames: dict[str, pd.DataFrame] = {}
        for d in range(days):
            day = start + pd.Timedelta(days=d)
            n = rows_per_day
            self.days_frames[day.date().isoformat()] = pd.DataFrame(
                {
                    "user_id": [f"us{(d + k) % 12}" for k in range(n)],
                    "item_id": [f"it{(3 * k + d) % 30}" for k in range(n)],
                    "timestamp": [day + pd.Timedelta(minutes=20 * k + 1) for k in range(n)],
                    "event": ["click"] * n,
                    "weight": [1.0] * n,
                }
            )

    @property
    def last_day(self) -> str:
        return max(self.days_frames)

    def partition_file(self, day: str) -> Path:
        return self.root / "interactions" / f"dt={day}" / f"part-0.{self.fmt}"

    def write(self) -> Path:
        for day, frame in self.days_frames.items():
            path = self.partition_file(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(frame, path)
        self._write(self.items, self.root / f"items.{self.fmt}")
        self._write(self.users, self.root / f"users.{self.fmt}")
        return self.root

    def _write(self, frame: pd.DataFrame, path: Path) -> None:
        if self.fmt == "csv":
            out = frame.copy()
            for column in out.columns:
                if isinstance(out[column].dtype, pd.DatetimeTZDtype):
                    out[column] = out[column].map(lambda t: t.isoformat())
            out.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)


@pytest.fixture
def contract_source(tmp_path):
    """Factory for `ContractSource` under the test's own tmp dir."""

    def make(**kwargs) -> ContractSource:
        return ContractSource(tmp_path / "source", **kwargs)

    return make


@pytest.fixture(scope="session")
def small_features(small_world, tmp_path_factory):
    """Features of the small world built by the single-process engine (read-only for tests)."""
    from pipelines.config import load_config
    from pipelines.layout import RunLayout
    from pipelines.steps.features import run_features

    cfg = load_config(env={}, overrides={"data": {"source": str(small_world)}})
    return run_features(cfg, RunLayout(tmp_path_factory.mktemp("small_features")), engine="local")


# -- the reliability suite's tally (tests/reliability) -----------------------------------------
# Every case a reliability test tries is recorded with its outcome; the totals are printed at
# the end of the pytest run (and each test asserts its own outcome).
#
# Outcomes:
#     clear_error   refused with a clear message (right exit code, names what is wrong)
#     handled       a fault the system survived as promised (production complete, rollback works)
#     crash         a traceback or a wrong exit code where a clear error was due
#     silent_accept invalid data accepted without a word
#     data_lost     an input modified, or production left incomplete / unrecoverable

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


# Under pytest-xdist (`make test` runs two workers) each worker counts its own cases; the
# counts travel to the controller in `workeroutput` and are summed there.
def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["tally"] = json.dumps(
            {"counts": {s: dict(c) for s, c in _TALLY.counts.items()}, "failures": _TALLY.failures}
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    sent = json.loads(getattr(node, "workeroutput", {}).get("tally", "null") or "null")
    if sent:
        for suite, counts in sent["counts"].items():
            _TALLY.counts[suite].update(counts)
        _TALLY.failures.extend(sent["failures"])


# Tests of one module share its module-scoped fixtures, and the tests using the session's
# Airflow stack share that, so `make test` (two xdist workers) schedules each such group on one
# worker. xdist's own `--dist loadgroup` marks do nothing under pytest 9 (it rewrites
# `item._nodeid`, which pytest 9 no longer reads: groups were split and module fixtures and the
# stack were built on both workers), so the groups are named here, by node id, for the
# controller's scheduler.
STACK_MODULES = ("tests/dags/test_plugin.py", "tests/dags/test_trigger_form.py",
                 "tests/dags/test_ui_approval.py", "tests/dags/test_ui_run.py")  # fmt: skip
STACK_TESTS = ("tests/dags/test_dag_run.py::test_in_a_deployment_the_dag_processor_posts_resolved",)


def test_group(nodeid: str) -> str:
    """The scheduling group of a test: "airflow_stack" or its module."""
    module = nodeid.split("::", 1)[0]
    if module in STACK_MODULES or nodeid.split("[", 1)[0] in STACK_TESTS:
        return "airflow_stack"
    return module


def pytest_collection_modifyitems(config, items):
    """A test that uses the stack outside its group would start a second stack: refuse it."""
    for item in items:
        if "airflow_stack" in item.fixturenames and test_group(item.nodeid) != "airflow_stack":
            raise pytest.UsageError(
                f"{item.nodeid} uses airflow_stack: add it to STACK_TESTS in tests/conftest.py"
            )


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

    return GroupScheduling(config, log)


def pytest_terminal_summary(terminalreporter):
    if _TALLY.counts:
        terminalreporter.section("reliability suite")
        for line in _TALLY.lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory) -> Path:
    """A tiny hand-built served directory (`tests/tiny_served.py`; read-only: copy it to
    change anything)."""
    from tiny_served import build_served_dir

    return build_served_dir(tmp_path_factory.mktemp("served") / "model")


@pytest.fixture(scope="session")
def airflow_stack(small_world, tmp_path_factory):
    """One real Airflow deployment in the production shape (PostgreSQL metadata DB, Redis
    broker, CeleryExecutor with two workers, scheduler, DAG processor, triggerer, API server)
    shared by the UI and REST tests of a session (`tests/dags/airflow_support.AirflowStack`):
    starting one costs about a minute. PostgreSQL and Redis are Debian's (`scripts/services.sh
    install`; make test runs it). Only tests under tests/dags use it, and they put
    airflow_support on the path."""
    import shutil

    from airflow_support import AirflowStack

    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("Debian's chromium and chromium-driver are required (make test installs them)")
    stack = AirflowStack(tmp_path_factory.mktemp("airflow-stack"), small_world)
    try:
        yield stack
    finally:
        stack.close()
