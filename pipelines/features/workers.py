"""Local Beam SDK worker processes that die with the process that started them.

On the DirectRunner in `multi_processing` mode, Beam starts every SDK worker as
`/bin/sh -c "<python> -m apache_beam.runners.worker.sdk_worker_main"` from a thread of the
process running the pipeline (the *launcher*). When the launcher is killed (SIGKILL, the OOM
killer) while a worker is still starting, nobody stops that worker: it waits up to 60 s for the
launcher's logging service, then up to 60 s for its control service, about two minutes in all.
No code of ours runs in the worker before those waits (not even a `--beam_plugins` module), so
the worker cannot watch its launcher itself, and `prctl(PR_SET_PDEATHSIG)` is out of reach too
(Beam's `Popen` takes no pre-exec hook, and the worker's parent is the shell, which outlives
the launcher).

So the launcher starts a small *guardian* process once (`guard_local_workers`):

- the launcher marks itself in its environment (`PIPELINES_BEAM_WORKER_OWNER=<pid>:<token>`),
  which Beam copies into every worker it starts;
- the guardian holds the read end of a pipe whose only write end is the launcher's. It blocks
  reading it; however the launcher ends, the kernel closes that end and the read returns;
- the guardian then SIGKILLs every process whose command line runs the SDK worker and whose
  environment carries the launcher's mark, scanning a few times over two seconds (a shell may
  be between fork and exec), and exits.

Nothing is asked of the dying launcher, so SIGKILL is covered; a launcher that ends normally has
already stopped its workers and the guardian finds nothing. Other runners and running modes are
left alone. The guardian runs in its own session (terminal signals do not reach it), holds no
pipe of the launcher's caller (stdout/stderr go to /dev/null) and imports only the standard
library and psutil.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

OWNER_ENV = "PIPELINES_BEAM_WORKER_OWNER"
SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
RESCANS_SECONDS = (0.0, 0.5, 1.0, 2.0)
_DIRECT_RUNNERS = frozenset(
    {"directrunner", "switchingdirectrunner", "testdirectrunner", "fnapirunner"}
)

log = logging.getLogger(__name__)

_lock = threading.Lock()
_guardian: subprocess.Popen | None = None
_guardian_owner: int | None = None  # the pid that started `_guardian` (a fork gets its own)


def applies(runner: str | None, running_mode: str | None) -> bool:
    """True for the DirectRunner (or the FnApiRunner) in multi_processing mode."""
    name = (runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    if not name.endswith("runner"):
        name += "runner"
    return name in _DIRECT_RUNNERS and running_mode == "multi_processing"


def guard_local_workers(runner: str | None, running_mode: str | None) -> bool:
    """Make sure the SDK worker processes this process starts die with it, even SIGKILLed.

    Starts the guardian on the first call (once per process) when the runner starts local
    worker processes; does nothing otherwise. Returns whether a guardian is running.
    """
    global _guardian, _guardian_owner
    if not applies(runner, running_mode):
        return False
    with _lock:
        pid = os.getpid()
        if _guardian_owner == pid and _guardian is not None and _guardian.poll() is None:
            return True
        marker = f"{pid}:{secrets.token_hex(8)}"
        try:
            guardian = subprocess.Popen(
                [sys.executable, "-I", "-c", _GUARDIAN_MAIN, os.path.abspath(__file__), marker],
                stdin=subprocess.PIPE,
                # no pipe of the launcher's caller is held open by the guardian
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("no guardian for the Beam SDK workers (%s): they may outlive a kill", exc)
            return False
        os.environ[OWNER_ENV] = marker  # copied into the workers' environment by Beam
        _guardian, _guardian_owner = guardian, pid
        return True


# The guardian's entry point: this file is run by path (`runpy`), not imported as part of the
# `pipelines` package, so the guardian starts fast and small.
_GUARDIAN_MAIN = "import runpy, sys; runpy.run_path(sys.argv[1])['guard'](sys.argv[2])"


def guard(marker: str) -> None:
    """The guardian: wait for the launcher to be gone (EOF on stdin), then kill its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    for delay in RESCANS_SECONDS:
        time.sleep(delay)
        kill_workers(marker)


def worker_processes(marker: str) -> list:
    """SDK worker processes (and their `sh -c` wrappers) started by the launcher `marker`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if not any(SDK_WORKER_MAIN in part for part in cmdline):
            continue
        try:
            if proc.environ().get(OWNER_ENV) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_workers(marker: str) -> int:
    """SIGKILL the launcher's SDK worker processes; returns how many were killed."""
    import psutil

    killed = 0
    for proc in worker_processes(marker):
        try:
            proc.kill()
            killed += 1
        except psutil.Error:
            pass
    return killed
