"""code_version(): the revision a bundle manifest records, inside and outside a git checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from pipelines.registry.version import GIT_SHA_ENV, code_version

ROOT = Path(__file__).resolve().parents[2]


def git_describe() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT / "pipelines" / "registry", capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def test_the_baked_git_sha_wins_over_the_checkout():
    sha = "3f9c2e1d0b7a4c5e6f8091a2b3c4d5e6f7a8b9c0"
    assert code_version({GIT_SHA_ENV: sha}) == sha
    assert code_version({GIT_SHA_ENV: f"  {sha}\n"}) == sha  # `$(git rev-parse HEAD)` newline
    assert code_version({GIT_SHA_ENV: "v1.2-3-g3f9c2e1-dirty"}) == "v1.2-3-g3f9c2e1-dirty"


def test_empty_or_malformed_sha_falls_back_to_git_describe():
    expected = git_describe()
    # Empty: the image built without --build-arg GIT_SHA (the Dockerfile's default).
    for value in ("", "   ", "$(rm -rf /)", "a b", "x" * 200):
        assert code_version({GIT_SHA_ENV: value}) == expected, repr(value)
    assert code_version({}) == expected


def test_outside_a_checkout_it_is_the_package_version_unless_baked(tmp_path):
    """As in the image: the module installed outside any git work tree."""
    module = tmp_path / "site" / "version_copy.py"
    module.parent.mkdir()
    shutil.copy(ROOT / "pipelines" / "registry" / "version.py", module)
    from importlib.metadata import version

    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import version_copy as v; "
        "print(json.dumps([v.code_version({}), v.code_version({'TTR_GIT_SHA': 'abc1234'})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(module.parent)],
        cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GIT_CEILING_DIRECTORIES": str(tmp_path)},
    ).stdout  # fmt: skip
    assert json.loads(out) == [version("two-tower-retrain"), "abc1234"]
