"""Artifact roots that are URLs: each process works on run directories in a local staging copy.

The run steps (Beam, TensorFlow, ScaNN, Great Expectations) read and write a local run
directory. An artifact root on the local disk (a path or a `file://` URL) is used in place, as
it always was: no copies. An object-store root (`s3://`, `gs://`, `memory://`) keeps a run's
files at `<root>/runs/<run_id>/`, and every process works in a local staging copy of it:
PULLED before a step (only files missing here or different from the store), PUSHED after it
(new and changed files up, files removed here removed there). So Celery workers on different
hosts share one run through the store; the registry (`pipelines.registry`) talks to the store
directly.

A push never lets a half-pushed step pass for a finished one: the files that say a step
finished (`MARKERS`: the snapshot's metadata, the features', training's and the index's
manifests, gate.json, summary.json) are removed from the store first when they are about to
change, and uploaded last.

Staging copies live under `TTR_STAGING_DIR` (default `$XDG_CACHE_HOME/two-tower/staging`, i.e.
`~/.cache/two-tower/staging`), one directory per root URL (named by a hash of the URL: two
roots never mix). Readers (the Two-tower view, the run-notes listener) pull a run's reports
into a copy of their own (`role="read"`), never into one a task is working in. A staged run
not synced for a day is removed when a step starts (`prune_staged_runs`): the store keeps it.

What is *not* shared across hosts: the run lock (`pipelines.steps.pipeline.run_lock`) of a
remote root guards one host's staging copy only; the registry's compare-and-swap is what keeps
production consistent between hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipelines.formats.store import is_remote, modified_time, open_root
from pipelines.layout import (
    FEATURES_MANIFEST,
    GATE_JSON,
    RUNS,
    RunLayout,
    landing_dir,
    local_root,
)
from pipelines.locks import exclusive_lock

log = logging.getLogger(__name__)

STAGING_ENV = "TTR_STAGING_DIR"
# Files whose presence says a step finished: removed first and uploaded last by a push.
MARKERS = (
    "snapshot.json",  # pipelines.features.snapshot.META: the validated snapshot
    FEATURES_MANIFEST,
    "train_manifest.json",
    "index_manifest.json",
    GATE_JSON,
    "summary.json",
)
# What a run's readers (notes, the Two-tower view) look at: its reports and summary.
REPORT_PATHS = ("summary.json", "evaluation", "raw_report", "features_report")
# Staged run copies not synced for this long are removed (every task timeout is far shorter).
STAGED_RUN_TTL = dt.timedelta(hours=24)
_SYNC_DIR = ".sync"  # per synced directory: what each file was at the last pull / push
# The version of a remote file, by the first of these its listing carries.
_VERSION_KEYS = ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "updated",
                 "created")  # fmt: skip


def default_staging_dir() -> Path:
    """`TTR_STAGING_DIR`, else `$XDG_CACHE_HOME/two-tower/staging` (`~/.cache/...`)."""
    if os.environ.get(STAGING_ENV):
        return Path(os.environ[STAGING_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "two-tower" / "staging"


def staging_copy(url: str, role: str = "work", staging_dir: str | Path | None = None) -> Path:
    """The local directory that mirrors the artifact root `url` for `role` ("work": steps;
    "read": readers), named by a hash of the URL so that two roots never share one."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", url)[-48:].strip("_.")
    key = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(staging_dir or default_staging_dir()) / f"{tail}-{key}" / role


@dataclasses.dataclass(frozen=True)
class Sync:
    """What one pull or push moved (paths relative to the synced directory)."""

    copied: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


