"""The code version recorded in bundle manifests."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

# Set by the image build (docker/Dockerfile: `--build-arg GIT_SHA=$(git rev-parse HEAD)`): an
# image has no .git, so without it every bundle trained in a container would say "0.1.0".
GIT_SHA_ENV = "TTR_GIT_SHA"
_REVISION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,127}")


def code_version(env: Mapping[str, str] | None = None) -> str:
    """The revision of the code that is running, for bundle manifests.

    In order: `TTR_GIT_SHA` (baked into the image at build time; a value that is not a plain
    revision string such as `3f9c2e1` or `v1.2-3-g3f9c2e1-dirty` is ignored), `git describe`
    of the checkout, the installed package version, or "unknown".

    Args:
        env: environment to read `TTR_GIT_SHA` from (default `os.environ`).
    """
    baked = (os.environ if env is None else env).get(GIT_SHA_ENV, "").strip()
    if _REVISION.fullmatch(baked):
        return baked
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
