"""`Registry`: bundles and the production pointer of one artifact root, and the operations
that touch both (promote, rollback, prune, gc) under one exclusive lock.

Promotion is a compare-and-swap under the lock (`promote(..., expected=champion)`), and only
of a bundle whose files still hash to what was published; the pointer is replaced only after
its bundle is complete, so a reader following it never sees a half-written bundle, whenever
the writer dies. Object stores have no lock: there, promotion checks and writes without it.

Fault injection for the reliability tests: with `TTR_FAULT_KILL_AT=<point>` in the environment
the process SIGKILLs itself at that point (names in `FAULT_POINTS`); unset, it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from pipelines.errors import BundleIntegrityError, PipelineError, PromotionConflict
from pipelines.faults import kill_point
from pipelines.formats.store import WriteConflict, open_root
from pipelines.locks import exclusive_lock
from pipelines.registry.bundles import BundleStore
from pipelines.registry.files import RegistryFiles
from pipelines.registry.layout import RegistryLayout, check_bundle_id
from pipelines.registry.pointer import CHAIN_LIMIT, ProductionPointer

log = logging.getLogger(__name__)

FAULT_POINTS = (
    "publish.file_copied",  # the first file of the bundle copied
    "publish.content_copied",  # every file copied, no manifest yet
    "publish.manifest_written",  # manifest written, not renamed into place (local disks)
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

OS_USER_PREFIX = "os:"  # marks a `user` taken from the operating system, not from Airflow


def os_user() -> str:
    """The account running this process as a history `user`: `os:<login>` (`os:uid-<n>` when the
    login has no name, e.g. an arbitrary uid in a container), so a CLI change is never mistaken
    for one an Airflow user made through the UI."""
    import getpass

    try:
        return OS_USER_PREFIX + getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry for the uid
        return f"{OS_USER_PREFIX}uid-{os.getuid()}"


class Registry:
    """Bundles and the production pointer under `<artifact_root>/registry`.

    Attributes:
        fs: the fsspec filesystem of the artifact root.
        root: the registry directory on `fs`.
        local: True on a local disk (atomic renames, fsync and a lock file).
        layout: every path under `root`.

    On a local disk promote, rollback, prune and gc hold a lock file. Object stores have none:
    there the pointer is swapped with a conditional write, so of two concurrent promotions or
    rollbacks exactly one lands and the other raises `PromotionConflict` with production
    untouched (on a local disk the second waits for the lock and then checks `expected`).
    """

    def __init__(self, artifact_root: str | os.PathLike):
        fs, root = open_root(artifact_root)
        self.layout = RegistryLayout.under(root)
        self._files = RegistryFiles(fs)
        self.fs, self.root, self.local = fs, self.layout.root, self._files.local
        self._bundles = BundleStore(self._files, self.layout)
        self._pointer = ProductionPointer(self._files, self.layout)
        fs.makedirs(self.layout.bundles, exist_ok=True)

    def bundle_path(self, bundle_id: str) -> str:
        """Where a bundle lives. Raises PipelineError for anything but a bundle id."""
        return self.layout.bundle(bundle_id)

    # -- bundles -------------------------------------------------------------------------------

    def publish(self, staging: str | Path, manifest: dict) -> str:
        """Copy a complete local bundle directory into the registry; returns its id.

        `manifest` is stored with `bundle_id`, `content_hash` and `files` added, written after
        every other file (on object stores only once the uploaded files list and hash as
        `staging` does). Publishing the same content twice returns the existing complete
        bundle; an incomplete one is uploaded again. A failed publish removes what it copied;
        debris of a killed one is hidden and never blocks a retry (`gc` removes it).

        Raises:
            PipelineError: `staging` changed while it was copied, or the upload does not match.
            OSError: the copy failed (e.g. disk full); nothing is left behind.
        """
        bundle_id = self._bundles.publish(staging, manifest)
        log.info("registry: published bundle %s", bundle_id)
        return bundle_id

    def manifest(self, bundle_id: str) -> dict:
        """A complete bundle's manifest.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
        """
        return self._bundles.manifest(bundle_id)

    def bundles(self) -> list[dict]:
        """Complete bundles, oldest first, each `{bundle_id, created_at, production, ...}`."""
        production = self.production()
        out = [
            {
                "bundle_id": bundle_id,
                "created_at": meta.get("created_at", ""),
                "production": bundle_id == production,
                "parent": meta.get("parent_bundle"),
                "primary_metric": meta.get("primary_metric"),
                "primary_value": meta.get("primary_value"),
                "run_id": meta.get("run_id"),
            }
            for bundle_id, meta in self._bundles.manifests().items()
        ]
        return sorted(out, key=lambda b: b["created_at"])

    def verify(self, bundle_id: str) -> bool:
        """True if the bundle's files still hash to its manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
        """
        return self._bundles.verify(bundle_id)

    def fetch(self, bundle_id: str, cache_dir: str | Path | None = None) -> Path:
        """A local directory with the bundle (the registry's own on local disk, else a copy),
        its files checked against the manifest's content hash.

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            BundleIntegrityError: the files do not match the manifest (not loaded).
        """
        return self._bundles.fetch(bundle_id, cache_dir)

    # -- the production pointer --------------------------------------------------------------

    def pointer(self) -> dict | None:
        """The production pointer (see `pipelines.registry.pointer`), or None."""
        return self._pointer.read()

    def production(self) -> str | None:
        """The production bundle id, or None. Raises PipelineError if the pointer names no id."""
        pointer = self.pointer()
        return check_bundle_id(pointer["bundle_id"]) if pointer else None

    def production_dir(self, cache_dir: str | Path | None = None) -> Path | None:
        """The production bundle as a verified local directory (see `fetch`), or None."""
        bundle_id = self.production()
        return self.fetch(bundle_id, cache_dir) if bundle_id else None

    def promote(
        self,
        bundle_id: str,
        reason: str = "",
        expected=UNCHECKED,
        *,
        actor: str | None = None,
        airflow_run_id: str | None = None,
    ) -> dict:
        """Point production at a complete, intact bundle (atomic) and log it.

        Args:
            bundle_id: a complete bundle in this registry.
            reason: recorded in the pointer and the history.
            expected: compare-and-swap: the bundle id production must still name at swap time
                (None: no production yet); by default production is replaced whatever it is.
            actor: who promotes, recorded as the pointer's and the history line's `user`
                (an Airflow user's name; `os_user()` from the CLI).
            airflow_run_id: the Airflow DAG run promoting, as Airflow spells it (recorded).

        Returns:
            The new pointer (unchanged if `bundle_id` already is production).

        Raises:
            PipelineError: not a bundle id, or no complete bundle with that id.
            PromotionConflict: production is no longer `expected`, or (object stores) another
                process changed production while this one promoted; nothing changed.
            BundleIntegrityError: the bundle's files changed after publishing; nothing changed.
        """
        if expected is not UNCHECKED and expected is not None:
            check_bundle_id(expected)
        with self._lock():
            self.manifest(bundle_id)  # under the lock: prune and gc cannot remove it meanwhile
            kill_point("registry.locked")
            current, token = self._pointer.read_versioned()
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
            self._check_intact(bundle_id, "promoting")
            chain = [current_id, *self._pointer.chain(current)][:CHAIN_LIMIT] if current else []
            with self._swapping(f"promoting {bundle_id}", bundle_id, expected, current_id):
                pointer = self._pointer.commit(
                    "promote", bundle_id, chain, reason, current,
                    token=token, user=actor, airflow_run_id=airflow_run_id,
                )  # fmt: skip
        log.info("registry: production -> %s (was %s)", bundle_id, current_id)
        return pointer

    def rollback(self, reason: str = "rollback", *, actor: str | None = None) -> dict:
        """Restore the bundle production pointed to before the current one.

        Args:
            reason: recorded in the pointer and the history.
            actor: who rolls back, recorded as `user` (an Airflow user's name; `os_user()`
                from the CLI).

        Returns:
            The new pointer; its `from` is the bundle that was production until now.

        Raises:
            PipelineError: nothing to roll back to, or that bundle is gone (pruned).
            PromotionConflict: (object stores) another process changed production meanwhile;
                nothing changed.
            BundleIntegrityError: that bundle's files changed after publishing; nothing changed.
        """
        with self._lock():
            kill_point("registry.locked")
            current, token = self._pointer.read_versioned()
            chain = self._pointer.chain(current) if current else []
            if not chain:
                raise PipelineError(
                    f"registry {self.root}: no previous production bundle to restore"
                )
            target = chain[0]
            if not self._bundles.complete(target):
                raise PipelineError(
                    f"registry {self.root}: the previous production bundle {target} is gone "
                    "(pruned or incomplete); pick one from `two-tower registry list` and "
                    "`two-tower promote --bundle ID`"
                )
            self._check_intact(target, "restoring")
            with self._swapping(
                f"rolling back to {target}", target, current["bundle_id"], current["bundle_id"]
            ):
                pointer = self._pointer.commit(
                    "rollback", target, chain[1:], reason, current, token=token, user=actor
                )
        log.info("registry: rolled back %s -> %s", current["bundle_id"], target)
        return pointer

    def history(self) -> list[dict]:
        """Promotions and rollbacks, oldest first, the current pointer's record included.

        A torn line (a writer killed mid-append) is skipped with a warning.
        """
        return self._pointer.history()

    # -- housekeeping --------------------------------------------------------------------------

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` bundles, never production or its previous.

        On an object store (no lock) the pointer is read again before each removal, and a
        bundle another pruner removed first is skipped.
        """
        with self._lock():
            pointer = self.pointer() or {}
            protected = {pointer.get("bundle_id"), pointer.get("previous")}
            bundles = [b["bundle_id"] for b in self.bundles()]
            removable = [b for b in bundles[: max(0, len(bundles) - keep)] if b not in protected]
            removed = []
            for bundle_id in removable:
                if not self.local:  # a concurrent promote may have made it production since
                    pointer = self.pointer() or {}
                    if bundle_id in (pointer.get("bundle_id"), pointer.get("previous")):
                        continue
                try:
                    self._bundles.remove(bundle_id)
                except FileNotFoundError:
                    continue
                removed.append(bundle_id)
        return removed

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
            candidates = [*self._bundles.debris(protected), *self._pointer.debris()]
            now = time.time()
            for rel, path in sorted(candidates):
                try:
                    if now - self._files.last_modified(path) < older_than_s:
                        continue
                    self.fs.rm(path, recursive=True)
                except FileNotFoundError:  # a publish finished or cleaned up meanwhile
                    continue
                removed.append(rel)
        if removed:
            log.info("registry: gc removed %d leftovers: %s", len(removed), ", ".join(removed))
        return removed

    # -- internals ---------------------------------------------------------------------------

    def _check_intact(self, bundle_id: str, doing: str) -> None:
        """Refuse to point production at a bundle every reader would refuse to load."""
        expected = self.manifest(bundle_id)["content_hash"]
        actual = self._bundles.stored_hash(bundle_id)
        if actual != expected:
            raise BundleIntegrityError(
                f"registry {self.root}: not {doing} bundle {bundle_id}: its files no longer "
                f"hash to its manifest's content hash ({actual[:16]}…, manifest "
                f"{expected[:16]}…: they changed after publishing), so nothing could load it; "
                "production is unchanged. Publish the bundle again from its run, or promote "
                "another one from `two-tower registry list`."
            )

    @contextlib.contextmanager
    def _swapping(self, doing: str, bundle_id: str, expected, current_id: str | None):
        """Turn a lost compare-and-swap on the pointer into a `PromotionConflict` that says who
        changed production to what."""
        try:
            yield
        except WriteConflict:
            now = self.pointer() or {}
            raise PromotionConflict(
                f"registry {self.root}: not {doing}: production changed while {doing}: "
                f"{current_id or 'none'} -> {now.get('bundle_id') or 'none'} by "
                f"{now.get('user') or 'an unnamed process'} ({now.get('event', '?')}, "
                f"{now.get('reason') or 'no reason'}, {now.get('promoted_at', '?')}); "
                "production is as that process left it. Re-run to evaluate and gate against "
                f"the current production, or promote by hand with "
                f"`two-tower promote --bundle {bundle_id}`.",
                bundle_id=bundle_id,
                expected=current_id if expected is UNCHECKED else expected,
                current=now.get("bundle_id"),
            ) from None

    @contextlib.contextmanager
    def _lock(self):
        """The registry's exclusive lock (a lock file on local disks; none on object stores)."""
        if not self.local:
            yield
            return
        with exclusive_lock(self.layout.lock):
            yield
