"""Content-addressed bundles under `bundles/`: publish, read, verify, fetch, remove.

The manifest names the bundle's content hash and its files. On a local disk a bundle is copied
under a hidden temporary name, its manifest written last and the directory renamed into place:
a bundle with a manifest naming its own content hash is complete. Object stores have no rename
(`mv` is copy-then-delete), so there the files are uploaded straight to `bundles/<id>/`, the
upload is listed and hashed, and the manifest is written last, only if the upload matches; a
bundle there is complete when its manifest names its own content hash and the objects under
it are exactly the files the manifest lists. Anything else under `bundles/` is debris of a
killed or failed publish: never listed, never fetched, re-uploaded by a retried publish,
removed by the registry's `gc`.
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

from pipelines.errors import BundleIntegrityError, PipelineError
from pipelines.faults import kill_point
from pipelines.formats.store import WriteConflict, write_if
from pipelines.registry.files import RegistryFiles
from pipelines.registry.integrity import (
    content_hash,
    file_list,
    remote_content_hash,
    remote_file_list,
    verify_bundle_dir,
)
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
        self._hashed: set[str] = set()  # remote bundles with legacy manifests, hash verified

    def publish(self, staging: str | Path, manifest: dict) -> str:
        """Copy a complete local bundle directory into the registry; returns its id.

        `manifest` is stored with `bundle_id`, `content_hash` and `files` (every file's
        relative path) added, written after every other file. Publishing the same content twice
        returns the existing complete bundle; an incomplete one (a killed or failed publish,
        files lost since) is uploaded again. A failed publish removes what it copied; debris of
        a killed one is hidden and never blocks a retry.

        Raises:
            PipelineError: `staging` changed while it was copied, or the uploaded files do not
                list or hash as `staging` did.
            OSError: the copy failed (e.g. disk full); nothing is left behind.
        """
        staging = Path(staging)
        digest, files = content_hash(staging), file_list(staging)
        bundle_id = digest[:16]
        if self.complete(bundle_id):
            return bundle_id
        manifest = {**manifest, "bundle_id": bundle_id, "content_hash": digest, "files": files}
        data = json.dumps(manifest, indent=2, default=str).encode()
        if self.files.local:
            self._publish_local(staging, bundle_id, digest, data)
        else:
            self._publish_remote(staging, bundle_id, digest, files, data)
        kill_point("publish.renamed")
        return bundle_id

    def _publish_local(self, staging: Path, bundle_id: str, digest: str, data: bytes) -> None:
        temporary = self.layout.temporary_bundle()
        try:
            self._copy_content(staging, temporary)
            kill_point("publish.content_copied")
            if content_hash(temporary) != digest:
                raise PipelineError(
                    f"bundle {staging} changed while it was published; publish it again"
                )
            self.files.write_new_file(manifest_in(temporary), data)
            kill_point("publish.manifest_written")
            self._rename_into_place(temporary, bundle_id)
        except BaseException:
            with contextlib.suppress(OSError):
                shutil.rmtree(temporary)
            raise

    def _publish_remote(
        self, staging: Path, bundle_id: str, digest: str, files: list[str], data: bytes
    ) -> None:
        """Upload into `bundles/<id>/`, check the listing and the hash, write the manifest."""
        fs, target = self.files.fs, self.layout.bundle(bundle_id)
        manifest_path = manifest_in(target)
        # A manifest over files that do not match it (the old copy-then-delete failure, files
        # lost since): drop it first, so the bundle stays incomplete until the upload checks.
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(manifest_path)
        try:
            self._copy_content(staging, target)
            uploaded = remote_file_list(fs, target)
            for rel in sorted(set(uploaded) - set(files)):  # not this content's: debris
                fs.rm_file(f"{target}/{rel}")
            kill_point("publish.content_copied")
            uploaded = remote_file_list(fs, target)
            if uploaded != files:
                missing = sorted(set(files) - set(uploaded))
                raise PipelineError(
                    f"registry {self.layout.root}: bundle {bundle_id} was uploaded, but the "
                    f"store lists {len(uploaded)} of its {len(files)} files (missing: "
                    f"{', '.join(missing[:5]) or 'none'}); nothing was published. Publish it "
                    "again (another process may have removed it meanwhile: `gc`, `prune`)"
                )
            uploaded_hash = remote_content_hash(fs, target)
            if uploaded_hash != digest:
                raise PipelineError(
                    f"registry {self.layout.root}: bundle {bundle_id} was uploaded, but the "
                    f"uploaded files hash to {uploaded_hash[:16]}…, not {digest[:16]}… (did "
                    f"{staging} change while it was published?); nothing was published. "
                    "Publish it again"
                )
            try:
                write_if(fs, manifest_path, data, None)  # the manifest last: now complete
            except WriteConflict:  # a concurrent publish of the same content finished first
                if not self.complete(bundle_id):
                    raise
            kill_point("publish.manifest_written")
        except BaseException:
            if not self.complete(bundle_id):
                with contextlib.suppress(OSError):
                    fs.rm(target, recursive=True)
            raise

    def read_manifest(self, bundle_id: str) -> dict | None:
        """The manifest of a complete bundle; None if absent, torn or not this bundle's, or (on
        an object store) if the objects under the bundle are not the files it lists."""
        try:
            manifest = json.loads(self.files.fs.cat_file(self.layout.bundle_manifest(bundle_id)))
        except (FileNotFoundError, ValueError):
            return None
        digest = manifest.get("content_hash") if isinstance(manifest, dict) else None
        if not isinstance(digest, str) or digest[:16] != bundle_id:
            return None
        if not self.files.local and not self._uploaded(bundle_id, manifest):
            return None
        return manifest

    def _uploaded(self, bundle_id: str, manifest: dict) -> bool:
        """On an object store: the objects under the bundle are exactly its manifest's files.

        A manifest from before file lists were recorded is checked by its content hash
        instead (once per process): on object stores such a manifest was no complete marker.
        """
        target = self.layout.bundle(bundle_id)
        files = manifest.get("files")
        if isinstance(files, list):
            return remote_file_list(self.files.fs, target) == files
        if bundle_id not in self._hashed:
            if remote_content_hash(self.files.fs, target) != manifest["content_hash"]:
                return False
            self._hashed.add(bundle_id)
        return True

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
        for path in self.files.listing(self.layout.bundles):
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
        return self.stored_hash(bundle_id) == self.manifest(bundle_id)["content_hash"]

    def stored_hash(self, bundle_id: str) -> str:
        """The content hash of the bundle's files as the registry holds them now (on an object
        store the objects themselves, streamed, not a cached copy)."""
        if self.files.local:
            return content_hash(self.layout.bundle(bundle_id))
        return remote_content_hash(self.files.fs, self.layout.bundle(bundle_id))

    def fetch(self, bundle_id: str, cache_dir: str | Path | None = None) -> Path:
        """A local directory with the bundle (the registry's own on local disk, else a copy
        under `cache_dir`), its files checked against the manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            BundleIntegrityError: the files do not match the manifest (not loaded).
        """
        expected = self.manifest(bundle_id)["content_hash"]
        local = self._local_copy(bundle_id, cache_dir)
        if self.files.local:
            verify_bundle_dir(local, expected)
            return local
        if content_hash(local) != expected:
            shutil.rmtree(local, ignore_errors=True)  # a damaged cached copy: fetch afresh
            local = self._local_copy(bundle_id, cache_dir)
            actual = content_hash(local)
            if actual != expected:
                shutil.rmtree(local, ignore_errors=True)  # never leave it for a later reader
                raise BundleIntegrityError(
                    f"registry {self.layout.root}: bundle {bundle_id}: its files hash to "
                    f"{actual[:16]}… but its manifest says {expected[:16]}…, so they changed "
                    "after publishing. Not loading it (loading runs the bundle's SavedModel "
                    "graph). Roll back or promote another bundle, and check who can write to "
                    "the registry."
                )
        return local

    def remove(self, bundle_id: str) -> None:
        self.files.fs.rm(self.layout.bundle(bundle_id), recursive=True)

    def debris(self, protected: set) -> list[tuple[str, str]]:
        """Temporary copies and incomplete bundles not in `protected`: `(entry, path)` pairs,
        `entry` relative to the registry root."""
        out = []
        for path in self.files.listing(self.layout.bundles):
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
        """Every file of `staging` but its manifest into `temporary` (fsynced locally; on an
        object store `temporary` is the bundle's own directory)."""
        fs = self.files.fs
        if self.files.local:
            fs.makedirs(temporary, exist_ok=True)
        for path in sorted(staging.rglob("*")):
            rel = path.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            if path.is_dir():
                if self.files.local:  # object stores have no directories
                    fs.makedirs(f"{temporary}/{rel}", exist_ok=True)
                continue
            if self.files.local:
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
