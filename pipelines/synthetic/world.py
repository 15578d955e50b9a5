"""A synthetic recommendation world whose true preferences are known.

Users belong to taste clusters; their categorical features (age bucket, country, device) are
drawn from cluster-specific distributions, so features carry taste signal. Items get latent
vectors built from their genres and title tokens (content predicts the latent) plus noise, a
Zipf popularity, and arrival days: a share of the catalog arrives during the simulation.

Interactions are sampled day by day from

    p(i | u, t) ∝ exp(<w_u, v_i> + beta * log_pop_i + fresh_i(t))   over items available at t,

with a weekly volume rhythm and a daily hour-of-day rhythm. Sampling is exact and cheap:
items are proposed from the user's *cluster* distribution (one CDF per cluster and day) and
accepted with probability exp(<eps_u, v_i> - |eps_u|), the user's own deviation (rejection
sampling, valid since |v_i| = 1). Memory is bounded by one day of events plus the CDFs.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from pipelines.contract import GENRE_SEPARATOR
from pipelines.synthetic.presets import Preset, TruthParams
from pipelines.synthetic.truth import item_logit_bias

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "SciFi",
    "Thriller",
    "War",
    "Western",
    "Noir",
)
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "MX", "ES", "CA", "PL", "KR")
DEVICES = ("android", "ios", "web")
# Relative activity by hour of day (UTC) and day of week (Monday first).
HOURLY = np.array(
    [2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 13, 12, 8, 4], float
)
WEEKLY = np.array([0.92, 0.90, 0.93, 0.97, 1.05, 1.13, 1.10])
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ven",
    "tor",
    "sil",
    "bri",
    "dun",
    "mar",
    "el",
    "os",
    "qui",
    "zan",
    "pe",
    "ru",
    "tha",
    "gor",
    "ne",
    "lys",
    "fa",
    "cor",
    "di",
    "wen",
    "ab",
    "hul",
    "ix",
    "mo",
    "sta",
    "bel",
)


@dataclasses.dataclass
class World:
    """Every true parameter of the world, indexed by user / item position.

    Attributes:
        user_vectors: float32 `[U, D]`, w_u (not normalized: cluster part / temperature + eps_u).
        user_cluster: int32 `[U]`.
        user_join_day: int32 `[U]` (negative = before the simulation).
        user_activity: float64 `[U]`, relative event rate.
        user_features: DataFrame with `age_bucket`, `country`, `device` per user.
        cluster_vectors: float32 `[C, D]`, m_c / temperature.
        item_vectors: float32 `[I, D]`, unit-norm v_i.
        item_log_popularity: float32 `[I]`, Zipf log popularity (before beta).
        item_arrival_day: int32 `[I]` (negative = before the simulation).
        item_genre_matrix: bool `[I, G]` genre membership.
        item_token_slots: int32 `[I, 4]` title token indices, -1 = no token.
        token_names: `[T]` title vocabulary.
    """

    preset: Preset
    params: TruthParams
    seed: int
    days: int
    user_vectors: np.ndarray
    user_cluster: np.ndarray
    user_join_day: np.ndarray
    user_activity: np.ndarray
    user_features: pd.DataFrame
    cluster_vectors: np.ndarray
    item_vectors: np.ndarray
    item_log_popularity: np.ndarray
    item_arrival_day: np.ndarray
    item_genre_matrix: np.ndarray
    item_token_slots: np.ndarray
    token_names: list[str]

    @property
    def n_users(self) -> int:
        return len(self.user_vectors)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    @functools.cached_property
    def user_ids(self) -> np.ndarray:
        """`[U]` string ids, position = user index."""
        return user_id_strings(np.arange(self.n_users))

    @functools.cached_property
    def item_ids(self) -> np.ndarray:
        """`[I]` string ids, position = item index."""
        return item_id_strings(np.arange(self.n_items))

    def item_logit_bias(self, day: int) -> np.ndarray:
        """Popularity + freshness part of the true logit on `day`, float64 `[I]`; -inf if unavailable."""
        p = self.params
        return item_logit_bias(
            self.item_log_popularity,
            self.item_arrival_day,
            day,
            popularity_beta=p.popularity_beta,
            fresh_boost=p.fresh_boost,
            fresh_decay_days=p.fresh_decay_days,
        )


def user_id_strings(index: np.ndarray) -> np.ndarray:
    """User ids for user indices: 12 -> "u0000012"."""
    return np.char.add("u", np.char.zfill(np.asarray(index).astype(str), 7))


def item_id_strings(index: np.ndarray) -> np.ndarray:
    """Item ids for item indices: 12 -> "i0000012"."""
    return np.char.add("i", np.char.zfill(np.asarray(index).astype(str), 7))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def build_world(
    preset: Preset, seed: int, days: int | None = None, params: TruthParams | None = None
) -> World:
    """Draw every true parameter of a world. Deterministic for (preset, seed, days, params).

    Args:
        preset: sizes.
        seed: random seed.
        days: simulated days (default `preset.days`); catalog and users grow at preset rates.
        params: true preference model knobs (default `TruthParams()`).
    """
    params = params or TruthParams()
    days = days or preset.days
    rng = np.random.default_rng([seed, 0])
    d, n_genres = preset.dim, len(GENRES)

    genre_vectors = _unit(rng.normal(size=(n_genres, d)))
    token_home = rng.integers(-1, n_genres, size=preset.title_tokens)  # -1 = generic token
    token_vectors = np.where(
        (token_home >= 0)[:, None],
        _unit(
            genre_vectors[np.maximum(token_home, 0)]
            + 0.8 * _unit(rng.normal(size=(preset.title_tokens, d)))
        ),
        _unit(rng.normal(size=(preset.title_tokens, d))),
    )
    token_names = _token_names(preset.title_tokens, rng)

    # Items: arrival days, genres, title tokens, latent vectors, popularity.
    n_initial_items = int(round(preset.items * preset.initial_item_share))
    n_items = n_initial_items + int(round(preset.new_items_per_day * days))
    arrival = np.concatenate(
        [
            -rng.integers(1, 731, size=n_initial_items),
            np.sort(rng.integers(0, days, size=n_items - n_initial_items)),
        ]
    ).astype(np.int32)
    genre_share = rng.dirichlet(np.full(n_genres, 1.5))
    primary = rng.choice(n_genres, size=n_items, p=genre_share)
    # Up to two extra genres; a repeat of the primary simply adds nothing.
    extra = rng.integers(n_genres, size=(n_items, 2))
    n_extra = rng.choice(3, size=n_items, p=[0.45, 0.4, 0.15])
    genre_matrix = np.zeros((n_items, n_genres), dtype=bool)
    genre_matrix[np.arange(n_items), primary] = True
    for slot in range(2):
        has = n_extra > slot
        genre_matrix[np.flatnonzero(has), extra[has, slot]] = True
    # Title: 2-4 tokens, each from the primary genre's pool (60%) or the generic pool.
    by_home = np.argsort(token_home, kind="stable")
    home_sorted = token_home[by_home]
    pool_start = np.searchsorted(home_sorted, np.arange(-1, n_genres))
    pool_size = np.searchsorted(home_sorted, np.arange(-1, n_genres), side="right") - pool_start
    n_title = rng.integers(2, 5, size=n_items)
    use_home = (rng.random((n_items, 4)) < 0.6) & (pool_size[primary + 1] > 0)[:, None]
    pool = np.where(use_home, primary[:, None] + 1, 0)
    slot_pick = pool_start[pool] + (rng.random((n_items, 4)) * pool_size[pool]).astype(np.int64)
    item_token_slots = np.where(np.arange(4)[None, :] < n_title[:, None], by_home[slot_pick], -1)
    token_mean = np.zeros((n_items, d))
    for slot in range(4):
        valid = item_token_slots[:, slot] >= 0
        token_mean[valid] += token_vectors[item_token_slots[valid, slot]]
    token_mean /= n_title[:, None]
    genre_mean = _unit(genre_matrix.astype(np.float64) @ genre_vectors)
    item_vectors = (
        params.genre_weight * genre_mean
        + params.token_weight * token_mean
        + params.item_noise * _unit(rng.normal(size=(n_items, d)))
    )
    item_vectors = _unit(item_vectors).astype(np.float32)
    rank = rng.permutation(n_items) + 1
    item_log_popularity = (-params.zipf_alpha * np.log(rank)).astype(np.float32)

    # Users: clusters with favourite genres, features drawn per cluster, activity, join days.
    n_initial_users = int(round(preset.users * preset.initial_user_share))
    n_users = n_initial_users + int(round(preset.new_users_per_day * days))
    favourite = np.stack(
        [rng.choice(n_genres, size=2, replace=False) for _ in range(preset.clusters)]
    )
    cluster_dirs = _unit(
        genre_vectors[favourite].sum(axis=1) + 0.7 * _unit(rng.normal(size=(preset.clusters, d)))
    )
    cluster_vectors = (cluster_dirs / params.cluster_temperature).astype(np.float32)
    cluster_share = rng.dirichlet(np.full(preset.clusters, 2.0))
    user_cluster = rng.choice(preset.clusters, size=n_users, p=cluster_share).astype(np.int32)
    eps = rng.normal(size=(n_users, d)) * (params.individual_scale / np.sqrt(d))
    user_vectors = (cluster_vectors[user_cluster] + eps).astype(np.float32)
    user_activity = rng.lognormal(0.0, 1.0, size=n_users)
    user_join_day = np.concatenate(
        [
            -rng.integers(1, 366, size=n_initial_users),
            np.sort(rng.integers(0, days, size=n_users - n_initial_users)),
        ]
    ).astype(np.int32)
    features = {}
    for name, values in (("age_bucket", AGE_BUCKETS), ("country", COUNTRIES), ("device", DEVICES)):
        per_cluster = rng.dirichlet(np.full(len(values), 0.6), size=preset.clusters)
        draws = _sample_rows(per_cluster[user_cluster], rng)
        features[name] = np.asarray(values)[draws]

    return World(
        preset=preset,
        params=params,
        seed=seed,
        days=days,
        user_vectors=user_vectors,
        user_cluster=user_cluster,
        user_join_day=user_join_day,
        user_activity=user_activity,
        user_features=pd.DataFrame(features),
        cluster_vectors=cluster_vectors,
        item_vectors=item_vectors,
        item_log_popularity=item_log_popularity,
        item_arrival_day=arrival,
        item_genre_matrix=genre_matrix,
        item_token_slots=item_token_slots.astype(np.int32),
        token_names=token_names,
    )


def simulate_day(world: World, day: int, start: pd.Timestamp) -> pd.DataFrame:
    """Sample one day of interactions, sorted by timestamp.

    Args:
        world: the world.
        day: day index (0 = `start`).
        start: UTC midnight of day 0.

    Returns:
        DataFrame `user_id, item_id, timestamp (UTC), event, weight` for that day.
    """
    rng = np.random.default_rng([world.seed, 1, day])
    p = world.params
    date = start + pd.Timedelta(days=day)
    volume = world.preset.events_per_day * WEEKLY[date.day_of_week] * rng.lognormal(0.0, 0.03)
    n_events = int(round(volume))

    active = np.flatnonzero(world.user_join_day <= day)
    weights = world.user_activity[active]
    users = active[rng.choice(len(active), size=n_events, p=weights / weights.sum())]
    items = np.empty(n_events, dtype=np.int64)

    bias = world.item_logit_bias(day)
    available = np.flatnonzero(np.isfinite(bias))
    v_avail = world.item_vectors[available]
    clusters = world.user_cluster[users]
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        logits = v_avail @ world.cluster_vectors[c] + bias[available]
        cdf = np.cumsum(np.exp(logits - logits.max()))
        cdf /= cdf[-1]
        eps = world.user_vectors[users[rows]] - world.cluster_vectors[c]
        eps_norm = np.linalg.norm(eps, axis=1)
        pending = np.arange(len(rows))
        while len(pending):
            draws = np.minimum(
                np.searchsorted(cdf, rng.random(len(pending)), side="right"), len(available) - 1
            )
            cand = available[draws]
            score = np.einsum("nd,nd->n", eps[pending], world.item_vectors[cand])
            accept = rng.random(len(pending)) < np.exp(score - eps_norm[pending])
            items[rows[pending[accept]]] = cand[accept]
            pending = pending[~accept]

    hours = _sample_rows(np.broadcast_to(HOURLY / HOURLY.sum(), (1, 24)), rng, n=n_events)
    seconds = hours * 3600 + rng.integers(0, 3600, size=n_events)
    # Users who join today act only after midnight of their join day (true for any second).
    purchase = rng.random(n_events) < p.purchase_share
    frame = pd.DataFrame(
        {
            "user_id": world.user_ids[users],
            "item_id": world.item_ids[items],
            "timestamp": (date + pd.to_timedelta(seconds, unit="s")).as_unit("us"),
            "event": np.where(purchase, "purchase", "click"),
            "weight": np.where(purchase, 3.0, 1.0),
        }
    )
    return frame.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(
        drop=True
    )


def items_frame(world: World, start: pd.Timestamp) -> pd.DataFrame:
    """The catalog in contract form: `item_id, title, genres, created_at`."""
    names = world.token_names
    titles = [
        " ".join(dict.fromkeys(names[t] for t in slots if t >= 0))
        for slots in world.item_token_slots.tolist()
    ]
    genre_names = np.asarray(GENRES)
    genres = [GENRE_SEPARATOR.join(genre_names[row]) for row in world.item_genre_matrix]
    created = start + pd.to_timedelta(world.item_arrival_day.astype(np.int64), unit="D")
    return pd.DataFrame(
        {
            "item_id": world.item_ids,
            "title": titles,
            "genres": genres,
            "created_at": pd.DatetimeIndex(created).as_unit("us"),
        }
    )


def users_frame(world: World) -> pd.DataFrame:
    """Users in contract form: `user_id` + categorical features."""
    out = world.user_features.copy()
    out.insert(0, "user_id", world.user_ids)
    return out


def _sample_rows(probs: np.ndarray, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """One categorical draw per row of `probs` `[N, K]` (or `n` draws from a single row)."""
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    n_draws = len(probs) if n is None else n
    u = rng.random(n_draws)
    if len(probs) == 1:
        return np.searchsorted(cdf[0], u, side="right").clip(max=probs.shape[1] - 1)
    return (u[:, None] >= cdf).sum(axis=1).clip(max=probs.shape[1] - 1)


def _token_names(n: int, rng: np.random.Generator) -> list[str]:
    names, seen = [], set()
    while len(names) < n:
        k = rng.integers(2, 4)
        word = "".join(_SYLLABLES[j] for j in rng.integers(len(_SYLLABLES), size=k)).capitalize()
        if word in seen:
            word = f"{word}{len(names)}"
        seen.add(word)
        names.append(word)
    return names
