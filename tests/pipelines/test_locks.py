"""`exclusive_lock`: one holder at a time, the holder named to whoever is refused."""

from __future__ import annotations

import os
import stat

import pytest

from pipelines.errors import PipelineError
from pipelines.locks import LockHeld, exclusive_lock


def test_a_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    path = tmp_path / ".lock"
    with exclusive_lock(path, holder="run a (pid 1)"):
        assert path.read_text() == "run a (pid 1)\n"
        with pytest.raises(LockHeld, match=r"held by run a \(pid 1\)") as refused:
            with exclusive_lock(path, holder="run b", wait=False):
                pass
        assert isinstance(refused.value, PipelineError)
        assert refused.value.holder == "run a (pid 1)" and refused.value.path == str(path)
    assert path.read_text() == ""  # cleared on release
    with exclusive_lock(path, holder="run b", wait=False):  # free again
        assert path.read_text() == "run b\n"


def test_without_a_holder_the_file_stays_empty_and_takes_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with exclusive_lock(tmp_path / ".lock"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / ".lock").read_bytes() == b""
    assert stat.S_IMODE((tmp_path / ".lock").stat().st_mode) == 0o640


def test_the_lock_is_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError), exclusive_lock(tmp_path / ".lock", holder="x"):
        raise RuntimeError("boom")
    with exclusive_lock(tmp_path / ".lock", wait=False):
        pass
