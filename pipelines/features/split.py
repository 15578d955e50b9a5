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
it as data (`user_cuts.parquet`, `schema.UserCuts`) so `build_shard_examples` stays the
single implementation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from pipelines.config import FeaturesConfig
from pipelines.errors import ConfigError
from pipelines.features.window import FeatureWindow
from pipelines.formats import files
from pipelines.schema import UserCuts


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
    # Integer user codes from here on: string columns are slow to sort and group.
    codes, names = pd.factorize(np.asarray(user_ids, dtype=object)[inside], sort=True)
    names, t = np.asarray(names, dtype=object), t[inside]
    temporal = _temporal_queries(codes, t, len(names), window.eval_start)
    design, reason = _choose_design(codes, t, len(names), temporal, window, cfg)
    user_eval_cut = np.full(len(names), window.eval_start, dtype=np.int64)
    if design == "holdout":
        user_eval_cut = _cuts(codes, t, len(names), cfg.holdout_fraction)
        held = user_eval_cut < _NEVER
        if not held.any():
            raise ConfigError(
                "features.eval_design='holdout' needs users with interactions at two or more "
                f"distinct times inside the window {window.describe()}; none has: use 'temporal'"
            )
        window = dataclasses.replace(window, eval_start=int(user_eval_cut[held].min()))
        user_eval_cut[~held] = window.window_end
        queries = {"eval_queries": int(held.sum()), "warm": int(held.sum()), "cold": 0}
    else:
        held = np.zeros(len(names), dtype=bool)
        queries = {"eval_queries": temporal["eval"], "warm": temporal["warm"],
                    "cold": temporal["eval"] - temporal["warm"]}  # fmt: skip
    train = t < user_eval_cut[codes]
    train_end = _validation_cuts(codes[train], t[train], names, cfg)
    chosen = train_end < _NEVER
    listed = held | chosen
    default = window.window_end if design == "holdout" else window.eval_start
    table = pd.DataFrame(
        {"train_end": np.where(chosen, train_end, user_eval_cut)[listed],
         "eval_cut": user_eval_cut[listed]},
        index=pd.Index(names[listed], name="user_id"),
    )  # fmt: skip
    summary = {
        "design": design,
        "reason": reason,
        "warm_eval_queries": queries["warm"],
        "cold_eval_queries": queries["cold"],
        "eval_queries": queries["eval_queries"],
        "validation_queries": int(chosen.sum()),
        "holdout_fraction": cfg.holdout_fraction,
        "temporal_eval_queries": temporal["eval"],
        "temporal_warm_eval_queries": temporal["warm"],
    }
    return SplitPlan(design, window, UserCuts(int(default), table), summary)


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
    codes, names = pd.factorize(np.asarray(user_ids, dtype=object), sort=True)
    cut = _cuts(codes, np.asarray(timestamps, dtype=np.int64), len(names), fraction)
    keep = cut < _NEVER
    return pd.Series(cut[keep], index=pd.Index(np.asarray(names, dtype=object)[keep],
                                               name="user_id"))  # fmt: skip


_NEVER = np.iinfo(np.int64).max  # "no cut": the user cannot be held out


def _cuts(codes: np.ndarray, t: np.ndarray, users: int, fraction: float) -> np.ndarray:
    """`holdout_cuts` on integer user codes: int64 `[users]`, `_NEVER` where no cut exists."""
    order = np.lexsort((t, codes))
    codes, t = codes[order], t[order]
    n = np.bincount(codes, minlength=users)
    start = np.cumsum(n) - n
    cut = np.full(users, _NEVER)
    if len(t) == 0:
        return cut
    first = t[np.minimum(start, len(t) - 1)]
    later = np.flatnonzero(t > first[codes])  # rows after each user's first timestamp
    later_users = codes[later]
    head = np.r_[True, later_users[1:] != later_users[:-1]] if len(later) else later.astype(bool)
    second = np.full(users, _NEVER)  # each user's second distinct timestamp
    second[later_users[head]] = t[later[head]]
    k = np.clip(np.floor(fraction * n + 0.5).astype(np.int64), 1, np.maximum(n - 1, 1))
    eligible = second < _NEVER
    cut[eligible] = np.maximum(t[(start + n - k)[eligible]], second[eligible])
    return cut


def _validation_cuts(
    codes: np.ndarray, t: np.ndarray, names: np.ndarray, cfg: FeaturesConfig
) -> np.ndarray:
    """The validation users' cuts inside their training interactions: int64 `[users]`,
    `_NEVER` for users not drawn.

    Eligible users (training interactions at two or more distinct times) are ordered by a
    stable hash of their id; the first max(ceil(validation_user_fraction * eligible),
    min_validation_queries) of them, or all when fewer exist, hold out the last
    `holdout_fraction` of their training interactions (the `holdout_cuts` rule).
    """
    cut = _cuts(codes, t, len(names), cfg.holdout_fraction)
    eligible = np.flatnonzero(cut < _NEVER)
    wanted = max(math.ceil(cfg.validation_user_fraction * len(eligible)),
                 cfg.min_validation_queries)  # fmt: skip
    drawn = eligible[_hash_order(names[eligible])[:wanted]]
    out = np.full(len(names), _NEVER)
    out[drawn] = cut[drawn]
    return out


def validation_order(user_ids: np.ndarray) -> np.ndarray:
    """User ids ordered by a stable hash (ties by id): the order validation users are drawn in."""
    ids = np.asarray(user_ids, dtype=object)
    return ids[_hash_order(ids)]


def _hash_order(ids: np.ndarray) -> np.ndarray:
    hashed = pd.util.hash_array(np.array([f"valid:{u}" for u in ids], dtype=object))
    return np.lexsort((ids.astype(str), hashed))


def _temporal_queries(codes: np.ndarray, t: np.ndarray, users: int, eval_start: int) -> dict:
    in_eval = t >= eval_start
    evaluating = np.bincount(codes[in_eval], minlength=users) > 0
    training = np.bincount(codes[~in_eval], minlength=users) > 0
    return {"eval": int(evaluating.sum()), "warm": int((evaluating & training).sum())}


def _choose_design(
    codes: np.ndarray,
    t: np.ndarray,
    users: int,
    temporal: dict,
    window: FeatureWindow,
    cfg: FeaturesConfig,
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
    if not (_cuts(codes, t, users, cfg.holdout_fraction) < _NEVER).any():
        return "temporal", (
            f"temporal eval period {period} had {warm} warm queries < min_warm_eval_queries "
            f"{floor}, but no user has interactions at two distinct times to hold out: temporal"
        )
    return "holdout", (
        f"temporal eval period {period} had {warm} warm queries < min_warm_eval_queries "
        f"{floor}: {holdout}"
    )


def _day(seconds: int) -> str:
    return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()


def plan_split_from_snapshot(raw_dir: str, window: FeatureWindow, cfg: FeaturesConfig) -> SplitPlan:
    """`plan_split` on a snapshot directory's interactions (reads only user_id and timestamp)."""
    import pyarrow.dataset as ds

    table = ds.dataset(files.join(raw_dir, "interactions"), format="parquet").to_table(
        columns=["user_id", "timestamp"]
    )
    return plan_split(
        table.column("user_id").to_numpy(zero_copy_only=False),
        table.column("timestamp").to_numpy(),
        window,
        cfg,
    )
