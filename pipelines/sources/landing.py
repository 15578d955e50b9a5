"""Landing one day of interactions into a contract source (`land_partition`).

A partition `<source>/interactions/dt=YYYY-MM-DD/` appears whole or not at all: its files are
copied into a hidden directory of the source (`.landing-*`, which no reader opens), flushed to
disk, then renamed into place in one step, so a run validating the source meanwhile sees the
day complete or not yet. A landed partition is never replaced: landing the same files again is
a no-op, different files are refused (remove the partition by hand to correct one).

The checks here are the cheap ones a person wants before anything moves (file type, the
contract's required columns in the header, at least one row); the raw-data suite of the run
checks the rows themselves.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.contract import INTERACTION_REQUIRED, PARTITION_PATTERN
from pipelines.errors import SourceError
from pipelines.formats.files import fsync_local
from pipelines.sources import detect_format
from pipelines.sources.normalize import canonical_names

DATA_SUFFIXES = (".parquet", ".csv")
TMP_PREFIX = ".landing-"


@dataclasses.dataclass(frozen=True)
class Landed:
    """A landed partition.

    Attributes:
        partition: its day, `YYYY-MM-DD`.
        path: the partition directory in the source.
        files: its data files' names.
        rows: data rows (Parquet metadata; CSV lines after the header).
        already: the same files were already landed (nothing copied).
    """

    partition: str
    path: Path
    files: tuple[str, ...]
    rows: int
    already: bool


def land_partition(source: str | Path, path: str | Path, day: str | None = None) -> Landed:
    """Copy one day's interaction files into `<source>/interactions/dt=<day>/`, atomically.

    Args:
        source: a contract source directory (existing; `interactions/` is created if absent).
        path: a `*.parquet` / `*.csv` file, or a directory of them (e.g. `.../dt=2026-01-10/`).
        day: `YYYY-MM-DD`; default: from `path`'s or its parent directory's `dt=` name.

    Raises:
        SourceError: what is wrong, before anything is written: no such file, not Parquet/CSV,
            a required column missing, no rows, no or an invalid day, a source that is not a
            partitioned contract source, or a different partition already landed for the day.
    """
    source, path = Path(source), Path(path)
    day = _day(path, day)
    files = _data_files(path)
    rows = sum(_check_file(f) for f in files)
    if rows == 0:
        raise SourceError(f"{path}: no rows to land (an empty day is not landed)")
    interactions = _partitioned_source(source)
    target = interactions / f"dt={day}"
    names = tuple(f.name for f in files)
    if _same_partition(target, files):
        return Landed(day, target, names, rows, already=True)
    if target.is_dir() and _listing(target):
        raise _different(target)
    temporary = source / f"{TMP_PREFIX}{day}-{uuid.uuid4().hex[:8]}"
    staged = temporary / target.name
    try:
        staged.mkdir(parents=True)
        for file in files:
            shutil.copyfile(file, staged / file.name)
            fsync_local(staged / file.name)
        fsync_local(staged)
        interactions.mkdir(exist_ok=True)
        try:
            os.rename(staged, target)  # replaces nothing but an empty directory
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if _same_partition(target, files):  # a concurrent landing of the same files
                return Landed(day, target, names, rows, already=True)
            raise _different(target) from None
        fsync_local(interactions)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return Landed(day, target, names, rows, already=False)


def _different(target: Path) -> SourceError:
    return SourceError(
        f"{target} already holds different data ({', '.join(sorted(_listing(target)))}); "
        "a landed partition is never replaced: remove it by hand, then land again"
    )


def _day(path: Path, day: str | None) -> str:
    """The partition day: given, or from the `dt=` name of `path` or its parent."""
    named = next(
        (m.group(1) for p in (path, path.parent) if (m := PARTITION_PATTERN.match(p.name))), None
    )
    if day is None and named is None:
        raise SourceError(
            f"{path}: give the partition's day (--dt YYYY-MM-DD); it is not in a dt=YYYY-MM-DD "
            "directory"
        )
    if day is not None and named is not None and day != named:
        raise SourceError(f"{path} is in partition dt={named}, not the day given ({day})")
    day = day or named
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise SourceError(f"not a day: {day!r} (expected YYYY-MM-DD)") from None
    if not PARTITION_PATTERN.match(f"dt={day}"):
        raise SourceError(f"not a day: {day!r} (expected YYYY-MM-DD)")
    return day


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if not p.name.startswith(("_", ".")))
        if not files:
            raise SourceError(f"{path}: no files to land")
    else:
        raise SourceError(f"{path}: no such file or directory")
    for file in files:
        if file.suffix not in DATA_SUFFIXES or not file.is_file():
            raise SourceError(
                f"{file}: a partition holds only *.parquet or *.csv files (convert or remove it)"
            )
    return files


def _check_file(path: Path) -> int:
    """The file's data rows, after checking its header names the required columns."""
    try:
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            header, rows = parquet.schema_arrow.names, parquet.metadata.num_rows
        else:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                header = next(csv.reader(handle), [])
            rows = max(0, _count_lines(path) - 1)
    except UnicodeDecodeError:
        raise SourceError(f"{path}: the CSV header is not UTF-8") from None
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid is a ValueError
        raise SourceError(f"{path}: not a readable {path.suffix[1:]} file ({exc})") from None
    names, _ = canonical_names(header)
    missing = [c for c in INTERACTION_REQUIRED if c not in names]
    if missing:
        raise SourceError(
            f"{path}: missing required column(s) {', '.join(missing)} (has: {', '.join(names)})"
        )
    return rows


def _count_lines(path: Path) -> int:
    lines, last = 0, b""
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (1 if last not in (b"", b"\n") else 0)


def _partitioned_source(source: Path) -> Path:
    """`<source>/interactions`, after checking `source` is (or can become) a partitioned
    contract source."""
    if not source.is_dir():
        raise SourceError(f"source directory {source} does not exist (create it with its items)")
    try:
        fmt = detect_format(source)
    except SourceError:
        fmt = None  # no interactions yet: the first partition makes it a contract source
    interactions = source / "interactions"
    if fmt not in (None, "contract") or (fmt == "contract" and not interactions.is_dir()):
        what = f"a {fmt} source" if fmt != "contract" else "an unpartitioned contract source"
        raise SourceError(
            f"{source} is {what}; only a partitioned contract source "
            "(interactions/dt=YYYY-MM-DD/) takes landed partitions"
        )
    return interactions


def _same_partition(target: Path, files: list[Path]) -> bool:
    """True if `target` holds exactly these files, byte for byte."""
    if not target.is_dir() or sorted(_listing(target)) != sorted(f.name for f in files):
        return False
    return all(_sha256(target / f.name) == _sha256(f) for f in files)


def _listing(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if not p.name.startswith(("_", "."))]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
