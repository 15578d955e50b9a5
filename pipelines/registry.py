"""The bundle registry: content-addressed bundles and an atomically swapped production pointer.

Under `<artifact_root>/registry/` (a local path or any fsspec URL):

    bundles/<bundle_id>/      query_tower/, item_ids.txt, item_embeddings.npy, index/, vocab/,
                              serving_state.parquet, popular_items.txt, evaluation/,
                              manifest.json (config, data window, metrics, gate, code version,
                              parent bundle, content hash)
    production.json           {"bundle_id", "previous", "chain", "seq", "event", "promoted_at",
                               "reason"}: `chain` lists the bundles rollback restores, newest first
    history.jsonl             one line per promotion / rollback (the pointer's own record)
    .lock                     exclusive lock for promote, rollback, prune and gc (local disks)

A bundle id is the first 16 hex digits of the SHA-256 over its files (paths + contents, the
manifest excluded), so the same content is one bundle. A bundle is copied under a hidden
temporary name, `manifest.json` is written last and the directory renamed into place, so a
bundle with a manifest is complete; the pointer is replaced in one step (`os.replace` locally,
a single-object write elsewhere) only after its bundle is complete, so a reader following
`production.json` never sees a half-written bundle, whenever the writer dies.

Promotion is a compare-and-swap under the lock (`promote(..., expected=champion)`). The pointer
carries the rollback chain and its own history record, so a writer killed between the swap and
the history append loses nothing: the next writer appends the missing record, `history()`
shows it meanwhile, and `rollback` never reads the history. Loading a bundle runs its
SavedModel graph, so `fetch` (and `production_dir`) check its files against the manifest's
content hash first; debris of killed publishes is removed by `gc`.

Fault injection for the reliability tests: with `TTR_FAULT_KILL_AT=<point>` in the environment
the process SIGKILLs itself at that point (names in `FAULT_POINTS`); unset, it does nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import BundleIntegrityError, PipelineError, PromotionConflict
from pipelines.faults import kill_point

log = logging.getLogger(__name__)

POINTER = "production.json"
HISTORY = "history.jsonl"
MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_BUNDLE = ".tmp-"
TMP_POINTER = ".production-"
BUNDLE_ID = re.compile(r"[0-9a-f]{16}")
CHAIN_LIMIT = 32  # rollback depth kept in the pointer (prune keeps far fewer bundles anyway)
FAULT_POINTS = (
    "publish.file_copied",  # the first file of the bundle copied
    "publish.content_copied",  # every file copied, no manifest yet
    "publish.manifest_written",  # manifest written, not renamed into place
    "publish.renamed",  # the bundle in place
    "registry.locked",  # promote / rollback holds the lock, nothing written
    "swap.temp_written",  # the new pointer in its temporary file
    "swap.replaced",  # the pointer replaced, its history line not appended
    "history.torn",  # half of a history line written
    "history.appended",  # the history line appended, lock still held
)


class _Unchecked:
    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED = _Unchecked()  # `promote(expected=UNCHECKED)`: swap whatever production is


def check_bundle_id(bundle_id: object) -> str:
    """`bundle_id` if it is one `publish` can generate (16 lowercase hex digits).

    Raises:
        PipelineError: anything else, e.g. a path such as `../../..`.
    """
    if not isinstance(bundle_id, str) or not BUNDLE_ID.fullmatch(bundle_id):
        raise PipelineError(
            f"{bundle_id!r} is not a bundle id: ids are 16 lowercase hex digits, as "
            "`two-tower registry list` shows them"
        )
    return bundle_id


def content_hash(directory: str | Path) -> str:
    """SHA-256 over every file's relative path and bytes, `manifest.json` excluded."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel == MANIFEST:
            continue
        digest.update(rel.encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def verify_bundle_dir(directory: str | Path, expected: str | None = None) -> str | None:
    """Check a bundle directory's files against its content hash before anything loads it.

    Args:
        directory: a registry bundle (or a local copy of one).
        expected: the content hash to match; default: the one in its `manifest.json`.

    Returns:
        The verified content hash, or None for a directory that is no registry bundle (no
        manifest with a content hash, e.g. a training output).

    Raises:
        BundleIntegrityError: the files hash to something else, or the manifest is unreadable.
    """
    directory = Path(directory)
    if expected is None:
        path = directory / MANIFEST
        if not path.is_file():
            return None
        try:
            expected = json.loads(path.read_text()).get("content_hash")
        except (OSError, ValueError, AttributeError) as exc:
            raise BundleIntegrityError(
                f"bundle {directory}: unreadable {MANIFEST}: {exc}"
            ) from None
        if expected is None:
            return None
    actual = content_hash(directory)
    if actual != expected:
        raise BundleIntegrityError(
            f"bundle {directory}: its files hash to {actual[:16]}… but its manifest says "
            f"{expected[:16]}…, so they changed after publishing. Not loading it (loading runs "
            "the bundle's SavedModel graph). Roll back or promote another bundle, and check who "
            "can write to the registry."
        )
    return actual


def code_version() -> str:
    """`git describe` of the checkout, or the package version outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("two-tower-retrain")
    except PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _record(pointer: dict) -> dict:
    """The history line of a pointer: the pointer without its chain."""
    return {k: v for k, v in pointer.items() if k != "chain"}


class Registry:
    """Bundles and the production pointer under `<root>/registry`."""

    def __init__(self, artifact_root: str | os.PathLike):
        self.fs, root = fsspec.core.url_to_fs(str(artifact_root))
        self.root = root.rstrip("/") + "/registry"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(f"{self.root}/bundles", exist_ok=True)

    def bundle_path(self, bundle_id: str) -> str:
        """Where a bundle lives. Raises PipelineError for anything but a bundle id."""
        return f"{self.root}/bundles/{check_bundle_id(bundle_id)}"

    # -- bundles -------------------------------------------------------------------------------

    def publish(self, staging: str | Path, manifest: dict) -> str:
        """Copy a complete local bundle directory into the registry; returns its id.

        `manifest` is stored with `bundle_id` and `content_hash` added, written after every
        other file. Publishing the same content twice returns the existing bundle. A failed
        publish removes its temporary copy; debris of a killed one is hidden and never blocks
        a retry (`gc` removes it).

        Raises:
            PipelineError: `staging` changed while it was copied.
            OSError: the copy failed (e.g. disk full); nothing is left behind.
        """
        staging = Path(staging)
        digest = content_hash(staging)
        bundle_id = digest[:16]
        if self._complete(bundle_id):
            return bundle_id
        manifest = {**manifest, "bundle_id": bundle_id, "content_hash": digest}
        data = json.dumps(manifest, indent=2, default=str).encode()
        temporary = f"{self.root}/bundles/{TMP_BUNDLE}{uuid.uuid4().hex}"
        try:
            self._copy_content(staging, temporary)
            kill_point("publish.content_copied")
            if self.local:
                if content_hash(temporary) != digest:
                    raise PipelineError(
                        f"bundle {staging} changed while it was published; publish it again"
                    )
                self._write_file(f"{temporary}/{MANIFEST}", data)
                kill_point("publish.manifest_written")
                self._rename_into_place(temporary, bundle_id)
            else:
                # No atomic directory rename on object stores: the manifest goes last instead.
                if self.fs.exists(self.bundle_path(bundle_id)):
                    self.fs.rm(self.bundle_path(bundle_id), recursive=True)  # incomplete leftover
                self.fs.mv(temporary, self.bundle_path(bundle_id), recursive=True)
                self.fs.pipe_file(f"{self.bundle_path(bundle_id)}/{MANIFEST}", data)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.rm(temporary, recursive=True)
            raise
        kill_point("publish.renamed")
        log.info("registry: published bundle %s", bundle_id)
        return bundle_id

    def manifest(self, bundle_id: str) -> dict:
        """A complete bundle's manifest.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
        """
        manifest = self._read_manifest(bundle_id)
        if manifest is None:
            raise PipelineError(
                f"registry {self.root}: no complete bundle {bundle_id!r}; "
                "`two-tower registry list` shows the bundles there are"
            )
        return manifest

    def bundles(self) -> list[dict]:
        """Complete bundles, oldest first, each `{bundle_id, created_at, production, ...}`."""
        production = self.production()
        out = []
        for path in self.fs.ls(f"{self.root}/bundles", detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            meta = self._read_manifest(name) if BUNDLE_ID.fullmatch(name) else None
            if meta is None:
                continue
            out.append({
                "bundle_id": name,
                "created_at": meta.get("created_at", ""),
                "production": name == production,
                "parent": meta.get("parent_bundle"),
                "primary_metric": meta.get("primary_metric"),
                "primary_value": meta.get("primary_value"),
                "run_id": meta.get("run_id"),
            })  # fmt: skip
        return sorted(out, key=lambda b: b["created_at"])

    def verify(self, bundle_id: str) -> bool:
        """True if the bundle's files still hash to its manifest's content hash."""
        expected = self.manifest(bundle_id)["content_hash"]
        if self.local:
            return content_hash(self.bundle_path(bundle_id)) == expected
        with tempfile.TemporaryDirectory() as fresh:  # the registry's files, not a cached copy
            return content_hash(self._local_copy(bundle_id, fresh)) == expected

    def fetch(self, bundle_id: str, cache_dir: str | Path | None = None) -> Path:
        """A local directory with the bundle (the registry's own on local disk, else a copy),
        its files checked against the manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            BundleIntegrityError: the files do not match the manifest (not loaded).
        """
        expected = self.manifest(bundle_id)["content_hash"]
        local = self._local_copy(bundle_id, cache_dir)
        if not self.local and content_hash(local) != expected:
            shutil.rmtree(local, ignore_errors=True)  # a damaged cached copy: fetch afresh
            local = self._local_copy(bundle_id, cache_dir)
        verify_bundle_dir(local, expected)
        return local

    # -- the production pointer --------------------------------------------------------------

    def pointer(self) -> dict | None:
        path = f"{self.root}/{POINTER}"
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def production(self) -> str | None:
        """The production bundle id, or None. Raises PipelineError if the pointer names no id."""
        pointer = self.pointer()
        return check_bundle_id(pointer["bundle_id"]) if pointer else None

    def production_dir(self, cache_dir: str | Path | None = None) -> Path | None:
        """The production bundle as a verified local directory (see `fetch`), or None."""
        bundle_id = self.production()
        return self.fetch(bundle_id, cache_dir) if bundle_id else None

    def promote(self, bundle_id: str, reason: str = "", expected=UNCHECKED) -> dict:
        """Point production at a complete bundle (atomic) and log it.

        Args:
            bundle_id: a complete bundle in this registry.
            reason: recorded in the pointer and the history.
            expected: compare-and-swap: the bundle id production must still name at swap time
                (None: no production yet); by default production is replaced whatever it is.

        Returns:
            The new pointer (unchanged if `bundle_id` already is production).

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            PromotionConflict: production is no longer `expected`; nothing changed.
        """
        if expected is not UNCHECKED and expected is not None:
            check_bundle_id(expected)
        with self._lock():
            self.manifest(bundle_id)  # under the lock: prune and gc cannot remove it meanwhile
            kill_point("registry.locked")
            current = self.pointer()
            current_id = current["bundle_id"] if current else None
            if current_id == bundle_id:
                return current
            if expected is not UNCHECKED and current_id != expected:
                raise PromotionConflict(
                    f"registry {self.root}: not promoting {bundle_id}: this run was gated "
                    f"against champion {expected or 'none (no production yet)'}, but production "
                    f"is now {current_id or 'none'} ({(current or {}).get('reason') or 'no reason'}"
                    f", {(current or {}).get('promoted_at', '?')}). Re-run to evaluate and gate "
                    f"against the current production, or promote by hand with "
                    f"`two-tower promote --bundle {bundle_id}`.",
                    bundle_id=bundle_id, expected=expected, current=current_id,
                )  # fmt: skip
            chain = [current_id, *self._chain(current)][:CHAIN_LIMIT] if current else []
            pointer = self._commit("promote", bundle_id, chain, reason, current)
        log.info("registry: production -> %s (was %s)", bundle_id, current_id)
        return pointer

    def rollback(self, reason: str = "rollback") -> dict:
        """Restore the bundle production pointed to before the current one.

        Raises:
            PipelineError: nothing to roll back to, or that bundle is gone (pruned).
        """
        with self._lock():
            kill_point("registry.locked")
            current = self.pointer()
            chain = self._chain(current) if current else []
            if not chain:
                raise PipelineError(
                    f"registry {self.root}: no previous production bundle to restore"
                )
            target = chain[0]
            if self._read_manifest(target) is None:
                raise PipelineError(
                    f"registry {self.root}: the previous production bundle {target} is gone "
                    "(pruned or incomplete); pick one from `two-tower registry list` and "
                    "`two-tower promote --bundle ID`"
                )
            pointer = self._commit("rollback", target, chain[1:], reason, current)
        log.info("registry: rolled back %s -> %s", current["bundle_id"], target)
        return pointer

    def history(self) -> list[dict]:
        """Promotions and rollbacks, oldest first, the current pointer's record included.

        A torn line (a writer killed mid-append) is skipped with a warning.
        """
        entries = self._history_lines()
        pointer = self.pointer()
        if (
            pointer
            and "seq" in pointer
            and not any(e.get("seq") == pointer["seq"] for e in entries)
        ):
            entries.append(_record(pointer))  # its writer died before appending it
        return entries

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` bundles, never production or its previous."""
        with self._lock():
            pointer = self.pointer() or {}
            protected = {pointer.get("bundle_id"), pointer.get("previous")}
            bundles = [b["bundle_id"] for b in self.bundles()]
            removable = [b for b in bundles[: max(0, len(bundles) - keep)] if b not in protected]
            for bundle_id in removable:
                self.fs.rm(self.bundle_path(bundle_id), recursive=True)
        return removable

    def gc(self, older_than_s: float = 3600.0) -> list[str]:
        """Remove debris of killed or failed publishes and swaps, older than `older_than_s`.

        Debris: `bundles/.tmp-*` copies, bundle directories without a complete manifest and
        `.production-*` temporary pointers. Complete bundles, the production bundle and its
        predecessor are never removed; neither is anything modified more recently than
        `older_than_s` seconds ago (a publish in flight). Unknown ages count as recent.

        Returns:
            The removed paths, relative to the registry root.
        """
        removed = []
        with self._lock():
            pointer = self.pointer() or {}
            protected = {pointer.get("bundle_id"), pointer.get("previous")}
            candidates = []
            for path in self.fs.ls(f"{self.root}/bundles", detail=False):
                name = path.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(TMP_BUNDLE) or (
                    BUNDLE_ID.fullmatch(name)
                    and name not in protected
                    and self._read_manifest(name) is None
                ):
                    candidates.append((f"bundles/{name}", path))
            for path in self.fs.ls(self.root, detail=False):
                name = path.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(TMP_POINTER):
                    candidates.append((name, path))
            now = time.time()
            for rel, path in sorted(candidates):
                try:
                    if now - self._last_modified(path) < older_than_s:
                        continue
                    self.fs.rm(path, recursive=True)
                except FileNotFoundError:  # a publish finished or cleaned up meanwhile
                    continue
                removed.append(rel)
        if removed:
            log.info("registry: gc removed %d leftovers: %s", len(removed), ", ".join(removed))
        return removed

    # -- internals ---------------------------------------------------------------------------

    def _read_manifest(self, bundle_id: str) -> dict | None:
        """The manifest of a complete bundle; None if absent, torn or not this bundle's."""
        path = f"{self.bundle_path(bundle_id)}/{MANIFEST}"
        try:
            manifest = json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, ValueError):
            return None
        digest = manifest.get("content_hash") if isinstance(manifest, dict) else None
        if not isinstance(digest, str) or digest[:16] != bundle_id:
            return None
        return manifest

    def _complete(self, bundle_id: str) -> bool:
        return self._read_manifest(bundle_id) is not None

    def _local_copy(self, bundle_id: str, cache_dir: str | Path | None) -> Path:
        if self.local:
            return Path(self.bundle_path(bundle_id))
        cache = Path(cache_dir or Path(tempfile.gettempdir()) / "two-tower-bundles") / bundle_id
        if not (cache / MANIFEST).exists():
            partial = cache.with_name(f".{bundle_id}-{uuid.uuid4().hex}")
            self.fs.get(self.bundle_path(bundle_id) + "/", str(partial), recursive=True)
            if cache.exists():  # another reader finished first
                shutil.rmtree(partial)
            else:
                partial.rename(cache)
        return cache

    def _copy_content(self, staging: Path, temporary: str) -> None:
        """Every file of `staging` but its manifest into `temporary` (fsynced locally)."""
        self.fs.makedirs(temporary, exist_ok=True)
        for path in sorted(staging.rglob("*")):
            rel = path.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            if path.is_dir():
                self.fs.makedirs(f"{temporary}/{rel}", exist_ok=True)
            elif self.local:
                with path.open("rb") as src, open(f"{temporary}/{rel}", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            else:
                self.fs.put_file(str(path), f"{temporary}/{rel}")
            kill_point("publish.file_copied")

    def _rename_into_place(self, temporary: str, bundle_id: str) -> None:
        target = self.bundle_path(bundle_id)
        if os.path.exists(target):
            if self._complete(bundle_id):  # a concurrent publish of the same content won
                shutil.rmtree(temporary)
                return
            shutil.rmtree(target)  # an incomplete leftover: never listed, never pointed to
        try:
            os.rename(temporary, target)
        except OSError:
            if not self._complete(bundle_id):
                raise
            shutil.rmtree(temporary)  # renamed by a concurrent publish of the same content
        self._fsync_dir(f"{self.root}/bundles")

    @contextlib.contextmanager
    def _lock(self):
        """Exclusive registry lock (flock on `.lock`; released by the kernel if we die).

        Object stores have no such lock: there, promotion checks and writes without it.
        """
        if not self.local:
            yield
            return
        fd = os.open(f"{self.root}/{LOCK}", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _chain(self, pointer: dict) -> list[str]:
        """Bundles `rollback` restores, newest first, from the pointer itself."""
        if "chain" in pointer:
            return [check_bundle_id(b) for b in pointer["chain"]]
        # A pointer written before the chain existed: follow the history as far as it goes.
        entries, chain = self._history_lines(), []
        bundle_id = pointer.get("previous")
        while bundle_id and bundle_id not in chain and len(chain) < CHAIN_LIMIT:
            chain.append(check_bundle_id(bundle_id))
            made = [e for e in entries if e.get("bundle_id") == bundle_id]
            bundle_id = made[-1].get("previous") if made else None
        return chain

    def _commit(
        self, event: str, bundle_id: str, chain: list[str], reason: str, current: dict | None
    ) -> dict:
        """Swap in a new pointer and append its history line (caller holds the lock)."""
        entries = self._history_lines(repair=True)
        logged = {e.get("seq") for e in entries}
        if current and "seq" in current and current["seq"] not in logged:
            self._log(_record(current))  # the last writer died between swap and append
        seqs = [s for s in (*logged, (current or {}).get("seq")) if isinstance(s, int)]
        pointer = {
            "event": event,
            "bundle_id": bundle_id,
            "previous": chain[0] if chain else None,
            "chain": chain,
            "seq": max(seqs, default=0) + 1,
            "promoted_at": _now(),
            "reason": reason,
        }
        if event == "rollback":
            pointer["from"] = current["bundle_id"]
        self._swap(pointer)
        kill_point("swap.replaced")
        self._log(_record(pointer))
        kill_point("history.appended")
        return pointer

    def _swap(self, pointer: dict) -> None:
        data = json.dumps(pointer, indent=2).encode()
        path = f"{self.root}/{POINTER}"
        if not self.local:
            self.fs.pipe_file(path, data)  # one object write: atomic on object stores
            return
        temporary = f"{self.root}/{TMP_POINTER}{uuid.uuid4().hex}"
        try:
            self._write_file(temporary, data)
            kill_point("swap.temp_written")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._fsync_dir(self.root)

    def _write_file(self, path: str, data: bytes) -> None:
        """A new local file, fsynced, mode 0666 & ~umask like the bundles' files."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def _fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _history_lines(self, repair: bool = False) -> list[dict]:
        """history.jsonl's records; torn lines skipped (and with `repair`, a torn tail cut)."""
        path = f"{self.root}/{HISTORY}"
        if not self.fs.exists(path):
            return []
        raw = self.fs.cat_file(path)
        if repair and self.local and raw and not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            log.warning(
                "registry %s: cutting a torn last line from %s (%d bytes of a write cut short)",
                self.root, HISTORY, len(raw) - keep,
            )  # fmt: skip
            os.truncate(path, keep)
            raw = raw[:keep]
        entries = []
        for number, line in enumerate(raw.decode(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                log.warning(
                    "registry %s: skipping unreadable line %d of %s (a write cut short)",
                    self.root, number, HISTORY,
                )  # fmt: skip
        return entries

    def _log(self, entry: dict) -> None:
        path = f"{self.root}/{HISTORY}"
        line = (json.dumps(entry) + "\n").encode()
        if self.local:
            # One write() on O_APPEND: a whole line or, if we die inside it, a torn tail that
            # the next writer cuts.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                kill_point("history.torn", fd, line[: len(line) // 2])
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            old = self.fs.cat_file(path) if self.fs.exists(path) else b""
            self.fs.pipe_file(path, old + line)

    def _last_modified(self, path: str) -> float:
        """Newest modification time under `path` (a file or a directory tree)."""
        if self.local:
            root = Path(path)
            return max(p.stat().st_mtime for p in [root, *root.rglob("*")])
        infos = [self.fs.info(path), *self.fs.find(path, withdirs=True, detail=True).values()]
        times = []
        for info in infos:
            for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
                value = info.get(key)
                if isinstance(value, dt.datetime):
                    times.append(value.timestamp())
                    break
                if isinstance(value, int | float):
                    times.append(float(value))
                    break
        return max(times, default=time.time())
