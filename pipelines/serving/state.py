"""Reading a served directory's user state: one Parquet file per user shard, loaded on demand.

    serving_state/state.json                 shards, files, users, longest history (written last)
    serving_state/part-SSSSS-of-NNNNN.parquet  the users of shard S (the feature job's
                                             `records.user_shard`), sorted by user_id
    serving_state.parquet                    bundles built before the state was sharded: every
                                             user in one file, read as a single shard

Each row: `user_id`, `history_item_ids` and `history_timestamps` (the last H events before the
data window's end, most recent first), `seen_item_ids` (sorted) and the `user_<column>` features.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.errors import PipelineError
from pipelines.features.records import user_shard
from pipelines.schema import HISTORY_ITEM_IDS, USER_ID

STATE_DIR = "serving_state"
STATE_META = "state.json"
STATE_FILE = "serving_state.parquet"  # the single-file state of older bundles
POPULAR_FILE = "popular_items.txt"
STATE_FORMAT = 1
CACHE_BYTES = 1 << 30  # shards a ServingState keeps in memory, in Arrow bytes
_PART = re.compile(r"part-\d{5}-of-\d{5}\.parquet")


def part_name(shard: int, shards: int) -> str:
    """File name of one user shard's state: `part-SSSSS-of-NNNNN.parquet`."""
    return f"part-{shard:05d}-of-{shards:05d}.parquet"


class ServingState:
    """The user state of a served directory, read one user shard at a time.

    A lookup reads only the shards of the users asked for; the shards read last stay in memory
    up to `cache_bytes` (as Arrow tables: compact, converted to Python only for the rows
    returned; the shard in use is kept whatever its size).

    Args:
        directory: a served directory with `serving_state/` or an older `serving_state.parquet`.
        cache_bytes: Arrow bytes of the shards kept in memory.

    Raises:
        PipelineError: no state, or a `state.json` that does not describe its files.
    """

    def __init__(self, directory: str | Path, cache_bytes: int = CACHE_BYTES):
        self.directory = Path(directory)
        self.cache_bytes = int(cache_bytes)
        self._cache: collections.OrderedDict[int, tuple[pa.Table, np.ndarray]] = (
            collections.OrderedDict()
        )
        meta_path = self.directory / STATE_DIR / STATE_META
        if meta_path.is_file():
            self.shards, self.files, self.max_history = _read_meta(meta_path)
        elif (self.directory / STATE_FILE).is_file():
            self.shards, self.files = 1, [self.directory / STATE_FILE]
            table, _ = self._shard(0)
            lengths = pc.list_value_length(table.column(HISTORY_ITEM_IDS))
            self.max_history = int(pc.max(lengths).as_py() or 0)
        else:
            raise PipelineError(
                f"{self.directory}: no serving state ({STATE_DIR}/{STATE_META} or {STATE_FILE}); "
                "run `two-tower index` on the run that trained this model"
            )

    def lookup(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """The state rows of the known users among `user_ids`.

        Returns:
            A frame indexed by `user_id`, one row per known id in `user_ids` order (an id asked
            twice is there twice); unknown ids are left out. List columns hold numpy arrays,
            as `pd.read_parquet` gives them.
        """
        ids = np.asarray(list(user_ids), dtype=object)
        shard_of = user_shard(ids, self.shards) if self.shards > 1 else np.zeros(len(ids), np.int64)
        asked, found = [], []
        for shard in np.unique(shard_of).tolist():
            which = np.flatnonzero(shard_of == shard)
            table, names = self._shard(shard)
            pos = np.searchsorted(names, ids[which]).clip(max=max(len(names) - 1, 0))
            hit = (names[pos] == ids[which]) if len(names) else np.zeros(len(which), bool)
            asked.append(which[hit])
            found.append(table.take(pa.array(pos[hit], type=pa.int64())))
        if not found:
            return self._empty()
        order = np.argsort(np.concatenate(asked), kind="stable")
        rows = pa.concat_tables(found).take(pa.array(order, type=pa.int64())).to_pandas()
        return rows.set_index(USER_ID)

    def user_ids(self, limit: int | None = None) -> list[str]:
        """Known users, shard by shard (each shard in id order), at most `limit` of them; reads
        only the `user_id` column of the shards it needs."""
        out: list[str] = []
        for path in self.files:
            if limit is not None and len(out) >= limit:
                break
            out += pq.read_table(path, columns=[USER_ID]).column(USER_ID).to_pylist()
        return out if limit is None else out[:limit]

    @property
    def index(self) -> pd.Index:
        """Every known user id (the `index` of the whole-state frame callers used to get)."""
        return pd.Index(self.user_ids(), dtype=object, name=USER_ID)

    def _shard(self, shard: int) -> tuple[pa.Table, np.ndarray]:
        """One shard's table and its sorted user ids (object array), through the LRU cache."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        path = self.files[shard]
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise PipelineError(f"{path}: cannot read the serving state: {exc}") from exc
        names = np.asarray(table.column(USER_ID).to_pylist(), dtype=object)
        if len(names) > 1 and not (names[1:] > names[:-1]).all():  # older files: any order
            order = np.argsort(names, kind="stable")
            table, names = table.take(pa.array(order, type=pa.int64())), names[order]
        self._cache[shard] = (table, names)
        held = sum(t.nbytes for t, _ in self._cache.values())
        while held > self.cache_bytes and len(self._cache) > 1:
            _, (oldest, _) = self._cache.popitem(last=False)
            held -= oldest.nbytes
        return table, names

    def _empty(self) -> pd.DataFrame:
        table, _ = self._shard(0)
        return table.slice(0, 0).to_pandas().set_index(USER_ID)


def _read_meta(path: Path) -> tuple[int, list[Path], int]:
    """(shards, part paths in shard order, longest history) from a `state.json`."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        shards, names, longest = int(meta["shards"]), list(meta["files"]), int(meta["max_history"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(
            f"{path}: not a serving-state manifest ({type(exc).__name__}: {exc}); rebuild it "
            "with `two-tower index`"
        ) from None
    bad = [n for n in names if not isinstance(n, str) or not _PART.fullmatch(n)]
    if shards < 1 or len(names) != shards or bad:
        raise PipelineError(
            f"{path}: lists {len(names)} files for {shards} shards"
            + (f", {bad[0]!r} is not part-SSSSS-of-NNNNN.parquet" if bad else "")
            + "; rebuild it with `two-tower index`"
        )
    return shards, [path.parent / n for n in names], longest


def read_popular(directory: str | Path) -> list[str]:
    """The popularity fallback of a served directory, best first."""
    return (Path(directory) / POPULAR_FILE).read_text(encoding="utf-8").split()


def read_state(directory: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The whole user state (indexed by user_id, in shard order) and the popularity fallback.

    Every shard in memory at once: for tests and small directories; serving reads shards on
    demand through `ServingState`.
    """
    state = ServingState(directory, cache_bytes=0)
    frames = [pq.read_table(path).to_pandas() for path in state.files]
    return pd.concat(frames, ignore_index=True).set_index(USER_ID), read_popular(directory)
