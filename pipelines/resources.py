"""Wall time and peak memory of one piece of work (a pipeline step), as the run reports them.

    with measure() as usage:
        build_features(...)
    usage.as_dict()  # {"seconds": 41.2, "peak_rss_gib": 1.19, "peak_tree_gib": 2.81, ...}

Two peaks, because a step's memory is not always in its own process:

- `peak_rss_gib`: this process's high-water mark during the work (Linux `VmHWM`, reset at the
  start through `/proc/self/clear_refs`, so each step gets its own and not the largest of the
  steps before it). Where the reset is not allowed, the sampled peak stands in (`exact` false).
- `peak_tree_gib`: the largest sum of resident memory over this process and all its
  descendants (Beam's worker processes, a Dask cluster started by the step), sampled every
  `interval` seconds. Pages shared between parent and forked children count once per process,
  so it errs high; a spike shorter than the interval can be missed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

GIB = float(1 << 30)
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclasses.dataclass
class Usage:
    """What one `measure` block used (filled in when the block ends).

    Attributes:
        seconds: wall time.
        peak_rss_gib: this process's peak resident memory during the block.
        peak_tree_gib: the sampled peak of this process plus its descendants.
        exact: `peak_rss_gib` is the kernel's high-water mark (else the sampled peak).
    """

    seconds: float = 0.0
    peak_rss_gib: float = 0.0
    peak_tree_gib: float = 0.0
    exact: bool = False

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 2),
            "peak_rss_gib": round(self.peak_rss_gib, 3),
            "peak_tree_gib": round(self.peak_tree_gib, 3),
            "peak_rss_exact": self.exact,
        }

    def describe(self) -> str:
        return (
            f"{self.seconds:.1f} s, peak {self.peak_rss_gib:.2f} GiB "
            f"({self.peak_tree_gib:.2f} GiB with child processes)"
        )


@contextlib.contextmanager
def measure(interval: float = 0.25) -> Iterator[Usage]:
    """Measure the block's wall time and peak memory (see the module docstring).

    The result is filled in also when the block raises.
    """
    usage = Usage()
    usage.exact = _reset_high_water_mark()
    sampler = TreeSampler(interval)
    sampler.start()
    started = time.perf_counter()
    try:
        yield usage
    finally:
        usage.seconds = time.perf_counter() - started
        sampler.stop()
        own = _high_water_mark() if usage.exact else None
        usage.peak_rss_gib = (own if own is not None else sampler.own_peak) / GIB
        usage.peak_tree_gib = max(sampler.tree_peak, own or 0) / GIB


def _reset_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False when not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _high_water_mark() is not None


def _high_water_mark() -> int | None:
    """This process's VmHWM in bytes, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class TreeSampler:
    """The peak resident memory of some processes and all their descendants, sampled every
    `interval` seconds on a daemon thread (a context manager; also `start` / `stop`).

    Args:
        pids: the roots (default: this process).

    Attributes:
        own_peak: the largest sampled RSS of the roots themselves, in bytes.
        tree_peak: the largest sampled sum over the roots and their descendants, in bytes.
    """

    def __init__(self, interval: float = 0.25, pids: list[int] | None = None):
        import psutil

        self.interval = interval
        self.own_peak = 0
        self.tree_peak = 0
        self._roots = [psutil.Process(p) for p in (pids or [os.getpid()])]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        import psutil

        own = total = 0
        for root in self._roots:
            try:  # a root or a child may exit between list and read
                rss = root.memory_info().rss
                children = root.children(recursive=True)
            except psutil.Error:
                continue
            own += rss
            total += rss
            for child in children:
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        self.own_peak = max(self.own_peak, own)
        self.tree_peak = max(self.tree_peak, total)
