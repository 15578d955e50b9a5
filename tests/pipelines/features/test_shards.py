"""`features.shards: null` (the default): the user shard count follows the snapshot's size."""

from __future__ import annotations

import pytest

from pipelines.config import FeaturesConfig, load_config
from pipelines.features.job import EVENTS_PER_SHARD, MIN_SHARDS, with_shards


@pytest.mark.parametrize(
    ("events", "shards"),
    [
        (0, MIN_SHARDS),
        (100_000, MIN_SHARDS),  # small
        (MIN_SHARDS * EVENTS_PER_SHARD, MIN_SHARDS),  # medium's 2M
        (MIN_SHARDS * EVENTS_PER_SHARD + 1, MIN_SHARDS + 1),
        (19_894_847, 80),  # large
        (10**12, 4096),  # the field's ceiling
    ],
)
def test_one_shard_per_quarter_million_events_at_least_eight(events, shards):
    assert with_shards(FeaturesConfig(), events).shards == shards


def test_a_configured_count_is_kept_whatever_the_size():
    assert with_shards(FeaturesConfig(shards=3), 19_894_847).shards == 3
    assert load_config(env={"TTR_FEATURES__SHARDS": "5"}).features.shards == 5
    assert load_config(env={}).features.shards is None
