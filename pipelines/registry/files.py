"""The registry's filesystem: fsspec for every backend, plus durability on local disks.

On a local disk new files are fsynced and renames are made durable by fsyncing their
directory, so that a machine crash cannot undo a swap that readers already saw. Object stores
write whole objects at once and need neither; they have no rename and no lock either, so the
registry replaces shared objects there with conditional writes (`pipelines.formats.store`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipelines.formats.files import fsync_local
from pipelines.formats.store import modified_time


class RegistryFiles:
    """An fsspec filesystem and whether it is the local disk.

    Attributes:
        fs: the filesystem every registry path is on.
        local: True on the local disk (atomic renames, fsync and flock are available).
    """

    def __init__(self, fs: AbstractFileSystem):
        self.fs = fs
        self.local = isinstance(fs, LocalFileSystem)

    def write_new_file(self, path: str, data: bytes) -> None:
        """A new local file, fsynced, mode 0666 & ~umask like the bundles' files.

        Raises:
            FileExistsError: `path` exists.
        """
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def listing(self, path: str) -> list[str]:
        """The entries of a directory, listed afresh (s3fs caches listings per process, and
        other processes write the registry too); [] if it does not exist."""
        try:
            return self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []

    @staticmethod
    def fsync_dir(path: str) -> None:
        """Make renames and new entries in a local directory durable."""
        fsync_local(path)

    def last_modified(self, path: str) -> float:
        """Newest modification time under `path` (a file or a directory tree), epoch seconds.

        Entries whose backend reports no time are skipped; with none at all, now.
        """
        if self.local:
            root = Path(path)
            return max(p.stat().st_mtime for p in [root, *root.rglob("*")])
        infos = [self.fs.info(path), *self.fs.find(path, withdirs=True, detail=True).values()]
        times = [t for t in map(modified_time, infos) if t is not None]
        return max(times, default=time.time())
