"""The data window of one feature run and its temporal split.

    history_start <= window_start < eval_start < window_end      (UTC epoch seconds)

Train examples are the interactions in [window_start, eval_start); eval queries are the users
active in [eval_start, window_end). Histories only ever look at events strictly before the
moment they describe, back to history_start.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from pipelines.config import FeaturesConfig
from pipelines.errors import ConfigError
from pipelines.schema import DAY_SECONDS as DAY
from pipelines.schema import epoch_seconds


@dataclasses.dataclass(frozen=True)
class FeatureWindow:
    """Window boundaries in epoch seconds (UTC)."""

    history_start: int
    window_start: int
    eval_start: int
    window_end: int

    def __post_init__(self):
        if not self.history_start <= self.window_start < self.eval_start < self.window_end:
            raise ConfigError(
                "feature window must satisfy history_start <= window_start < eval_start < "
                f"window_end, got {self.describe()}"
            )

    def describe(self) -> dict[str, str]:
        """ISO strings of the four boundaries (for manifests and messages)."""
        return {
            name: pd.Timestamp(value, unit="s", tz="UTC").isoformat()
            for name, value in dataclasses.asdict(self).items()
        }


def resolve_window(
    timestamps: np.ndarray,
    cfg: FeaturesConfig,
    *,
    window_start: pd.Timestamp | None = None,
    eval_start: pd.Timestamp | None = None,
    window_end: pd.Timestamp | None = None,
) -> FeatureWindow:
    """Pick the window from explicit boundaries, else from the config and the data.

    Defaults: the window ends at the UTC midnight after the last event and starts
    `window_days` earlier (or at the first event's midnight); the eval period is the last
    `eval_days` days, or starts at the UTC midnight before the timestamp that leaves
    `eval_fraction` of the window's events after it.

    Args:
        timestamps: int64 epoch seconds `[n]` of every interaction in the source.
        cfg: the features config.

    Raises:
        ConfigError: no interactions, or boundaries that leave an empty split.
    """
    if len(timestamps) == 0:
        raise ConfigError("cannot choose a feature window: the source has no interactions")
    seconds = epoch_seconds
    end = (
        seconds(window_end) if window_end is not None else (int(timestamps.max()) // DAY + 1) * DAY
    )
    if window_start is not None:
        start = seconds(window_start)
    elif cfg.window_days is not None:
        start = end - cfg.window_days * DAY
    else:
        start = int(timestamps.min()) // DAY * DAY
    if eval_start is not None:
        split = seconds(eval_start)
    elif cfg.eval_days is not None:
        split = end - cfg.eval_days * DAY
    else:
        inside = timestamps[(timestamps >= start) & (timestamps < end)]
        if len(inside) == 0:
            raise ConfigError(f"no interactions inside the window [{start}, {end})")
        cut = int(np.quantile(inside, 1.0 - cfg.eval_fraction, method="lower"))
        split = cut // DAY * DAY
        if split <= start:  # data spans a single day: split inside it rather than fail
            split = cut
    return FeatureWindow(history_start=start, window_start=start, eval_start=split, window_end=end)
