"""Fault injection for the reliability suite: `TTR_FAULT_KILL_AT=<point>` makes the process
SIGKILL itself when it reaches `<point>` (a comma-separated list kills at the first reached).

Points are named `<step>:<where>` (`train:before`, `registry:after-swap`, ...). Unset in
production, the check is one environment lookup. Tests use it to prove that a run killed
anywhere leaves production complete and that re-running the same run id recovers.
"""

from __future__ import annotations

import os
import signal

ENV = "TTR_FAULT_KILL_AT"


def kill_point(point: str, fd: int | None = None, partial: bytes = b"") -> None:
    """SIGKILL this process if `point` is named in `TTR_FAULT_KILL_AT`, after writing
    `partial` to `fd` when given (a torn write)."""
    wanted = os.environ.get(ENV)
    if wanted and point in wanted.split(","):
        if fd is not None:
            os.write(fd, partial)
        os.kill(os.getpid(), signal.SIGKILL)
