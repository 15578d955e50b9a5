"""Content-addressed bundles under `bundles/`: publish, read, verify, fetch, remove.

A bundle is copied under a hidden temporary name, `manifest.json` is written last and (on a
local disk) the directory renamed into place, so a bundle with a manifest naming its own
content hash is complete. Anything else under `bundles/` is debris of a killed or failed
publish: never listed, never fetched, removed by the registry's `gc`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from pipelines.errors import PipelineError
from pipelines.faults import kill_point
from pipelines.registry.files import RegistryFiles
from pipelines.registry.integrity import content_hash, verify_bundle_dir
from pipelines.registry.layout import (
    MANIFEST,
    TMP_BUNDLE,
    RegistryLayout,
    basename,
    is_bundle_id,
    manifest_in,
)

log = logging.getLogger(__name__)

# Where `fetch` copies bundles of a remote registry when the caller names no cache.
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "two-tower-bundles"


class BundleStore:
    """The bundles of one registry."""

    def __init__(self, files: RegistryFiles, layout: RegistryLayout):
        self.files = files
        self.layout = layout

    def publish(self, staging: str | Path, manifest: dict) -> str:
        """Copy a complete local bundle directory into the registry; returns its id.

        `manifest` is stored with `bundle_id` and `content_hash` added, written after every
        other file. Publishing the same content twice returns the existing bundle. A failed
        publish removes its temporary copy; debris of a killed one is hidden and never blocks
        a retry.

        Raises:
            PipelineError: `staging` changed while it was copied.
            OSError: the copy failed (e.g. disk full); nothing is left behind.
        """
        fs, staging = self.files.fs, Path(staging)
        digest = content_hash(staging)
        bundle_id = digest[:16]
        if self.complete(bundle_id):
            return bundle_id
        manifest = {**manifest, "bundle_id": bundle_id, "content_hash": digest}
        data = json.dumps(manifest, indent=2, default=str).encode()
        temporary = self.layout.temporary_bundle()
        target = self.layout.bundle(bundle_id)
        try:
            self._copy_content(staging, temporary)
            kill_point("publish.content_copied")
            if self.files.local:
                if content_hash(temporary) != digest:
                    raise PipelineError(
                        f"bundle {staging} changed while it was published; publish it again"
                    )
                self.files.write_new_file(manifest_in(temporary), data)
                kill_point("publish.manifest_written")
                self._rename_into_place(temporary, bundle_id)
            else:
                # No atomic directory rename on object stores: the manifest goes last instead.
                if fs.exists(target):
                    fs.rm(target, recursive=True)  # incomplete leftover
                fs.mv(temporary, target, recursive=True)
                fs.pipe_file(manifest_in(target), data)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.rm(temporary, recursive=True)
            raise
        kill_point("publish.renamed")
        return bundle_id

    def read_manifest(self, bundle_id: str) -> dict | None:
        """The manifest of a complete bundle; None if absent, torn or not this bundle's."""
        try:
            manifest = json.loads(self.files.fs.cat_file(self.layout.bundle_manifest(bundle_id)))
        except (FileNotFoundError, ValueError):
            return None
        digest = manifest.get("content_hash") if isinstance(manifest, dict) else None
        if not isinstance(digest, str) or digest[:16] != bundle_id:
            return None
        return manifest

    def manifest(self, bundle_id: str) -> dict:
        """A complete bundle's manifest.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
        """
        manifest = self.read_manifest(bundle_id)
        if manifest is None:
            raise PipelineError(
                f"registry {self.layout.root}: no complete bundle {bundle_id!r}; "
                "`two-tower registry list` shows the bundles there are"
            )
        return manifest

    def complete(self, bundle_id: str) -> bool:
        return self.read_manifest(bundle_id) is not None

    def manifests(self) -> dict[str, dict]:
        """Every complete bundle's manifest, by bundle id (in listing order)."""
        out = {}
        for path in self.files.fs.ls(self.layout.bundles, detail=False):
            name = basename(path)
            manifest = self.read_manifest(name) if is_bundle_id(name) else None
            if manifest is not None:
                out[name] = manifest
        return out

    def verify(self, bundle_id: str) -> bool:
        """True if the bundle's files in the registry still hash to its manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
        """
        expected = self.manifest(bundle_id)["content_hash"]
        if self.files.local:
            return content_hash(self.layout.bundle(bundle_id)) == expected
        with tempfile.TemporaryDirectory() as fresh:  # the registry's files, not a cached copy
            return content_hash(self._local_copy(bundle_id, fresh)) == expected

    def fetch(self, bundle_id: str, cache_dir: str | Path | None = None) -> Path:
        """A local directory with the bundle (the registry's own on local disk, else a copy
        under `cache_dir`), its files checked against the manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            BundleIntegrityError: the files do not match the manifest (not loaded).
        """
        expected = self.manifest(bundle_id)["content_hash"]
        local = self._local_copy(bundle_id, cache_dir)
        if not self.files.local and content_hash(local) != expected:
            shutil.rmtree(local, ignore_errors=True)  # a damaged cached copy: fetch afresh
            local = self._local_copy(bundle_id, cache_dir)
        verify_bundle_dir(local, expected)
        return local

    def remove(self, bundle_id: str) -> None:
        self.files.fs.rm(self.layout.bundle(bundle_id), recursive=True)

    def debris(self, protected: set) -> list[tuple[str, str]]:
        """Temporary copies and incomplete bundles not in `protected`: `(entry, path)` pairs,
        `entry` relative to the registry root."""
        out = []
        for path in self.files.fs.ls(self.layout.bundles, detail=False):
            name = basename(path)
            if name.startswith(TMP_BUNDLE) or (
                is_bundle_id(name) and name not in protected and not self.complete(name)
            ):
                out.append((self.layout.bundle_entry(name), path))
        return out

    def _local_copy(self, bundle_id: str, cache_dir: str | Path | None) -> Path:
        if self.files.local:
            return Path(self.layout.bundle(bundle_id))
        cache = Path(cache_dir or DEFAULT_CACHE) / bundle_id
        if not (cache / MANIFEST).exists():
            partial = cache.with_name(f".{bundle_id}-{uuid.uuid4().hex}")
            self.files.fs.get(self.layout.bundle(bundle_id) + "/", str(partial), recursive=True)
            if cache.exists():  # another reader finished first
                shutil.rmtree(partial)
            else:
                partial.rename(cache)
        return cache

    def _copy_content(self, staging: Path, temporary: str) -> None:
        """Every file of `staging` but its manifest into `temporary` (fsynced locally)."""
        fs = self.files.fs
        fs.makedirs(temporary, exist_ok=True)
        for path in sorted(staging.rglob("*")):
            rel = path.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            if path.is_dir():
                fs.makedirs(f"{temporary}/{rel}", exist_ok=True)
            elif self.files.local:
                with path.open("rb") as src, open(f"{temporary}/{rel}", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            else:
                fs.put_file(str(path), f"{temporary}/{rel}")
            kill_point("publish.file_copied")

    def _rename_into_place(self, temporary: str, bundle_id: str) -> None:
        target = self.layout.bundle(bundle_id)
        if os.path.exists(target):
            if self.complete(bundle_id):  # a concurrent publish of the same content won
                shutil.rmtree(temporary)
                return
            shutil.rmtree(target)  # an incomplete leftover: never listed, never pointed to
        try:
            os.rename(temporary, target)
        except OSError:
            if not self.complete(bundle_id):
                raise
            shutil.rmtree(temporary)  # renamed by a concurrent publish of the same content
        self.files.fsync_dir(self.layout.bundles)