class ArtifactRoot:
    """One artifact root as the steps use it: a local directory to work in (`local`) and, for
    a URL root, the store behind it.

    Attributes:
        url: the root as configured (`data.artifact_root`).
        remote: True for an object store (s3://, gs://, memory://).
        local: the root itself on local disk, else this process's staging copy of it.
        fs, root: the store's fsspec filesystem and the root's path on it (remote only).
    """

    def __init__(
        self, artifact_root: str | os.PathLike, *, role: str = "work",
        staging_dir: str | Path | None = None,
    ):  # fmt: skip
        self.url = os.fspath(artifact_root)
        self.remote = is_remote(self.url)
        if self.remote:
            self.fs, self.root = open_root(self.url)
            self.local = staging_copy(self.url, role, staging_dir)
        else:
            self.fs, self.root = None, None
            self.local = local_root(self.url)

    def __repr__(self) -> str:
        return f"ArtifactRoot({self.url!r}, local={str(self.local)!r})"

    def run_layout(self, run_id: str) -> RunLayout:
        """The (local) layout of run `run_id`; nothing is pulled."""
        return RunLayout.for_run(self.local, run_id)

    def landing(self, preset: str) -> Path:
        """The (local) landing of the synthetic preset."""
        return landing_dir(self.local, preset)

    def location(self, path: str | Path) -> str:
        """Where `path` (under `local`) is kept: its URL on a remote root, else itself."""
        if not self.remote:
            return str(path)
        return f"{self.url.rstrip('/')}/{self.relative(path)}"

    def relative(self, path: str | Path) -> str:
        """`path` (under `local`) relative to the root, as a posix string."""
        return Path(path).relative_to(self.local).as_posix()

    # -- sync ----------------------------------------------------------------------------------

    def pull(
        self, relative: str, include: Iterable[str] | None = None, *,
        listing: dict[str, dict] | None = None,
    ) -> Sync:  # fmt: skip
        """Make `<local>/<relative>` what the store holds at `<root>/<relative>`: download the
        files missing here or changed there since the last sync, delete the files the store no
        longer has. A no-op on a local root.

        Args:
            include: only these paths (files or directories, relative to `relative`).
            listing: the store's files under `relative` (`_listing`), when just listed.
        """
        if not self.remote:
            return Sync()
        local = self.local / relative
        with self._locked(relative):
            state = self._state(relative)
            listing = self._listing(relative) if listing is None else listing
            remote = {r: i for r, i in listing.items() if _within(r, include)}
            here = {r: s for r, s in _local_files(local).items() if _within(r, include)}
            fetch = [r for r, info in remote.items()
                     if not _unchanged(state.get(r), info, here.get(r))]  # fmt: skip
            gone = sorted(set(here) - set(remote))
            for name in gone:
                (local / name).unlink()
            self._download(relative, fetch, remote)
            state = {name: entry for name, entry in state.items() if not _within(name, include)}
            for name in remote:
                state[name] = {"remote": _version(remote[name]), "local": _stat(local / name)}
            self._save_state(relative, state)
        local.mkdir(parents=True, exist_ok=True)
        if fetch or gone:
            log.info("pulled %s/%s: %d file(s) copied, %d deleted", self.url, relative,
                     len(fetch), len(gone))  # fmt: skip
        return Sync(tuple(sorted(fetch)), tuple(gone))

    def push(self, relative: str, last: Iterable[str] = MARKERS) -> Sync:
        """Make `<root>/<relative>` in the store what `<local>/<relative>` holds: upload new
        and changed files, delete the store's files that are gone here. Files named in `last`
        that will change are deleted from the store first and uploaded after everything else,
        so a push cut short never looks finished. A no-op on a local root."""
        if not self.remote:
            return Sync()
        local, last = self.local / relative, set(last)
        with self._locked(relative):
            state = self._state(relative)
            remote = self._listing(relative)
            here = _local_files(local)
            upload = [r for r, stat in here.items()
                      if not _unchanged(state.get(r), remote.get(r), stat)]  # fmt: skip
            gone = sorted(set(remote) - set(here))
            is_marker = lambda name: name.rsplit("/", 1)[-1] in last  # noqa: E731
            markers_first = [r for r in [*upload, *gone] if r in remote and is_marker(r)]
            self._delete(relative, markers_first)
            self._delete(relative, [r for r in gone if r not in markers_first])
            self._upload(relative, [r for r in upload if not is_marker(r)])
            self._upload(relative, [r for r in upload if is_marker(r)])
            remote = self._listing(relative)
            self._save_state(relative, {
                name: {"remote": _version(remote[name]), "local": stat}
                for name, stat in here.items() if name in remote
            })  # fmt: skip
        if upload or gone:
            log.info("pushed %s/%s: %d file(s) copied, %d deleted", self.url, relative,
                     len(upload), len(gone))  # fmt: skip
        return Sync(tuple(sorted(upload)), tuple(gone))

    @contextlib.contextmanager
    def synced_run(self, run_id: str, *, push: bool = True) -> Iterator[RunLayout]:
        """The layout of run `run_id` in `local`, pulled from the store first and pushed back
        afterwards (also when the step fails: its reports and checkpoints are what a retry or
        a person reads next). `push=False` for read-only use. Nothing to sync on a local root.
        """
        layout = self.run_layout(run_id)
        relative = self.relative(layout.run_dir)
        self.prune_staged_runs()
        self.pull(relative)
        try:
            yield layout
        except BaseException:
            if push:
                try:
                    self.push(relative)
                except Exception:  # noqa: BLE001 - the step's own error is the one to raise
                    log.exception("pushing %s after a failed step failed", layout.run_dir)
            raise
        if push:
            self.push(relative)

    def prune_staged_runs(self, older_than: dt.timedelta = STAGED_RUN_TTL) -> list[str]:
        """Remove the staging copies of runs not synced for `older_than` (the store keeps
        them; a worker's disk would otherwise fill with every run it ever touched). The
        default is far above any task's timeout, so a copy a step still works in stays.
        Returns the run ids removed; never touches a local root (there the runs are the data).
        """
        if not self.remote or not (self.local / RUNS).is_dir():
            return []
        cutoff = time.time() - older_than.total_seconds()
        removed = []

        def last_sync(run_dir: Path, state: Path) -> float:
            return state.stat().st_mtime if state.exists() else run_dir.stat().st_mtime

        for run_dir in sorted((self.local / RUNS).iterdir()):
            relative = self.relative(run_dir)
            state = self._state_path(relative)
            if not run_dir.is_dir() or last_sync(run_dir, state) >= cutoff:
                continue
            with self._locked(relative):  # not while another process pulls or pushes it
                if last_sync(run_dir, state) < cutoff:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    state.unlink(missing_ok=True)
                    removed.append(run_dir.name)
        if removed:
            log.info("removed %d staged run copies of %s not synced since %s", len(removed),
                     self.url, older_than)  # fmt: skip
        return removed

    def push_run(self, layout: RunLayout) -> Sync:
        """Push one run directory (e.g. after each step of `run`)."""
        return self.push(self.relative(layout.run_dir))

    # -- readers -------------------------------------------------------------------------------

    def finished_runs(self) -> list[tuple[str, float]]:
        """`(run_id, finished at)` of every run with a summary.json, oldest first (the time is
        the summary's modification time, seconds since the epoch)."""
        if not self.remote:
            runs = self.local / RUNS
            stamps = [(p.parent.name, p.stat().st_mtime) for p in runs.glob("*/summary.json")]
        else:
            pattern = f"{self.root}/{RUNS}/*/summary.json"
            self.fs.invalidate_cache(f"{self.root}/{RUNS}")
            found = self.fs.glob(pattern, detail=True)
            stamps = [(path.rstrip("/").split("/")[-2], modified_time(info) or 0.0)
                      for path, info in found.items()]  # fmt: skip
        return sorted(stamps, key=lambda s: (s[1], s[0]))

    def run_reports(self, run_id: str) -> RunLayout | None:
        """The local layout of run `run_id` with its reports and summary (`REPORT_PATHS`)
        pulled from the store; None when the run does not exist (a local root: no directory;
        a remote one: no file under it)."""
        layout = self.run_layout(run_id)
        if not self.remote:
            return layout if layout.run_dir.is_dir() else None
        relative = self.relative(layout.run_dir)
        listing = self._listing(relative)
        if not listing:
            return None
        self.pull(relative, include=REPORT_PATHS, listing=listing)
        return layout

    def has_run(self, run_id: str) -> bool:
        """Whether run `run_id` has files under the root."""
        layout = self.run_layout(run_id)
        if not self.remote:
            return layout.run_dir.is_dir()
        return self.fs.isdir(f"{self.root}/{self.relative(layout.run_dir)}")

    # -- internals -----------------------------------------------------------------------------

    def _listing(self, relative: str) -> dict[str, dict]:
        """The store's files under `<root>/<relative>`: relative path -> fsspec info."""
        base = f"{self.root}/{relative}".rstrip("/")
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        prefix = self.fs._strip_protocol(base).rstrip("/") + "/"
        return {
            path[len(prefix):]: info for path, info in found.items()
            if path.startswith(prefix) and info.get("type", "file") == "file"
        }  # fmt: skip

    def _download(self, relative: str, names: list[str], infos: dict[str, dict]) -> None:
        if not names:
            return
        local = self.local / relative
        temps = []
        for name in names:
            target = local / name
            target.parent.mkdir(parents=True, exist_ok=True)
            temps.append(target.with_name(f".{target.name}.pull-{uuid.uuid4().hex[:8]}"))
        remote = [f"{self.root}/{relative}/{name}" for name in names]
        try:
            self.fs.get(remote, [str(t) for t in temps])
            for name, temp in zip(names, temps, strict=True):
                os.replace(temp, local / name)
                stamp = modified_time(infos[name])
                if stamp is not None:  # the store's time: "finished at" reads the same here
                    os.utime(local / name, (stamp, stamp))
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)

    def _upload(self, relative: str, names: list[str]) -> None:
        if names:
            local = self.local / relative
            self.fs.put([str(local / n) for n in names],
                        [f"{self.root}/{relative}/{n}" for n in names])  # fmt: skip

    def _delete(self, relative: str, names: list[str]) -> None:
        if names:
            self.fs.rm([f"{self.root}/{relative}/{n}" for n in names])

    def _state_path(self, relative: str) -> Path:
        name = hashlib.sha256(relative.encode()).hexdigest()[:24]
        return self.local / _SYNC_DIR / f"{name}.json"

    def _state(self, relative: str) -> dict[str, dict]:
        try:
            return json.loads(self._state_path(relative).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _save_state(self, relative: str, files: dict[str, dict]) -> None:
        """Record what was synced (its modification time: when, for `prune_staged_runs`)."""
        path = self._state_path(relative)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"relative": relative, "files": files}))
        os.replace(temp, path)

    @contextlib.contextmanager
    def _locked(self, relative: str):
        """One sync of a directory at a time on this host."""
        path = self._state_path(relative).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path):
            yield


def _within(name: str, include: Iterable[str] | None) -> bool:
    if include is None:
        return True
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in include)


def _local_files(directory: Path) -> dict[str, list[int]]:
    """Files under `directory`: relative posix path -> `_stat`."""
    out = {}
    for top, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(top) / name
            if name.startswith(".") and ".pull-" in name:  # a download cut short
                continue
            out[path.relative_to(directory).as_posix()] = _stat(path)
    return out


def _stat(path: Path) -> list[int]:
    """Size, modification and change time: a rewrite, a replacement or a copy with its old
    modification time (`shutil.copy2`) all change the last."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _version(info: dict | None) -> str | None:
    """What names one version of a remote file in its listing (size + ETag, generation, ...)."""
    if info is None:
        return None
    for key in _VERSION_KEYS:
        if info.get(key) is not None:
            return f"{info.get('size')}:{info[key]}"
    return str(info.get("size"))


def _unchanged(recorded: dict | None, remote: dict | None, local: list[int] | None) -> bool:
    """Both sides are still what the last sync left: the same remote version and the same
    local size and modification time."""
    return (
        recorded is not None and remote is not None and local is not None
        and recorded.get("remote") == _version(remote) and recorded.get("local") == local
    )  # fmt: skip
