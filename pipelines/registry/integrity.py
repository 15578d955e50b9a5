"""Content hashes of bundle directories, and the check run before anything loads a bundle.

A bundle id is the first 16 hex digits of its content hash, so the same content is one bundle;
loading a bundle runs its SavedModel graph, so only files that still hash to what was published
are loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipelines.errors import BundleIntegrityError
from pipelines.registry.layout import MANIFEST


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
