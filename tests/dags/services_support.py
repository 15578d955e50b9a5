"""Throwaway PostgreSQL and Redis servers on 127.0.0.1 for the Airflow stack of the DAG tests.

Both come from Debian packages (`scripts/services.sh install`). PostgreSQL refuses to run as
root, so as root its cluster is run by the `postgres` OS user, in a temporary directory under
/tmp (pytest's own temporary directories are 0700 root, closed to that user); as anyone else
it runs as that user. Each server listens on a free loopback port and is gone after `stop()`.
Settings trade durability for speed (no fsync, no snapshots): nothing here outlives a session.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ports import free_port

REPO = Path(__file__).parents[2]


class ServiceError(RuntimeError):
    """A service could not be started; the message says which, why and what to install."""


def pg_bin() -> Path:
    """PostgreSQL's server programs (Debian keeps initdb/pg_ctl off PATH)."""
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "services.sh"), "pg-bin"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        raise ServiceError(
            "PostgreSQL's initdb/pg_ctl not found: run `scripts/services.sh install` "
            "(Debian's postgresql; make test does it)"
        )
    return Path(found.stdout.strip())


def _as_postgres(cmd: list[str]) -> list[str]:
    """`cmd` run by the `postgres` OS user when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(what: str, cmd: list[str], log: Path | None = None) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log and log.exists() else ""
        raise ServiceError(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}{tail}")


class Postgres:
    """A PostgreSQL cluster with one database and its owner, reached over TCP on 127.0.0.1.

    `url` is the SQLAlchemy URL for psycopg2 (Airflow's `sql_alchemy_conn`), `async_url` the
    same database for asyncpg (Airflow 3's async engine, `sql_alchemy_conn_async`).
    """

    def __init__(self, database: str = "airflow", user: str = "airflow"):
        binaries = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="ttr-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.password = secrets.token_urlsafe(16)
        _run(
            "initdb",
            _as_postgres([str(binaries / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                          "--no-sync"]),
        )  # fmt: skip
        self.pg_ctl = str(binaries / "pg_ctl")
        for attempt in range(3):  # a free port can be taken by someone else before we bind it
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                f"-c unix_socket_directories={self.dir} -c max_connections=200 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            start = [self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options,
                     "-w", "-t", "60", "start"]  # fmt: skip
            try:
                _run("pg_ctl start", _as_postgres(start), self.log)
                break
            except ServiceError:
                if attempt == 2:
                    shutil.rmtree(self.dir, ignore_errors=True)
                    raise
        self.database, self.user = database, user
        self.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {database} OWNER {user}")
        where = f"{user}:{self.password}@127.0.0.1:{self.port}/{database}"
        self.url = f"postgresql+psycopg2://{where}"
        self.async_url = f"postgresql+asyncpg://{where}"

    def psql(self, sql: str) -> str:
        """Run `sql` as the superuser over the cluster's socket; returns the output rows."""
        cmd = ["psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d",
               "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql]  # fmt: skip
        done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"psql {sql!r} failed: {done.stderr}")
        return done.stdout

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A Redis server (no persistence) on a free loopback port; `url` is database 0."""

    def __init__(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise ServiceError(
                "redis-server not found: run `scripts/services.sh install` (Debian's "
                "redis-server; make test does it)"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="ttr-redis-"))
        self.log = self.dir / "redis.log"
        for attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.log)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            if self._answers(timeout=20):
                break
            self.proc.kill()
            self.proc.wait()
            if attempt == 2:
                tail = self.log.read_text()[-2000:] if self.log.exists() else ""
                shutil.rmtree(self.dir, ignore_errors=True)
                raise ServiceError(f"redis-server did not answer on 127.0.0.1: {tail}")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _answers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_hostname() -> str:
    """Airflow's `hostname_callable` for the test stack's Celery workers: the name in
    TTR_WORKER_NAME, so each worker's task instances say which worker ran them (both workers
    run on this one machine, where the real hostname is the same for both)."""
    return os.environ["TTR_WORKER_NAME"]
