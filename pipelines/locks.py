"""Exclusive file locks between processes on one machine (`flock`).

The kernel releases a `flock` when its holder dies, so a killed process never leaves a lock
behind. Object stores have no such lock: callers on fsspec URLs go without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import PipelineError


class LockHeld(PipelineError):
    """Another process holds the lock and the caller chose not to wait.

    Attributes:
        path: the lock file.
        holder: what the holder wrote into the lock file ("" if nothing).
    """

    def __init__(self, path: str | Path, holder: str):
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = str(path)
        self.holder = holder


@contextlib.contextmanager
def exclusive_lock(
    path: str | Path, holder: str | None = None, *, wait: bool = True
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with mode 0666 & ~umask if missing).

    Args:
        path: the lock file; its directory must exist.
        holder: written into the file while the lock is held (cleared on release), so that a
            caller refused with `wait=False` can say who is in the way; None writes nothing.
        wait: block until the lock is free; False raises `LockHeld` at once instead.

    Raises:
        LockHeld: `wait` is False and another process holds the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            raise LockHeld(path, text) from None
        if holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        try:
            yield
        finally:
            if holder is not None:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
