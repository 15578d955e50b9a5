"""Whole-file reads and atomic writes through Beam's FileSystems (local paths, gs://, s3://)."""

from __future__ import annotations

import json
import os


def join(base: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(base, *parts)


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` via a temporary name and a rename: readers never see a partial file."""
    from apache_beam.io.filesystems import FileSystems

    tmp = f"{path}.tmp"
    with FileSystems.create(tmp) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


def read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read()


def write_json(path: str, value) -> None:
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str):
    return json.loads(read_bytes(path))


def exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def makedirs(path: str) -> None:
    """Create a directory (a no-op on object stores, where directories are implicit)."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except OSError:
            pass  # created concurrently by another worker


def fsync_local(path: str | os.PathLike) -> None:
    """Flush a local file or directory to disk (a directory: its new entries and renames)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
