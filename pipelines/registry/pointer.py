"""The production pointer (`production.json`) and its history (`history.jsonl`).

The pointer is `{"event", "bundle_id", "previous", "chain", "seq", "promoted_at", "reason",
"user", "airflow_run_id"}` (plus `"from"` after a rollback): `chain` lists the bundles rollback
restores, newest first, and `seq` numbers the pointer's versions; `user` is who made the change
(an Airflow user's name, or `os:<login>` for the account that ran the CLI; None for the DAG's
own promotions unless it names one) and `airflow_run_id` the Airflow DAG run that made it, as
Airflow spells it (None outside Airflow); older pointers and history lines lack these two.

The pointer is replaced in one step: on a local disk by `os.replace` under the registry lock;
on an object store by a conditional write of the one object (`write_if`: it lands only if the
pointer is still the version the caller read, so of two concurrent promoters exactly one wins
and the other gets `WriteConflict`). Every version gets one history record, written after the
swap, so a writer killed in between leaves a pointer whose `seq` the history lacks: `history()`
shows it meanwhile and the next commit writes it.

The history is `history.jsonl` on a local disk (one `O_APPEND` write per line, under the lock).
Object stores cannot append, so there every record is its own object, `history/<seq>.json`,
created only if absent: the pointer's compare-and-swap makes each `seq` one version, so
records never overwrite each other and two writers of a missing record write the same one. A
`history.jsonl` on an object store (written before) is read first, merged by `seq`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from pathlib import Path

from pipelines.faults import kill_point
from pipelines.formats.store import WriteConflict, read_versioned, write_if
from pipelines.registry.files import RegistryFiles
from pipelines.registry.layout import (
    HISTORY,
    TMP_POINTER,
    RegistryLayout,
    basename,
    check_bundle_id,
    history_record_seq,
)

log = logging.getLogger(__name__)

CHAIN_LIMIT = 32  # rollback depth kept in the pointer (prune keeps far fewer bundles anyway)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _record(pointer: dict) -> dict:
    """The history line of a pointer: the pointer without its chain."""
    return {k: v for k, v in pointer.items() if k != "chain"}


class ProductionPointer:
    """Reads and replaces one registry's production pointer; keeps its history."""

    def __init__(self, files: RegistryFiles, layout: RegistryLayout):
        self.files = files
        self.layout = layout

    def read(self) -> dict | None:
        """The current pointer, or None before the first promotion."""
        return self.read_versioned()[0]

    def read_versioned(self) -> tuple[dict | None, object]:
        """The current pointer (None before the first promotion) and the token of that version
        for `commit` (`pipelines.formats.store.read_versioned`; None on a local disk, where the
        registry lock orders writers)."""
        fs, path = self.files.fs, self.layout.pointer
        if self.files.local:
            return (json.loads(fs.cat_file(path)) if fs.exists(path) else None), None
        data, token = read_versioned(fs, path)
        return (json.loads(data) if data is not None else None), token

    def chain(self, pointer: dict) -> list[str]:
        """Bundles `rollback` restores, newest first, from the pointer itself."""
        if "chain" in pointer:
            return [check_bundle_id(b) for b in pointer["chain"]]
        # A pointer without a chain: follow the history as far as it goes.
        entries, chain = self._entries(), []
        bundle_id = pointer.get("previous")
        while bundle_id and bundle_id not in chain and len(chain) < CHAIN_LIMIT:
            chain.append(check_bundle_id(bundle_id))
            made = [e for e in entries if e.get("bundle_id") == bundle_id]
            bundle_id = made[-1].get("previous") if made else None
        return chain

    def history(self) -> list[dict]:
        """Promotions and rollbacks, oldest first, the current pointer's record included.

        A torn line (a writer killed mid-append) is skipped with a warning.
        """
        entries = self._entries()
        pointer = self.read()
        if (
            pointer
            and "seq" in pointer
            and not any(e.get("seq") == pointer["seq"] for e in entries)
        ):
            entries.append(_record(pointer))  # its writer died before appending it
        return entries

    def commit(
        self,
        event: str,
        bundle_id: str,
        chain: list[str],
        reason: str,
        current: dict | None,
        *,
        token: object = None,
        user: str | None = None,
        airflow_run_id: str | None = None,
    ) -> dict:
        """Swap in a new pointer and record it in the history (on a local disk the caller
        holds the registry lock; on an object store the swap is conditional on `token`).

        Args:
            event: "promote" or "rollback".
            bundle_id: the bundle production names from now on.
            chain: what rollback restores after this, newest first.
            reason: recorded in the pointer and the history.
            current: the pointer being replaced (None: no production yet).
            token: on an object store, the version of `current` (`read_versioned`).
            user: who made the change (recorded).
            airflow_run_id: the Airflow DAG run that made it (recorded).

        Returns:
            The new pointer.

        Raises:
            WriteConflict: on an object store, the pointer is no longer `current` (another
                process swapped it first); nothing was written.
        """
        logged = self._logged_seqs()
        if current and "seq" in current and current["seq"] not in logged:
            self._append(_record(current))  # the last writer died between swap and append
        seqs = [s for s in (*logged, (current or {}).get("seq")) if isinstance(s, int)]
        pointer = {
            "event": event,
            "bundle_id": bundle_id,
            "previous": chain[0] if chain else None,
            "chain": chain,
            "seq": max(seqs, default=0) + 1,
            "promoted_at": _now(),
            "reason": reason,
            "user": user,
            "airflow_run_id": airflow_run_id,
        }
        if event == "rollback":
            pointer["from"] = current["bundle_id"]
        self._swap(pointer, token)
        kill_point("swap.replaced")
        self._append(_record(pointer))
        kill_point("history.appended")
        return pointer

    def debris(self) -> list[tuple[str, str]]:
        """Temporary pointers of killed or failed swaps: `(name, path)` pairs."""
        return [
            (basename(path), path)
            for path in self.files.listing(self.layout.root)
            if basename(path).startswith(TMP_POINTER)
        ]

    def _swap(self, pointer: dict, token: object) -> None:
        data = json.dumps(pointer, indent=2).encode()
        path = self.layout.pointer
        if not self.files.local:
            write_if(self.files.fs, path, data, token)  # one object, compare-and-swap
            return
        temporary = self.layout.temporary_pointer()
        try:
            self.files.write_new_file(temporary, data)
            kill_point("swap.temp_written")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.files.fsync_dir(self.layout.root)

    def _entries(self, repair: bool = False) -> list[dict]:
        """Every history record, oldest first: history.jsonl's lines, then (on object stores)
        the `history/` records it lacks."""
        entries = self._history_lines(repair)
        if self.files.local:
            return entries
        logged = {e.get("seq") for e in entries}
        wanted = [path for seq, path in self._records() if seq not in logged]
        found = {}
        if wanted:
            with contextlib.suppress(FileNotFoundError):
                found = self.files.fs.cat(wanted, on_error="omit")  # concurrent GETs on S3/GCS
        for path in wanted:
            try:
                entries.append(json.loads(found[path]))
            except KeyError:  # removed since listed
                continue
            except ValueError:  # written in one request: only someone else's edit tears it
                log.warning("registry %s: skipping unreadable history record %s",
                            self.layout.root, path)  # fmt: skip
        return entries

    def _records(self) -> list[tuple[int, str]]:
        """`(seq, path)` of the `history/` records on an object store, by seq."""
        out = []
        for path in self.files.listing(self.layout.history_records):
            seq = history_record_seq(basename(path))
            if seq is not None:
                out.append((seq, path))
        return sorted(out)

    def _logged_seqs(self) -> set:
        """The `seq`s the history holds (on an object store from the listing alone)."""
        seqs = {e.get("seq") for e in self._history_lines(repair=True)}
        if not self.files.local:
            seqs |= {seq for seq, _ in self._records()}
        return seqs

    def _history_lines(self, repair: bool = False) -> list[dict]:
        """history.jsonl's records; torn lines skipped (and with `repair`, a torn tail cut)."""
        fs, path = self.files.fs, self.layout.history
        try:
            raw = fs.cat_file(path)
        except FileNotFoundError:
            return []
        if repair and self.files.local and raw and not raw.endswith(b"\n"):
            keep = raw.rfind(b"\n") + 1
            log.warning(
                "registry %s: cutting a torn last line from %s (%d bytes of a write cut short)",
                self.layout.root, HISTORY, len(raw) - keep,
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
                    self.layout.root, number, HISTORY,
                )  # fmt: skip
        return entries

    def _append(self, entry: dict) -> None:
        fs, path = self.files.fs, self.layout.history
        line = (json.dumps(entry) + "\n").encode()
        if self.files.local:
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
            record = self.layout.history_record(entry["seq"])
            try:
                write_if(fs, record, json.dumps(entry, indent=2).encode(), None)
            except WriteConflict:
                pass  # written by another process: each seq is one pointer version
