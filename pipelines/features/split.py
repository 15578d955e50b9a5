"""The split plan of one feature run: which interactions train, validate and evaluate.

Every user's window interactions fall in three consecutive parts, cut at two timestamps:

    train       [window_start, train_end)   train examples
    validation  [train_end, eval_cut)       labels of the user's validation query (if any)
    eval        [eval_cut, window_end)      labels of the user's eval query (if any)

The eval design sets `eval_cut`:

- **temporal**: `eval_cut = eval_start` for everyone (eval = users active in the last period);
- **holdout**: every user with interactions at two or more distinct times holds out the last
  `holdout_fraction` of them (a per-user `eval_cut`); everyone else trains on all of theirs.
- **auto** picks temporal when its eval period holds at least `min_warm_eval_queries` warm
  queries (eval users with train-window interactions), else holdout: on sparse, long-horizon data
  the last period holds too few queries to decide anything.

Validation is always carved from the training part, never from the eval labels: a
deterministic subset of users (by a stable hash of their id) hold out the last
`holdout_fraction` of their training interactions (`train_end < eval_cut`). Training uses it for
early stopping and best-epoch selection.

A holdout cut is a timestamp: interactions sharing it all go to the later side, and the user
keeps at least one earlier interaction; users whose interactions all share one timestamp
cannot be cut. The plan is decided once, in pandas, before the feature job; the job reads
it as data (`user_cuts.parquet`) so `build_shard_examples` stays the single implementation.
"""

from __future__ import annotations

import dataclasses
import io as _io
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import FeaturesConfig
from pipelines.errors import ConfigError, PipelineError
from pipelines.features import io
from pipelines.features.window import FeatureWindow

CUTS_FILE = "user_cuts.parquet"
_DEFAULT_KEY = b"default_cut"


