"""Sizes and knobs of the synthetic world, one preset per scale."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """One world size. Counts are for `days` days; other day counts scale the daily rates.

    Attributes:
        users: users at the end of `days` days (a share join during the simulation).
        items: catalog size at the end of `days` days (a share arrive during the simulation).
        events: interactions over `days` days.
        days: default number of simulated days.
        clusters: taste clusters users are drawn from.
        title_tokens: size of the title vocabulary.
        dim: latent dimension of the true preference model.
    """

    name: str
    users: int
    items: int
    events: int
    days: int
    clusters: int
    title_tokens: int
    dim: int = 16
    initial_user_share: float = 0.85
    initial_item_share: float = 0.7

    @property
    def events_per_day(self) -> float:
        return self.events / self.days

    @property
    def new_items_per_day(self) -> float:
        return self.items * (1.0 - self.initial_item_share) / self.days

    @property
    def new_users_per_day(self) -> float:
        return self.users * (1.0 - self.initial_user_share) / self.days


PRESETS: dict[str, Preset] = {
    "small": Preset(
        "small", users=2_000, items=1_000, events=100_000, days=14, clusters=12, title_tokens=600
    ),
    "medium": Preset(
        "medium",
        users=50_000,
        items=20_000,
        events=2_000_000,
        days=28,
        clusters=24,
        title_tokens=4_000,
    ),
    "large": Preset(
        "large",
        users=200_000,
        items=1_000_000,
        events=20_000_000,
        days=28,
        clusters=48,
        title_tokens=30_000,
    ),
}


@dataclasses.dataclass(frozen=True)
class TruthParams:
    """The true preference model: logit(u, i, t) = <w_u, v_i> + beta * log_pop_i + fresh_i(t).

    w_u = m_c / cluster_temperature + eps_u, with |eps_u| about `individual_scale`;
    fresh_i(t) = fresh_boost * exp(-age_days / fresh_decay_days).
    """

    cluster_temperature: float = 0.15
    individual_scale: float = 1.5
    popularity_beta: float = 1.0
    zipf_alpha: float = 1.0
    fresh_boost: float = 2.0
    fresh_decay_days: float = 3.0
    genre_weight: float = 1.0
    token_weight: float = 0.6
    item_noise: float = 0.5
    purchase_share: float = 0.1
