"""A `dask.distributed` cluster of local processes, for the feature job on the DaskRunner.

    with local_dask_cluster(workers=2, home=tmp) as cluster:
        TTR_BEAM__RUNNER=apache_beam.runners.dask.dask_runner.DaskRunner
        TTR_BEAM__OPTIONS__DASK_CLIENT_ADDRESS=<cluster.address>

A `dask scheduler` and `workers` × `dask worker --nworkers 1 --nthreads 1 --no-nanny`, each its
own process on 127.0.0.1 (free ports: the scheduler picks one and writes its address to its
scheduler file). No nanny: the worker is the `dask worker` process itself, so it stops in under a
second. The same processes a real cluster runs, only on one host: what the tests and the
capacity bench submit to. On a real cluster the scheduler and workers are started by the
deployment (Kubernetes, dask-jobqueue, ...), and the job needs only their address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


@dataclasses.dataclass(frozen=True)
class LocalDaskCluster:
    """A running local cluster.

    Attributes:
        address: the scheduler's `tcp://host:port`.
        pids: the scheduler's and the workers' process ids (scheduler first).
        log: the cluster's log file (stderr of every process).
    """

    address: str
    pids: tuple[int, ...]
    log: Path

    def beam_env(self) -> dict[str, str]:
        """The environment that sends the feature job to this cluster through the config."""
        return {
            "TTR_BEAM__RUNNER": DASK_RUNNER,
            "TTR_BEAM__OPTIONS__DASK_CLIENT_ADDRESS": self.address,
        }


@contextlib.contextmanager
def local_dask_cluster(
    workers: int, home: str | Path, *, timeout: float = 60.0
) -> Iterator[LocalDaskCluster]:
    """Start a scheduler and `workers` single-threaded workers; stop them all on exit.

    Args:
        home: the processes' working and spill directory (the log and scheduler file go there).
        timeout: seconds to wait for the scheduler's address and for every worker to join.

    Raises:
        TimeoutError: the scheduler or a worker did not come up in time (see the log).
    """
    from distributed import Client

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    scheduler_file = home / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    log_path = home / "cluster.log"
    dask_scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    dask_worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    with log_path.open("ab") as log:
        common = {"cwd": home, "stdout": subprocess.DEVNULL, "stderr": log}
        scheduler = f"--host 127.0.0.1 --port 0 --no-dashboard --scheduler-file {scheduler_file}"
        procs = [subprocess.Popen([*dask_scheduler, *scheduler.split()], **common)]
        address = None
        try:
            address = _scheduler_address(scheduler_file, timeout)
            for n in range(workers):
                worker = (
                    f"{address} --nworkers 1 --nthreads 1 --no-nanny --host 127.0.0.1 "
                    f"--no-dashboard --name w{n} --local-directory {home}"
                )
                procs.append(subprocess.Popen([*dask_worker, *worker.split()], **common))
            with Client(address, timeout=30) as client:
                client.wait_for_workers(workers, timeout=timeout)
            yield LocalDaskCluster(address, tuple(p.pid for p in procs), log_path)
        finally:
            if address is not None:
                with contextlib.suppress(Exception), Client(address, timeout=10) as client:
                    client.shutdown()  # the scheduler and its workers, at once
            for proc in procs:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _scheduler_address(scheduler_file: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(scheduler_file.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.1)
    raise TimeoutError(f"the dask scheduler wrote no {scheduler_file} within {timeout} s")


def worker_pids(address: str) -> set[int]:
    """The process ids of the cluster's workers, as they report them."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        return set(client.run(os.getpid).values())
