"""Content hashes of bundle directories, and the check run before anything loads a bundle.

A bundle id is the first 16 hex digits of its content hash, so the same content is one bundle;
loading a bundle runs its SavedModel graph, so only files that still hash to what was published
are loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from fsspec import AbstractFileSystem

from pipelines.errors import BundleIntegrityError
from pipelines.registry.layout import MANIFEST


def content_hash(directory: str | Path) -> str:
    """SHA-256 over every file's relative path and bytes, `manifest.json` excluded."""
    directory = Path(directory)
    return _hash(
        (path.relative_to(directory).as_posix(), path.open)
        for path in directory.rglob("*")
        if path.is_file()
    )


def file_list(directory: str | Path) -> list[str]:
    """A bundle directory's files, relative and sorted as `content_hash` reads them,
    `manifest.json` excluded."""
    directory = Path(directory)
    rels = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    return sorted((rel for rel in rels if rel != MANIFEST), key=_order)


def remote_file_list(fs: AbstractFileSystem, directory: str) -> list[str]:
    """`file_list` of a directory on an fsspec filesystem (listed afresh, never cached)."""
    prefix = directory.rstrip("/") + "/"
    rels = []
    for path in fs.find(directory):
        if not path.startswith(prefix):  # the store spells paths as `directory` does
            raise ValueError(f"{path} listed under {directory}")
        rel = path[len(prefix) :]
        if rel and not rel.endswith("/") and rel != MANIFEST:
            rels.append(rel)
    return sorted(rels, key=_order)


def remote_content_hash(fs: AbstractFileSystem, directory: str) -> str:
    """`content_hash` of a directory on an fsspec filesystem, streamed (nothing stored)."""
    prefix = directory.rstrip("/") + "/"
    return _hash(
        (rel, lambda mode, path=prefix + rel: fs.open(path, mode))
        for rel in remote_file_list(fs, directory)
    )


def _order(rel: str) -> list[str]:
    """How `content_hash` orders files: by path components (as `Path` sorts), not by string."""
    return rel.split("/")


def _hash(entries: Iterable[tuple[str, Callable]]) -> str:
    """SHA-256 over `(relative path, open)` pairs in `_order`, `manifest.json` skipped."""
    digest = hashlib.sha256()
    for rel, opener in sorted(entries, key=lambda entry: _order(entry[0])):
        if rel == MANIFEST:
            continue
        digest.update(rel.encode() + b"\0")
        with opener("rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
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
