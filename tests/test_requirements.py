"""The production requirement set (`requirements-prod.lock`, what the image installs): a subset
of the development lock with the same pins, closed under its own dependencies, without dev/test
tools, and enough on its own to import the whole stack and parse the DAG."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).parents[1]
DEV_TOOLS = ("pytest", "pytest-timeout", "pytest-xdist", "ruff", "selenium", "moto",
             "import-linter")  # fmt: skip


def pins(lock: Path) -> dict[str, str]:
    out = {}
    for line in lock.read_text().splitlines():
        name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip()).groups()
        out[canonicalize_name(name)] = version
    return out


PROD = pins(REPO / "requirements-prod.lock")
DEV = pins(REPO / "requirements.lock")


def test_prod_lock_is_the_dev_lock_minus_dev_tools():
    assert {n: v for n, v in PROD.items() if DEV.get(n) != v} == {}
    assert [t for t in DEV_TOOLS if canonicalize_name(t) in PROD] == []
    for needed in ("apache-airflow", "apache-airflow-providers-celery", "asyncpg",
                   "psycopg2-binary", "redis", "tensorflow", "apache-beam", "scann",
                   "great-expectations", "s3fs", "gcsfs"):  # fmt: skip
        assert canonicalize_name(needed) in PROD, needed


def _extras_wanted() -> dict[str, set[str]]:
    """Extras requested for a distribution by requirements-prod.in (e.g. airflow[postgres])."""
    wanted: dict[str, set[str]] = {}
    for line in (REPO / "requirements-prod.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            wanted.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    return wanted


def test_prod_lock_is_closed_under_its_dependencies():
    """Every requirement of every locked distribution (markers evaluated for this platform,
    extras followed where requested) is itself in the prod lock."""
    wanted = _extras_wanted()
    missing = set()
    todo = [(name, frozenset(extras)) for name, extras in wanted.items()]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        assert name in PROD, f"{name} is required but not in requirements-prod.lock"
        for spec in metadata.requires(name) or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = canonicalize_name(req.name)
            if dep not in PROD:
                missing.add(f"{name} -> {spec}")
            else:
                todo.append((dep, frozenset(req.extras)))
    assert missing == set()


BLOCKER = """
import importlib.abc, sys
from importlib import metadata
from packaging.utils import canonicalize_name
allowed = set(sys.argv[1].split(","))
owners = metadata.packages_distributions()
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        top = fullname.split(".", 1)[0]
        dists = {canonicalize_name(d) for d in owners.get(top, [])}
        if dists and not dists & allowed:
            raise ImportError(f"{fullname} comes from {sorted(dists)}, not in requirements-prod.lock")
        return None
sys.meta_path.insert(0, Block())
import airflow, tensorflow, tensorflow_recommenders, apache_beam, scann, great_expectations
import asyncpg, psycopg2, redis, s3fs, gcsfs
import airflow.providers.celery.executors.celery_executor
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[2])
assert not bag.import_errors, bag.import_errors
assert "two_tower_retrain" in bag.dags, sorted(bag.dags)
print("imported together")
"""


@pytest.mark.slow
def test_prod_set_alone_imports_the_stack_and_parses_the_dag(tmp_path):
    """Imports that would need a distribution outside the prod lock fail in this subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join([*PROD, "two-tower-retrain"]), str(REPO / "dags")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**__import__("os").environ, "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "imported together" in result.stdout