@dataclasses.dataclass(frozen=True)
class UserCuts:
    """Per-user split boundaries in epoch seconds.

    Attributes:
        default: `train_end` and `eval_cut` of every user not in `table` (temporal: eval_start;
            holdout: window_end, i.e. all of their window interactions train).
        table: indexed by `user_id` (str, sorted), int64 columns `train_end <= eval_cut`.
    """

    default: int
    table: pd.DataFrame

    @classmethod
    def uniform(cls, cut: int) -> UserCuts:
        """Every user cut at one timestamp, no validation (the plain temporal split)."""
        return cls(int(cut), _cut_table(pd.Series(dtype=np.int64), pd.Series(dtype=np.int64)))

    def lookup(self, user_ids) -> tuple[np.ndarray, np.ndarray]:
        """(train_end, eval_cut) of each user: two int64 arrays `[n]`."""
        index = pd.Index(np.asarray(user_ids, dtype=object))
        found = self.table.reindex(index)
        return (
            found["train_end"].fillna(self.default).to_numpy(np.int64),
            found["eval_cut"].fillna(self.default).to_numpy(np.int64),
        )

    def to_bytes(self) -> bytes:
        """Parquet bytes (`user_id, train_end, eval_cut`; `default` in the schema metadata)."""
        table = pa.Table.from_pandas(self.table.reset_index(), preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _DEFAULT_KEY: str(self.default).encode()}
        )
        buffer = _io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    @classmethod
    def read(cls, path: str) -> UserCuts:
        """Read a cuts file written by `to_bytes` (any Beam filesystem)."""
        table = pq.read_table(pa.BufferReader(io.read_bytes(path)))
        default = (table.schema.metadata or {}).get(_DEFAULT_KEY)
        if default is None:
            raise PipelineError(
                f"{path}: not a user-cuts file (no {_DEFAULT_KEY.decode()} in its Parquet "
                "metadata); rerun the feature step to rewrite it"
            )
        frame = table.to_pandas()
        return cls(int(default), _cut_table(
            frame.set_index("user_id")["train_end"], frame.set_index("user_id")["eval_cut"]
        ))  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The decided split of one run.

    Attributes:
        design: "temporal" or "holdout".
        window: the run's window; for holdout `eval_start` is the earliest held-out timestamp,
            so "trained past eval_start" stays a conservative test.
        cuts: the per-user boundaries.
        summary: the manifest's `split` section (design, reason, query counts, fraction).
    """

    design: str
    window: FeatureWindow
    cuts: UserCuts
    summary: dict


def plan_split(
    user_ids: np.ndarray, timestamps: np.ndarray, window: FeatureWindow, cfg: FeaturesConfig
) -> SplitPlan:
    """Decide the eval design and every user's cuts from all interactions of the source.

    Args:
        user_ids: str `[n]` user of each interaction.
        timestamps: int64 `[n]` epoch seconds of each interaction.
        window: the resolved window (its `eval_start` is the temporal design's).
        cfg: `eval_design`, `min_warm_eval_queries`, `holdout_fraction`,
            `validation_user_fraction`, `min_validation_queries`.

    Returns:
        The `SplitPlan`.

    Raises:
        ConfigError: `eval_design="holdout"` but no user has interactions at two distinct times.
    """
    t = np.asarray(timestamps, dtype=np.int64)
    inside = (t >= window.window_start) & (t < window.window_end)
    frame = pd.DataFrame({"user_id": np.asarray(user_ids, dtype=object)[inside], "t": t[inside]})
    temporal = _temporal_queries(frame, window.eval_start)
    design, reason = _choose_design(frame, temporal, window, cfg)
    if design == "holdout":
        eval_cut = holdout_cuts(frame["user_id"].to_numpy(), frame["t"].to_numpy(),
                                cfg.holdout_fraction)  # fmt: skip
        if eval_cut.empty:
            raise ConfigError(
                "features.eval_design='holdout' needs users with interactions at two or more "
                f"distinct times inside the window {window.describe()}; none has: use 'temporal'"
            )
        window = dataclasses.replace(window, eval_start=int(eval_cut.min()))
        default = window.window_end
        queries = {"eval_queries": len(eval_cut), "warm": len(eval_cut), "cold": 0}
    else:
        eval_cut = pd.Series(dtype=np.int64)
        default = window.eval_start
        queries = {"eval_queries": temporal["eval"], "warm": temporal["warm"],
                    "cold": temporal["eval"] - temporal["warm"]}  # fmt: skip
    user_eval_cut = frame["user_id"].map(eval_cut).fillna(default).to_numpy(np.int64)
    train = frame.loc[frame["t"].to_numpy() < user_eval_cut]
    train_end = validation_cuts(train["user_id"].to_numpy(), train["t"].to_numpy(), cfg)
    cuts = UserCuts(int(default), _cut_table(train_end, eval_cut, default))
    summary = {
        "design": design,
        "reason": reason,
        "warm_eval_queries": queries["warm"],
        "cold_eval_queries": queries["cold"],
        "eval_queries": queries["eval_queries"],
        "validation_queries": len(train_end),
        "holdout_fraction": cfg.holdout_fraction,
        "temporal_eval_queries": temporal["eval"],
        "temporal_warm_eval_queries": temporal["warm"],
    }
    return SplitPlan(design, window, cuts, summary)


def holdout_cuts(user_ids: np.ndarray, timestamps: np.ndarray, fraction: float) -> pd.Series:
    """Per user, the timestamp from which the last `fraction` of their interactions are held out.

    A user with n interactions holds out k = round(fraction * n), clipped to [1, n - 1], counted
    from the end; the cut is the k-th last interaction's timestamp, so ties with it go wholly to
    the held-out side. When that would leave nothing earlier (the first interaction shares the
    cut's timestamp) the cut moves to the user's second distinct timestamp.

    Args:
        user_ids: `[n]` user of each interaction; timestamps: int64 `[n]` epoch seconds.
        fraction: share held out, in (0, 1).

    Returns:
        int64 Series indexed by user_id (sorted): only users with two or more distinct times.
    """
    frame = pd.DataFrame({"user_id": np.asarray(user_ids, dtype=object),
                          "t": np.asarray(timestamps, dtype=np.int64)})  # fmt: skip
    frame = frame.sort_values(["user_id", "t"], kind="stable")
    t = frame["t"].to_numpy()
    codes, users = pd.factorize(frame["user_id"], sort=True)
    n = np.bincount(codes, minlength=len(users))
    start = np.cumsum(n) - n
    first = t[start]
    later = t > first[codes]
    never = np.iinfo(np.int64).max
    second = np.full(len(users), never)  # each user's second distinct timestamp
    np.minimum.at(second, codes[later], t[later])
    keep = second < never
    k = np.clip(np.floor(fraction * n + 0.5).astype(np.int64), 1, np.maximum(n - 1, 1))
    cut = np.maximum(t[start + n - k], second)
    return pd.Series(cut[keep], index=pd.Index(np.asarray(users)[keep], name="user_id"),
                     dtype=np.int64)  # fmt: skip


def validation_cuts(user_ids: np.ndarray, timestamps: np.ndarray, cfg: FeaturesConfig):
    """The validation users' cuts inside their training interactions.

    Eligible users (interactions at two or more distinct times) are ordered by a stable hash of
    their id; the first max(ceil(validation_user_fraction * eligible), min_validation_queries)
    of them, or all when fewer exist, hold out the last `holdout_fraction` of their training
    interactions (same cut rule as `holdout_cuts`).

    Returns:
        int64 Series `train_end` indexed by user_id (sorted), one row per validation user.
    """
    cuts = holdout_cuts(user_ids, timestamps, cfg.holdout_fraction)
    wanted = max(math.ceil(cfg.validation_user_fraction * len(cuts)), cfg.min_validation_queries)
    return cuts.loc[validation_order(cuts.index.to_numpy())[:wanted]].sort_index()


def validation_order(user_ids: np.ndarray) -> np.ndarray:
    """User ids ordered by a stable hash (ties by id): the order validation users are drawn in."""
    ids = np.asarray(user_ids, dtype=object)
    hashed = pd.util.hash_array(np.array([f"valid:{u}" for u in ids], dtype=object))
    return ids[np.lexsort((ids.astype(str), hashed))]


def _temporal_queries(frame: pd.DataFrame, eval_start: int) -> dict[str, int]:
    in_eval = frame["t"].to_numpy() >= eval_start
    eval_users = pd.unique(frame["user_id"].to_numpy()[in_eval])
    train_users = pd.unique(frame["user_id"].to_numpy()[~in_eval])
    return {"eval": len(eval_users), "warm": int(pd.Index(eval_users).isin(train_users).sum())}


def _choose_design(
    frame: pd.DataFrame, temporal: dict, window: FeatureWindow, cfg: FeaturesConfig
) -> tuple[str, str]:
    warm, floor = temporal["warm"], cfg.min_warm_eval_queries
    period = f"[{_day(window.eval_start)}, {_day(window.window_end)})"
    holdout = (
        f"per-user holdout of each user's last {cfg.holdout_fraction:.0%} interactions "
        "(users with interactions at two or more distinct times)"
    )
    if cfg.eval_design == "temporal":
        return "temporal", (
            f"features.eval_design='temporal': users active in {period} "
            f"({warm} warm of {temporal['eval']} queries)"
        )
    if cfg.eval_design == "holdout":
        return "holdout", f"features.eval_design='holdout': {holdout}"
    if warm >= floor:
        return "temporal", (
            f"temporal eval period {period} had {warm} warm queries >= min_warm_eval_queries "
            f"{floor}: users active in it"
        )
    if holdout_cuts(frame["user_id"].to_numpy(), frame["t"].to_numpy(), 0.5).empty:
        return "temporal", (
            f"temporal eval period {period} had {warm} warm queries < min_warm_eval_queries "
            f"{floor}, but no user has interactions at two distinct times to hold out: temporal"
        )
    return "holdout", (
        f"temporal eval period {period} had {warm} warm queries < min_warm_eval_queries "
        f"{floor}: {holdout}"
    )


def _cut_table(train_end: pd.Series, eval_cut: pd.Series, default: int = 0) -> pd.DataFrame:
    """Users with a cut of either kind; a missing eval_cut is `default`, a missing train_end is
    the user's eval_cut (no validation)."""
    users = train_end.index.union(eval_cut.index).astype(object)
    table = pd.DataFrame(index=pd.Index(users, name="user_id"))
    table["eval_cut"] = eval_cut.reindex(users).fillna(default).to_numpy(np.int64)
    table["train_end"] = train_end.reindex(users).fillna(table["eval_cut"]).to_numpy(np.int64)
    return table.sort_index()[["train_end", "eval_cut"]]


def _day(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def plan_split_from_snapshot(raw_dir: str, window: FeatureWindow, cfg: FeaturesConfig) -> SplitPlan:
    """`plan_split` on a snapshot directory's interactions (reads only user_id and timestamp)."""
    import pyarrow.dataset as ds

    table = ds.dataset(io.join(raw_dir, "interactions"), format="parquet").to_table(
        columns=["user_id", "timestamp"]
    )
    return plan_split(
        table.column("user_id").to_numpy(zero_copy_only=False),
        table.column("timestamp").to_numpy(),
        window,
        cfg,
    )
