"""Per-step wall time and peak memory (`pipelines.resources.measure`)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines.resources import measure

MIB = 1 << 20


def _touch(mib: int) -> np.ndarray:
    block = np.ones(mib * MIB, dtype=np.uint8)  # ones: every page is written, so resident
    return block


def test_each_block_gets_its_own_peak_not_the_largest_so_far():
    with measure() as big:
        block = _touch(400)
        del block
    with measure() as small:
        block = _touch(40)
        del block
    assert big.exact, "the kernel's high-water mark should be resettable on Linux"
    assert big.peak_rss_gib * 1024 > 400
    # the reset: the second block does not inherit the first one's 400 MiB
    assert small.peak_rss_gib < big.peak_rss_gib - 300 / 1024
    assert small.seconds >= 0 and big.seconds > 0


def test_child_processes_count_in_the_tree_peak_only():
    code = "import numpy as np, time; b = np.ones(300 * 2**20, dtype=np.uint8); time.sleep(1.5)"
    with measure(interval=0.05) as used:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert used.peak_tree_gib - used.peak_rss_gib > 250 / 1024
    assert used.seconds >= 1.5


def test_usage_is_filled_in_when_the_block_raises():
    with pytest.raises(RuntimeError), measure() as used:
        time.sleep(0.05)
        raise RuntimeError("step failed")
    assert used.seconds >= 0.05 and used.peak_rss_gib > 0
    assert set(used.as_dict()) == {"seconds", "peak_rss_gib", "peak_tree_gib", "peak_rss_exact"}
