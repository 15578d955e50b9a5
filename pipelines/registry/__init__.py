"""The bundle registry: content-addressed bundles and an atomically swapped production pointer.

Under `<artifact_root>/registry/` (a local path, file://, s3://, gs:// or memory:// URL; see
`pipelines.formats.store`; `layout` names every path):

    bundles/<bundle_id>/      query_tower/, item_ids.txt, item_embeddings.npy, index/, vocab/,
                              serving_state/ (one Parquet file per user shard + state.json), popular_items.txt, evaluation/,
                              manifest.json (config, data window, metrics, gate, code version,
                              parent bundle, content hash, file list), written last
    production.json           the pointer: {"bundle_id", "previous", "chain", "seq", "event",
                              "promoted_at", "reason", "user", "airflow_run_id"}; `chain`
                              lists the bundles rollback restores, newest first; `user` is
                              who changed it (`os:<login>` from the CLI)
    history.jsonl             one line per promotion / rollback (the pointer's own record;
                              local disks)
    history/<seq>.json        one object per promotion / rollback (object stores: no append)
    .lock                     exclusive lock for promote, rollback, prune and gc (local disks;
                              object stores swap the pointer with a conditional write instead)

Modules:
    layout      `RegistryLayout`: the paths above; bundle ids
    integrity   content hashes; the check run before a bundle is loaded
    files       the fsspec filesystem plus fsync on local disks
    bundles     `BundleStore`: publish (copy, manifest last, rename on local disks; upload in
                place, list and hash, manifest last on object stores), read, verify, fetch
    pointer     `ProductionPointer`: the pointer swap (compare-and-swap on object stores) and
                its history
    registry    `Registry`: the above plus promote / rollback / prune / gc under the lock
    version     `code_version`, recorded in bundle manifests
"""

from pipelines.errors import BundleIntegrityError, PromotionConflict
from pipelines.registry.integrity import content_hash, verify_bundle_dir
from pipelines.registry.layout import (
    MANIFEST,
    TMP_BUNDLE,
    TMP_POINTER,
    RegistryLayout,
    check_bundle_id,
)
from pipelines.registry.pointer import CHAIN_LIMIT
from pipelines.registry.registry import (
    FAULT_POINTS,
    OS_USER_PREFIX,
    UNCHECKED,
    Registry,
    os_user,
)
from pipelines.registry.version import code_version

__all__ = [
    "CHAIN_LIMIT",
    "FAULT_POINTS",
    "MANIFEST",
    "OS_USER_PREFIX",
    "TMP_BUNDLE",
    "TMP_POINTER",
    "UNCHECKED",
    "BundleIntegrityError",
    "PromotionConflict",
    "Registry",
    "RegistryLayout",
    "check_bundle_id",
    "code_version",
    "content_hash",
    "os_user",
    "verify_bundle_dir",
]
