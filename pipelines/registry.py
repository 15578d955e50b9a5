"""The bundle registry: content-addressed bundles and an atomically swapped production pointer.

Under `<artifact_root>/registry/` (a local path or any fsspec URL):

    bundles/<bundle_id>/      query_tower/, item_ids.txt, item_embeddings.npy, index/, vocab/,
                              serving_state.parquet, popular_items.txt, evaluation/,
                              manifest.json (config, data window, metrics, gate, code version,
                              parent bundle, content hash)
    production.json           {"bundle_id", "previous", "promoted_at", "reason"}
    history.jsonl             one line per promotion / rollback

A bundle id is the first 16 hex digits of the SHA-256 over its files (paths + contents, the
manifest excluded), so the same content is one bundle. A bundle is copied under a hidden
temporary name and renamed into place; the pointer is replaced in one step (`os.replace`
locally, a single-object write elsewhere) only after its bundle is complete, so a reader
following `production.json` never sees a half-written bundle, whenever the writer dies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import PipelineError

log = logging.getLogger(__name__)

POINTER = "production.json"
HISTORY = "history.jsonl"
MANIFEST = "manifest.json"


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


class Registry:
    """Bundles and the production pointer under `<root>/registry`."""

    def __init__(self, artifact_root: str | os.PathLike):
        self.fs, root = fsspec.core.url_to_fs(str(artifact_root))
        self.root = root.rstrip("/") + "/registry"
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(f"{self.root}/bundles", exist_ok=True)

    def bundle_path(self, bundle_id: str) -> str:
        return f"{self.root}/bundles/{bundle_id}"

    # -- bundles -------------------------------------------------------------------------------

    def publish(self, staging: str | Path, manifest: dict) -> str:
        """Copy a complete local bundle directory into the registry; returns its id.

        `manifest` is stored with `bundle_id` and `content_hash` added. Publishing the same
        content twice returns the existing bundle.
        """
        staging = Path(staging)
        digest = content_hash(staging)
        bundle_id = digest[:16]
        target = self.bundle_path(bundle_id)
        if self.fs.exists(f"{target}/{MANIFEST}"):
            return bundle_id
        manifest = {**manifest, "bundle_id": bundle_id, "content_hash": digest}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        temporary = f"{self.root}/bundles/.tmp-{uuid.uuid4().hex}"
        self.fs.put(str(staging), temporary, recursive=True)
        if self.fs.exists(target):  # a half-copied leftover with this id (never pointed to)
            self.fs.rm(target, recursive=True)
        self.fs.mv(temporary, target, recursive=True)
        log.info("registry: published bundle %s", bundle_id)
        return bundle_id

    def manifest(self, bundle_id: str) -> dict:
        path = f"{self.bundle_path(bundle_id)}/{MANIFEST}"
        if not self.fs.exists(path):
            raise PipelineError(f"registry {self.root}: no complete bundle {bundle_id!r}")
        return json.loads(self.fs.cat_file(path))

    def bundles(self) -> list[dict]:
        """Complete bundles, oldest first, each `{bundle_id, created_at, production, ...}`."""
        production = self.production()
        out = []
        for path in self.fs.ls(f"{self.root}/bundles", detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") or not self.fs.exists(f"{path}/{MANIFEST}"):
                continue
            meta = json.loads(self.fs.cat_file(f"{path}/{MANIFEST}"))
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
        local = self.fetch(bundle_id)
        return content_hash(local) == self.manifest(bundle_id)["content_hash"]

    def fetch(self, bundle_id: str, cache_dir: str | Path | None = None) -> Path:
        """A local directory with the bundle (the registry's own on local disk, else a copy)."""
        self.manifest(bundle_id)  # complete?
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

    # -- the production pointer --------------------------------------------------------------

    def pointer(self) -> dict | None:
        path = f"{self.root}/{POINTER}"
        return json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else None

    def production(self) -> str | None:
        pointer = self.pointer()
        return pointer["bundle_id"] if pointer else None

    def production_dir(self, cache_dir: str | Path | None = None) -> Path | None:
        bundle_id = self.production()
        return self.fetch(bundle_id, cache_dir) if bundle_id else None

    def promote(self, bundle_id: str, reason: str = "") -> dict:
        """Point production at a complete bundle (atomic), log it, prune old bundles."""
        self.manifest(bundle_id)
        current = self.pointer()
        if current and current["bundle_id"] == bundle_id:
            return current
        pointer = {
            "bundle_id": bundle_id,
            "previous": current["bundle_id"] if current else None,
            "promoted_at": _now(),
            "reason": reason,
        }
        self._swap(pointer)
        self._log({"event": "promote", **pointer})
        log.info("registry: production -> %s (was %s)", bundle_id, pointer["previous"])
        return pointer

    def rollback(self, reason: str = "rollback") -> dict:
        """Restore the bundle production pointed to before the current one.

        Raises:
            PipelineError: nothing to roll back to.
        """
        current = self.pointer()
        if not current or not current.get("previous"):
            raise PipelineError(f"registry {self.root}: no previous production bundle to restore")
        target = current["previous"]
        self.manifest(target)
        # The restored bundle's own predecessor: from the log entry that last made it current.
        before = None
        for entry in reversed(self.history()):
            if entry["bundle_id"] == target:
                before = entry.get("previous")
                break
        pointer = {"bundle_id": target, "previous": before, "promoted_at": _now(), "reason": reason}
        self._swap(pointer)
        self._log({"event": "rollback", "from": current["bundle_id"], **pointer})
        log.info("registry: rolled back %s -> %s", current["bundle_id"], target)
        return pointer

    def history(self) -> list[dict]:
        path = f"{self.root}/{HISTORY}"
        if not self.fs.exists(path):
            return []
        return [json.loads(line) for line in self.fs.cat_file(path).decode().splitlines() if line]

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` bundles, never production or its previous."""
        pointer = self.pointer() or {}
        protected = {pointer.get("bundle_id"), pointer.get("previous")}
        bundles = [b["bundle_id"] for b in self.bundles()]
        removable = [b for b in bundles[: max(0, len(bundles) - keep)] if b not in protected]
        for bundle_id in removable:
            self.fs.rm(self.bundle_path(bundle_id), recursive=True)
        return removable

    def _swap(self, pointer: dict) -> None:
        data = json.dumps(pointer, indent=2).encode()
        path = f"{self.root}/{POINTER}"
        if self.local:
            fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".production-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        else:
            self.fs.pipe_file(path, data)  # one object write: atomic on object stores

    def _log(self, entry: dict) -> None:
        path = f"{self.root}/{HISTORY}"
        line = (json.dumps(entry) + "\n").encode()
        if self.local:
            with open(path, "ab") as f:
                f.write(line)
        else:
            old = self.fs.cat_file(path) if self.fs.exists(path) else b""
            self.fs.pipe_file(path, old + line)
