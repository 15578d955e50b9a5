"""The code version recorded in bundle manifests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """`git describe` of the checkout, or the package version outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("two-tower-retrain")
    except PackageNotFoundError:
        return "unknown"
