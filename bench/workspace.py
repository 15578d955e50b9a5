"""The working directory of a synthetic-data bench: data and models, reused across runs."""

from __future__ import annotations

import tempfile
from pathlib import Path


def synthetic_workspace(work_dir: str | None, prefix: str, preset: str) -> tuple[Path, Path]:
    """(work directory, its synthetic landing): `work_dir` or a fresh temporary directory; the
    preset's world (seed 7) is generated there once and reused by later runs."""
    from pipelines.synthetic import generate

    work = Path(work_dir or tempfile.mkdtemp(prefix=prefix))
    landing = work / "landing"
    if not (landing / "items.parquet").exists():
        generate(landing, preset=preset, seed=7)
    return work, landing
