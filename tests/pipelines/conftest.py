"""Fixtures of the pipelines tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_served import build_served_dir


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory) -> Path:
    """The tiny served directory (read-only for tests: copy it to change anything)."""
    return build_served_dir(tmp_path_factory.mktemp("served") / "model")
