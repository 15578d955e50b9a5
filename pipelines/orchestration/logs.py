"""Library output in an Airflow task log at its true level, and without registration chatter.

Under Airflow 3's task SDK the supervisor reads the task process's file descriptor 2 and logs
every line of it at ERROR (logger `task.stderr`; fd 1 becomes INFO, `task.stdout`); Python
`logging` inside the task goes over a separate socket as JSON at the record's own level. What
reaches fd 2 is mostly not Python logging of the task itself: TensorFlow/XLA/absl C++ logs
(`2026-01-10 12:00:00.123456: I tensorflow/...`, `I0000 00:00:17... 123 file.cc:31] ...`), the
stderr of Beam's worker subprocesses (`INFO:apache_beam...:...`), warnings printed by them. So a
green run showed dozens of ERROR lines, and filtering the log by ERROR found nothing real.

`route_library_output()` (called by the DAG at the start of every task) points fd 2 of the task
process, and so of every subprocess it starts afterwards, at a pipe. A daemon thread reads the
pipe and re-emits each message through Python `logging` (logger `stderr`) at the level its own
prefix states; a line without a prefix is INFO (see `line_level`). A few "errors" TensorFlow
prints on every CPU-only host (`BENIGN`) are INFO with a note saying why. It also quiets the
Great Expectations import-time registration chatter (`quiet_chatter`). Everything before the
call still goes the old way, so the call comes before TensorFlow, Beam or GX are imported.

fd 1 stays with Airflow: it is INFO there already (`print`, Keras progress lines), which is its
true level often enough that re-reading it would add a thread and no signal.

Order: the thread logs a message about `_Router.QUIET` after it was written. A failing task's
reason is the task runner's "Task failed with exception" record (with the exception's message
and traceback); what the task's callbacks log after it sits in the "Post Execute" group, which
the UI shows collapsed, so that record is the last thing one sees. For library lines written
just before a failure to come before it rather than inside that group, call `drain()` before
raising: it returns once everything written to fd 2 so far is logged. At interpreter exit (the
task runner runs `atexit` handlers before it closes its log socket) fd 2 goes back to Airflow
and the pipe is drained, so no line is lost.

Nothing here imports Airflow, TensorFlow or Beam.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select  # poll: fd numbers of a busy task process may pass select()'s 1024
import sys
import threading

STDERR_LOGGER = "stderr"  # the logger re-emitted lines appear under in the task log

# glog / absl (C++ and Python absl): `I0000 00:00:1764114828.270107   12345 file.cc:31] ...`,
# `W1125 23:53:48.270107 140234 file.py:12] ...`
_GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+\s+[^\s\]]+:\d+\]")
# TensorFlow's own C++ logger: `2026-11-25 23:53:48.269817: I tensorflow/core/...cc:153] ...`
_TF = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?: ([IWEF]) [^\s\]]+:\d+\]")
# Python logging's default format, as Beam's worker subprocesses print: `WARNING:name:message`
_PY = re.compile(r"^(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL):[\w.<>-]*:")
# warnings.showwarning's format: `/path/file.py:12: DeprecationWarning: message`
_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
_TRACEBACK = "Traceback (most recent call last):"
# Written by logging.Handler.handleError: what follows must not be fed back into logging, whose
# next failure would write into the pipe again (a loop).
_LOGGING_ERROR = "--- Logging error ---"

_GLOG_LEVELS = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
_PY_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
    "FATAL": logging.CRITICAL,
}

_CPU_ONLY = "benign on a CPU-only host: TensorFlow looks for a GPU, finds none and uses the CPU"
BENIGN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"failed call to cuInit"), _CPU_ONLY),
    (re.compile(r"CUDA_ERROR_NO_DEVICE|no CUDA-capable device|[Nn]o CUDA GPUs"), _CPU_ONLY),
    (re.compile(r"Unable to register (?:cuDNN|cuFFT|cuBLAS) factory"), _CPU_ONLY),
    (
        re.compile(r"oneDNN supports DT_\w+ only on platforms with AVX-512"),
        "benign: TensorFlow runs its default (Eigen) kernels for tensors of that type instead",
    ),
)
"""(pattern, why) of messages libraries print at E level that need no action: logged at INFO
with `[INFO: <why>]` appended, so whoever searches for the original line sees the reason."""


def line_level(line: str) -> tuple[int | None, str | None]:
    """(level, note) of one line of library output; level None = the line states no level.

    The level is the one the line's own prefix states: glog/absl `I/W/E/F` + digits,
    TensorFlow's `<date> <time>: I file.cc:N]`, Python logging's `WARNING:name:`; a Python
    warning (`file.py:N: SomeWarning:`) is WARNING, a traceback head ERROR. A line in `BENIGN`
    is INFO and `note` says why.
    """
    level = None
    if match := _GLOG.match(line) or _TF.match(line):
        level = _GLOG_LEVELS[match.group(1)]
    elif match := _PY.match(line):
        level = _PY_LEVELS[match.group(1)]
    elif _WARNING.match(line):
        level = logging.WARNING
    elif line.startswith(_TRACEBACK):
        level = logging.ERROR
    if level is not None and level > logging.INFO:
        for pattern, why in BENIGN:
            if pattern.search(line):
                return logging.INFO, why
    return level, None


def quiet_chatter() -> None:
    """Great Expectations' import-time registration chatter off, its warnings kept.

    `great_expectations._docs_decorators` logs only INFO "Skipping registering function ..."
    (~200 lines per import): that logger goes to WARNING. The expectations registry also logs
    INFO "Multiple declarations of ... found." when modules re-register; a filter drops exactly
    those records and keeps the rest of that logger.
    """
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    registry = logging.getLogger("great_expectations.expectations.registry")
    if not any(isinstance(f, _DropRedeclarations) for f in registry.filters):
        registry.addFilter(_DropRedeclarations())


class _DropRedeclarations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno <= logging.INFO
            and str(record.msg).startswith("Multiple declarations of")
        )


class _Router:
    """fd `fd` -> a pipe -> a daemon thread logging each message at its level (one per process).

    A message is a line with a level plus the lines without one that follow it in the same read
    or start with whitespace: TensorFlow and Python write a multi-line message in one go (a
    second line "To enable the following instructions: ...", a "\\t [[{{node ...}}]]" trace, a
    traceback), so its detail lines keep its level. A line without a level that follows no
    such message is a message of its own (INFO). A message is logged when the next one starts
    or the pipe is quiet for `QUIET`. Separate writes read in one go cannot be told apart: a
    plain line printed right after a leveled message joins that message (same record, its
    level), which keeps it visible and next to what it most likely belongs to.
    """

    QUIET = 0.05  # seconds; the lines of one message are written microseconds apart

    def __init__(self, fd: int, logger: logging.Logger):
        self.fd, self.logger, self.pid = fd, logger, os.getpid()
        self.original = os.dup(fd)  # Airflow's stderr socket: restored at exit
        self.read_end, self.write_end = os.pipe()
        self.token = f"\x00drain:{os.getpid()}:{id(self)}:"
        self.drained: dict[int, threading.Event] = {}
        self.lock = threading.Lock()
        self.drains = 0
        self.pending: list[str] = []
        self.pending_leveled = False
        self.raw = False  # set for good once logging reports a failure of its own
        self.pending_level = logging.INFO
        self.pending_note: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"route-fd{fd}", daemon=True)

    def start(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        os.dup2(self.write_end, self.fd)
        self.thread.start()

    # ---- the reader thread ----
    def _run(self) -> None:
        partial = b""
        poll = select.poll()
        poll.register(self.read_end, select.POLLIN)
        while True:
            if not poll.poll(self.QUIET * 1000):
                self._emit()
                continue
            chunk = os.read(self.read_end, 65536)
            if not chunk:  # every writer closed
                if partial:
                    self._line(partial.decode("utf-8", "replace"), first=True)
                self._emit()
                return
            *lines, partial = (partial + chunk).split(b"\n")
            for i, raw in enumerate(lines):
                self._line(raw.decode("utf-8", "replace").rstrip("\r"), first=i == 0)

    def _line(self, line: str, *, first: bool) -> None:
        head, token, number = line.partition(self.token)
        if token:  # a drain mark, maybe after a line the process left unterminated
            if head:
                self._line(head, first=first)
            self._emit()
            with self.lock:
                event = self.drained.pop(int(number), None)
            if event:
                event.set()
            return
        if line.startswith(_LOGGING_ERROR):
            self.raw = True  # logging failed (its socket closed?): Airflow's own way from now on
        if self.raw:
            self._emit()
            _write_all(self.original, (line + "\n").encode())
            return
        level, note = line_level(line)
        continues = level is None and self.pending_leveled and (not first or line[:1].isspace())
        if continues:
            self.pending.append(line)
            return
        self._emit()
        if not line.strip():
            return
        self.pending = [line]
        self.pending_leveled = level is not None
        self.pending_level = logging.INFO if level is None else level
        self.pending_note = note

    def _emit(self) -> None:
        if not self.pending:
            return
        text = "\n".join(self.pending)
        self.pending = []
        if self.pending_note:
            text = f"{text} [INFO: {self.pending_note}]"
        try:
            self.logger.log(self.pending_level, text)
        except Exception:  # noqa: BLE001 - a line must not be lost, nor kill the reader
            _write_all(self.original, (text + "\n").encode())

    # ---- the task's threads ----
    def drain(self, timeout: float) -> bool:
        """True once everything written to the pipe before the call is logged.

        In a forked child (no reader thread of its own) it only flushes: the parent logs.
        """
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)
        if os.getpid() != self.pid:
            return True
        with self.lock:
            self.drains += 1
            number, event = self.drains, threading.Event()
            self.drained[number] = event
        _write_all(self.write_end, f"{self.token}{number}\n".encode())
        return event.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """fd back to Airflow, then drain what the pipe holds (an `atexit` handler)."""
        if os.getpid() != self.pid:  # a forked child: its output is the parent's to log
            return
        _flush(sys.stderr)
        os.dup2(self.original, self.fd)
        self.drain(timeout)


def _flush(stream) -> None:
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


_router: _Router | None = None
_router_lock = threading.Lock()


def route_library_output() -> None:
    """Library output of this task process at its true level; GX chatter off. Idempotent.

    Call it at the start of a task, before TensorFlow, Beam or Great Expectations are imported.
    A forked child inherits the routing (its fd 2 is the same pipe, read by the parent's thread).
    """
    global _router
    quiet_chatter()
    with _router_lock:
        if _router is not None:
            return
        _router = _Router(2, logging.getLogger(STDERR_LOGGER))
        _router.start()
        atexit.register(_router.close)


def drain(timeout: float = 5.0) -> bool:
    """Wait until all library output written so far is logged: True, or False on timeout."""
    return _router.drain(timeout) if _router is not None else True
