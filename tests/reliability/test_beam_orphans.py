"""Beam SDK worker processes die with a SIGKILLed feature job (issue 13, item 8).

On the DirectRunner's multi_processing mode a worker killed-orphaned while starting used to live
about two minutes (60 s waiting for the dead launcher's logging service, 60 s for its control
service). `pipelines.features.workers` starts a guardian that kills them when the launcher is
gone; these tests SIGKILL `python -m pipelines features` while its workers start and while they
work, and require every worker process of that run to be gone within ~10 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipelines.features import workers

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 10.0
WORKERS_APPEAR_WITHIN_S = 120.0


def _env() -> dict:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", GX_ANALYTICS_ENABLED="false")
    env.pop(workers.OWNER_ENV, None)
    return env


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("beam_orphans") / "landing"
    subprocess.run(
        [sys.executable, "-m", "pipelines", "generate", "--preset", "small", "--out", str(out)],
        cwd=REPO, env=_env(), check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _worker_processes(parent: psutil.Process) -> list[psutil.Process]:
    """The parent's SDK worker processes and their `sh -c` wrappers."""
    found = []
    for child in parent.children(recursive=True):
        try:
            if any(workers.SDK_WORKER_MAIN in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _is_python_worker(proc: psutil.Process) -> bool:
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    return bool(cmdline) and "python" in os.path.basename(cmdline[0])


def _kill_features_run(landing: Path, run_dir: Path, when: str) -> tuple[list, float, str]:
    """Start `features`, SIGKILL it at `when`; returns (worker processes, seconds, detail)."""
    log_path = run_dir.parent / f"{run_dir.name}.log"
    with open(log_path, "wb") as log:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "features",
             "--source", str(landing), "--run-dir", str(run_dir)],
            cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    try:
        parent = psutil.Process(job.pid)
        deadline = time.monotonic() + WORKERS_APPEAR_WITHIN_S
        appeared = None
        while time.monotonic() < deadline and job.poll() is None:
            for proc in _worker_processes(parent):
                seen.setdefault(proc.pid, proc)
            python_workers = [p for p in seen.values() if _is_python_worker(p) and _alive(p)]
            if len(python_workers) >= 2 and appeared is None:
                appeared = time.monotonic()
            if appeared is not None:
                if when == "worker_start":
                    break
                # mid job: the workers have started working (CPU spent) or 5 s have passed
                busy = sum(_cpu(p) for p in python_workers) >= 2.0
                if busy or time.monotonic() - appeared >= 5.0:
                    break
            time.sleep(0.05)
        if job.poll() is not None:
            pytest.fail(
                f"features ended (exit {job.returncode}) before it could be killed {when}: "
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        assert appeared is not None, f"no SDK worker process within {WORKERS_APPEAR_WITHIN_S} s"
        for proc in _worker_processes(parent):
            seen.setdefault(proc.pid, proc)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
        killed_at = time.monotonic()
        procs = list(seen.values())
        while any(_alive(p) for p in procs) and time.monotonic() - killed_at < GONE_WITHIN_S:
            time.sleep(0.1)
        seconds = time.monotonic() - killed_at
        left = [p.pid for p in procs if _alive(p)]
        detail = f"{len(procs)} worker processes, {len(left)} alive {seconds:.1f} s after SIGKILL"
        return left, seconds, detail
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for proc in seen.values():  # never leave our own orphans behind for other tests
            if _alive(proc):
                try:
                    proc.kill()
                except psutil.Error:
                    pass


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


@pytest.mark.slow
@pytest.mark.parametrize("when", ["worker_start", "mid_job"])
def test_beam_workers_after_sigkill(landing, tmp_path, tally, when):
    """SIGKILL `features` as its SDK workers start (they used to live ~2 min) and while they
    work: no worker process of that run is left after 10 s."""
    left, seconds, detail = _kill_features_run(landing, tmp_path / "run", when)
    case = "beam_workers_after_sigkill" + ("" if when == "worker_start" else f"_{when}")
    outcome = tally.record("run_faults", case, "data_lost" if left else "handled", detail)
    assert outcome == "handled", f"orphaned Beam workers {left}: {detail}"


def test_guardian_kills_marked_workers_when_launcher_dies(tmp_path):
    """The mechanism without Beam: a launcher starts the guardian and a fake worker (same
    command-line mark, `sh -c` wrapper, inherited environment), then is SIGKILLed."""
    launcher_code = (
        "import subprocess, sys, time\n"
        "from pipelines.features import workers\n"
        "assert workers.guard_local_workers('DirectRunner', 'multi_processing')\n"
        f"cmd = sys.executable + ' -c \"import time; time.sleep(120)\" {workers.SDK_WORKER_MAIN}'\n"
        "subprocess.Popen(cmd, shell=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", launcher_code], cwd=REPO, env=_env(),
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    fakes: list[psutil.Process] = []
    try:
        assert launcher.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(fakes) < 2:
            fakes = _worker_processes(psutil.Process(launcher.pid))
            time.sleep(0.05)
        assert len(fakes) == 2, "the fake worker (sh and python) did not start"
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in fakes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in fakes)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for proc in fakes:
            if _alive(proc):
                proc.kill()


@pytest.mark.parametrize(
    ("runner", "mode", "expected"),
    [
        ("DirectRunner", "multi_processing", True),
        ("direct", "multi_processing", True),
        (None, "multi_processing", True),
        ("apache_beam.runners.direct.direct_runner.DirectRunner", "multi_processing", True),
        ("FnApiRunner", "multi_processing", True),
        ("DirectRunner", "in_memory", False),
        ("DirectRunner", "multi_threading", False),
        ("DataflowRunner", "multi_processing", False),
        ("FlinkRunner", "multi_processing", False),
        ("PrismRunner", "multi_processing", False),
    ],
)
def test_guardian_only_for_local_worker_processes(runner, mode, expected):
    assert workers.applies(runner, mode) is expected
    if not expected:
        assert workers.guard_local_workers(runner, mode) is False
