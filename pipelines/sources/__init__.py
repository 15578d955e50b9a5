"""Data sources: every supported format is read into one normalized `RawSnapshot`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pipelines.contract import RawSnapshot
from pipelines.errors import SourceError
from pipelines.sources.contract_files import read_contract, scan_contract
from pipelines.sources.movielens import read_ml1m, read_ml100k, read_ml_latest
from pipelines.sources.scan import SourceScan

log = logging.getLogger(__name__)

READERS: dict[str, Callable[..., RawSnapshot]] = {
    "contract": read_contract,
    "ml-100k": read_ml100k,
    "ml-1m": read_ml1m,
    "ml-latest": read_ml_latest,
}
# The file that identifies each format, checked in this order.
_MARKERS = (
    ("ml-100k", "u.data"),
    ("ml-1m", "ratings.dat"),
    ("ml-latest", "ratings.csv"),
    ("contract", "interactions"),
    ("contract", "interactions.parquet"),
    ("contract", "interactions.csv"),
)


def detect_format(root: str | Path) -> str:
    """Name the format of a source directory from the files it holds.

    Raises:
        SourceError: the directory is missing or matches no known format.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"source directory {root} does not exist")
    for fmt, marker in _MARKERS:
        if (root / marker).exists():
            return fmt
    looked_for = ", ".join(marker for _, marker in _MARKERS)
    raise SourceError(
        f"{root}: cannot detect the data format (looked for {looked_for}); "
        f"pass --format {{{'|'.join(READERS)}}}"
    )


def scan_source(root: str | Path, fmt: str = "auto", *, sample_rows: int = 5) -> SourceScan:
    """Open a source directory for reading its interactions in batches (`SourceScan.batches`).

    Contract sources are streamed file by file; the MovieLens formats (bounded downloads) are
    read whole and handed out in batches.

    Raises:
        SourceError: unknown format, missing directory, or no interactions at all.
    """
    root, fmt = _resolve(root, fmt)
    log.info("scanning %s as %s", root, fmt)
    if fmt == "contract":
        return scan_contract(root, sample_rows=sample_rows)
    return SourceScan.of_snapshot(READERS[fmt](root, sample_rows=sample_rows))


def read_source(root: str | Path, fmt: str = "auto", *, sample_rows: int = 5) -> RawSnapshot:
    """Read a source directory into the normalized raw snapshot.

    Args:
        root: the source directory.
        fmt: "auto" or one of `READERS`.
        sample_rows: offending rows quoted per read issue.

    Returns:
        The `RawSnapshot`; read problems are in `snapshot.issues`, never raised.

    Raises:
        SourceError: unknown format, missing directory, or no interactions at all.
    """
    root, fmt = _resolve(root, fmt)
    log.info("reading %s as %s", root, fmt)
    snapshot = READERS[fmt](root, sample_rows=sample_rows)
    log.info(
        "read %d interactions, %s items, %s users, %d read issues",
        len(snapshot.interactions),
        "no" if snapshot.items is None else len(snapshot.items),
        "no" if snapshot.users is None else len(snapshot.users),
        len(snapshot.issues),
    )
    return snapshot


def _resolve(root: str | Path, fmt: str) -> tuple[Path, str]:
    root = Path(root)
    if fmt == "auto":
        fmt = detect_format(root)
    elif not root.is_dir():
        raise SourceError(f"source directory {root} does not exist")
    if fmt not in READERS:
        raise SourceError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)} or 'auto'")
    return root, fmt
