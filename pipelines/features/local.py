"""The feature job in one process, without Beam: the reference the Beam job is measured against.

It calls the same job functions (`job.py`) as `beam_job.py` on the same snapshot files, shard
by shard, and writes byte-identical outputs; only the distribution of work differs.
"""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds

from pipelines.config import FeaturesConfig
from pipelines.features import job
from pipelines.features.beam_job import load_items, load_users, user_feature_names
from pipelines.features.records import user_shard
from pipelines.features.snapshot import EVENT_COLUMNS
from pipelines.features.split import SplitPlan, plan_split
from pipelines.features.window import FeatureWindow
from pipelines.formats import files


def read_events(raw_dir: str) -> pd.DataFrame:
    """Every snapshot interaction as one frame (snapshot columns)."""
    return (
        ds.dataset(files.join(raw_dir, "interactions"), format="parquet")
        .to_table(columns=EVENT_COLUMNS)
        .to_pandas()
    )


def run_local(
    raw_dir: str,
    out: str,
    window: FeatureWindow,
    cfg: FeaturesConfig,
    plan: SplitPlan | None = None,
) -> dict:
    """Run the feature job in this process and return the manifest it wrote.

    Args:
        window: the resolved window (used to plan the split when `plan` is None).
        plan: the split plan (`split.plan_split`); None = plan it here from the snapshot.
    """
    files.makedirs(out)
    for split in job.SPLITS:
        files.makedirs(files.join(out, split))
    events = read_events(raw_dir)
    cfg = job.with_shards(cfg, len(events))
    if plan is None:
        plan = plan_split(events["user_id"].to_numpy(), events["timestamp"].to_numpy(), window, cfg)
    window, cuts = plan.window, plan.cuts
    split_summary = job.write_user_cuts(out, plan)
    users = load_users(raw_dir)
    shard = user_shard(events["user_id"].to_numpy(), cfg.shards)
    summaries = [
        job.process_shard(int(s), group, users, window, cfg, out, cuts)
        for s, group in events.groupby(shard, sort=True)
    ]
    counts = job.count_train_interactions(events, window, cuts)
    catalog = job.write_catalog_and_vocabularies(load_items(raw_dir), counts, cfg, out)
    extra = {"user_features": user_feature_names(raw_dir), "split": split_summary}
    return job.write_manifest(out, window, cfg, summaries, catalog, extra)
