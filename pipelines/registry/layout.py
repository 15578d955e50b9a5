"""Every path under `<artifact_root>/registry/` (a local path or any fsspec URL).

    bundles/<bundle_id>/          a complete bundle: its files plus `manifest.json`
    bundles/.tmp-<uuid>/          a bundle being copied (debris if its writer died)
    production.json               the production pointer
    .production-<uuid>            a pointer being written (debris if its writer died)
    history.jsonl                 one line per promotion / rollback (local disks)
    history/<seq>.json            one object per promotion / rollback (object stores)
    .lock                         exclusive lock for promote, rollback, prune and gc

Paths are strings joined with "/" so that the same layout serves fsspec URLs and local disks.
"""

from __future__ import annotations

import dataclasses
import re
import uuid

from pipelines.errors import PipelineError

MANIFEST = "manifest.json"
BUNDLES = "bundles"
POINTER = "production.json"
HISTORY = "history.jsonl"
HISTORY_RECORDS = "history"
_RECORD = re.compile(r"(\d{10})\.json")
LOCK = ".lock"
TMP_BUNDLE = ".tmp-"
TMP_POINTER = ".production-"
BUNDLE_ID = re.compile(r"[0-9a-f]{16}")


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


def is_bundle_id(name: str) -> bool:
    """True if `name` (a directory name under `bundles/`) is a bundle id."""
    return bool(BUNDLE_ID.fullmatch(name))


def basename(path: str) -> str:
    """The last component of a path as `fs.ls` returns it (with or without a trailing "/")."""
    return path.rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class RegistryLayout:
    """The paths of one registry.

    Attributes:
        root: the registry directory, `<artifact_root>/registry`, in the filesystem's own
            spelling (what `fsspec.core.url_to_fs` returns for the artifact root, plus
            `/registry`).
    """

    root: str

    @classmethod
    def under(cls, artifact_root: str) -> RegistryLayout:
        """The layout of the registry in `artifact_root` (a filesystem path, not a URL)."""
        return cls(artifact_root.rstrip("/") + "/registry")

    @property
    def bundles(self) -> str:
        return f"{self.root}/{BUNDLES}"

    @property
    def pointer(self) -> str:
        return f"{self.root}/{POINTER}"

    @property
    def history(self) -> str:
        return f"{self.root}/{HISTORY}"

    @property
    def history_records(self) -> str:
        return f"{self.root}/{HISTORY_RECORDS}"

    def history_record(self, seq: int) -> str:
        """The object of one history record on an object store (zero-padded: names sort by
        `seq`)."""
        return f"{self.history_records}/{int(seq):010d}.json"

    @property
    def lock(self) -> str:
        return f"{self.root}/{LOCK}"

    def bundle(self, bundle_id: str) -> str:
        """Where a bundle lives. Raises PipelineError for anything but a bundle id."""
        return f"{self.bundles}/{check_bundle_id(bundle_id)}"

    def bundle_manifest(self, bundle_id: str) -> str:
        return manifest_in(self.bundle(bundle_id))

    def temporary_bundle(self) -> str:
        """A fresh hidden directory name to copy a bundle into before it is complete."""
        return f"{self.bundles}/{TMP_BUNDLE}{uuid.uuid4().hex}"

    def temporary_pointer(self) -> str:
        """A fresh hidden file name to write the next pointer into before the swap."""
        return f"{self.root}/{TMP_POINTER}{uuid.uuid4().hex}"

    @staticmethod
    def bundle_entry(name: str) -> str:
        """A name under `bundles/` relative to the registry root, as `gc` reports it."""
        return f"{BUNDLES}/{name}"


def history_record_seq(name: str) -> int | None:
    """The `seq` of a history record's object name (`0000000012.json`), None for anything else."""
    match = _RECORD.fullmatch(name)
    return int(match.group(1)) if match else None


def manifest_in(directory: str) -> str:
    """The manifest path of a bundle directory (in the registry, being copied, or fetched)."""
    return f"{directory}/{MANIFEST}"
