"""The feature job's work as plain functions over pandas frames, whichever engine runs it.

The Beam transforms (`beam_job.py`) and the single-process reference (`local.py`) are both thin
drivers around these, so the two can only differ in how work is distributed, never in what is
computed. Output layout under `out`:

    train/part-SSSSS-of-NNNNN.tfrecord   train examples of user shard S
    valid/part-SSSSS-of-NNNNN.tfrecord   validation queries of user shard S
    eval/part-SSSSS-of-NNNNN.tfrecord    eval queries of user shard S
    heldout/part-SSSSS-of-NNNNN.tfrecord train-format examples of user shard S's validation
                                         and eval interactions (training's optional final fit)
    user_cuts.parquet                    every user's train/validation/eval boundaries
    catalog.parquet                      items, content, popularity, sampling probability
    vocab/{user_id,item_id,genre,title_token}.tsv
    manifest.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import io as _io

import numpy as np
import pandas as pd

from pipelines import schema
from pipelines.config import FeaturesConfig
from pipelines.features.catalog import build_catalog, build_vocabularies
from pipelines.features.records import build_shard_examples
from pipelines.features.split import SplitPlan
from pipelines.features.window import FeatureWindow
from pipelines.formats import files
from pipelines.formats.tfrecord import write_tfrecords
from pipelines.schema import CUTS_FILE, UserCuts

SPLITS = ("train", "valid", "eval", "heldout")
# 2: validation split and per-user cuts (user_cuts.parquet); 3: heldout split
FEATURES_VERSION = 3


# `features.shards: null`: one user shard per this many snapshot events, at least MIN_SHARDS. A
# shard's events, histories and encoded records are in one worker's memory at once; 250k
# events peak at about 1.2 GiB per worker (bench/RESULTS.md, feature job on `medium`).
EVENTS_PER_SHARD = 250_000
MIN_SHARDS = 8


def with_shards(cfg: FeaturesConfig, events: int) -> FeaturesConfig:
    """`cfg` with its user shard count decided: `features.shards` when set, else one per
    `EVENTS_PER_SHARD` of the snapshot's `events` (at least `MIN_SHARDS`).

    Decided from the snapshot's row count only, never from the runner or its workers, so the
    same data and config give the same files on every runner.
    """
    if cfg.shards is not None:
        return cfg
    shards = min(4096, max(MIN_SHARDS, -(-events // EVENTS_PER_SHARD)))
    return cfg.model_copy(update={"shards": shards})


def shard_path(out: str, split: str, shard: int, shards: int) -> str:
    return files.join(out, split, f"part-{shard:05d}-of-{shards:05d}.tfrecord")


def process_shard(
    shard: int,
    events: pd.DataFrame,
    users: pd.DataFrame | None,
    window: FeatureWindow,
    cfg: FeaturesConfig,
    out: str,
    cuts: UserCuts | None = None,
) -> dict:
    """Build and write one user shard's train, validation, eval and held-out files.

    Args:
        shard: shard number in [0, cfg.shards).
        events: every event of the shard's users (snapshot columns).
        users: user features indexed by user_id, or None.
        cuts: the users' split boundaries (None = temporal at eval_start, no validation).

    Returns:
        Summary: shard, counts, `min_history_gap_s`, and per split the file path, record count
        and sha256.
    """
    built = build_shard_examples(events, window, cfg.history_length, users, cuts)
    summary = {"shard": shard, **built.stats, "files": {}}
    for split in SPLITS:
        records = getattr(built, split)
        path = shard_path(out, split, shard, cfg.shards)
        data = write_tfrecords(path, records)
        summary["files"][split] = {
            "path": path,
            "records": len(records),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return summary


def count_train_interactions(
    events: pd.DataFrame, window: FeatureWindow, cuts: UserCuts | None = None
) -> tuple[pd.Series, pd.Series]:
    """Training interaction counts per item and per user (for logQ and vocabularies).

    Counted straight from the events and the cuts, independently of the examples written, so
    the feature checks can compare the two.
    """
    cuts = cuts if cuts is not None else UserCuts.uniform(window.eval_start)
    t = events[schema.TIMESTAMP].to_numpy(np.int64)
    train_end, _ = cuts.lookup(events[schema.USER_ID].to_numpy())
    train = events.loc[(t >= window.window_start) & (t < window.window_end) & (t < train_end)]
    return train[schema.ITEM_ID].value_counts(), train[schema.USER_ID].value_counts()


def write_user_cuts(out: str, plan: SplitPlan) -> dict:
    """Write the plan's per-user cuts (the job's and the checks' input); return the manifest's
    `split` section: the plan summary plus the file's path, users and sha256."""
    data = plan.cuts.to_bytes()
    path = files.join(out, CUTS_FILE)
    files.write_bytes(path, data)
    return {
        **plan.summary,
        "user_cuts": {
            "path": path,
            "users": len(plan.cuts.table),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    }


def add_counts(a: tuple[pd.Series, pd.Series], b: tuple[pd.Series, pd.Series]):
    """Sum two (item_counts, user_counts) pairs."""
    return tuple(x.add(y, fill_value=0).astype(np.int64) for x, y in zip(a, b, strict=True))


def write_catalog_and_vocabularies(
    items: pd.DataFrame | None,
    counts: tuple[pd.Series, pd.Series],
    cfg: FeaturesConfig,
    out: str,
) -> dict:
    """Build the catalog and the vocabularies from the training counts and write them.

    Returns:
        Summary: catalog path/size/sha256, `probability_sum`, and per vocabulary path/size/sha256.
    """
    item_counts, user_counts = counts
    catalog = build_catalog(items, item_counts, cfg.logq_smoothing)
    buffer = _io.BytesIO()
    catalog.to_parquet(buffer, index=False)
    catalog_bytes = buffer.getvalue()
    catalog_path = files.join(out, "catalog.parquet")
    files.write_bytes(catalog_path, catalog_bytes)
    files.makedirs(files.join(out, schema.VOCAB_DIR))
    vocab_summary = {}
    for name, table in build_vocabularies(catalog, user_counts, cfg).items():
        text = "".join(f"{v}\t{c}\n" for v, c in zip(table["value"], table["count"], strict=True))
        data = text.encode("utf-8")
        path = files.join(out, schema.vocabulary_file(name))
        files.write_bytes(path, data)
        vocab_summary[name] = {
            "path": path,
            "size": len(table),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return {
        "catalog": {
            "path": catalog_path,
            "items": len(catalog),
            "sha256": hashlib.sha256(catalog_bytes).hexdigest(),
            "items_with_train_interactions": int((catalog["train_count"] > 0).sum()),
        },
        "probability_sum": float(catalog["sampling_probability"].sum()),
        "vocabularies": vocab_summary,
        "train_interactions": int(item_counts.sum()),
    }


def write_manifest(
    out: str,
    window: FeatureWindow,
    cfg: FeaturesConfig,
    shard_summaries: list[dict],
    catalog_summary: dict,
    extra: dict | None = None,
) -> dict:
    """Combine the shard and catalog summaries into `manifest.json` (counts, hashes, window, config).

    The content hash of a split is the sha256 of its shard hashes in shard order, so two runs
    on the same input agree on it exactly.
    """
    shards = sorted(shard_summaries, key=lambda s: s["shard"])
    splits = {}
    for split in SPLITS:
        written = [s["files"][split] for s in shards]
        splits[split] = {
            "files": [f["path"] for f in written],
            "records": sum(f["records"] for f in written),
            "content_sha256": hashlib.sha256(
                "".join(f["sha256"] for f in written).encode()
            ).hexdigest(),
        }
    gaps = [s["min_history_gap_s"] for s in shards if s["min_history_gap_s"] is not None]
    manifest = {
        "features_version": FEATURES_VERSION,
        "window": window.describe(),
        "window_epoch_s": dataclasses.asdict(window),
        "config": cfg.model_dump(mode="json"),
        "counts": {
            "train_examples": sum(s["train_examples"] for s in shards),
            "valid_queries": sum(s["valid_queries"] for s in shards),
            "valid_interactions": sum(s["valid_interactions"] for s in shards),
            "eval_queries": sum(s["eval_queries"] for s in shards),
            "eval_interactions": sum(s["eval_interactions"] for s in shards),
            "heldout_examples": sum(s["heldout_examples"] for s in shards),
            "train_users": sum(s["train_users"] for s in shards),
            "train_interactions_counted": catalog_summary["train_interactions"],
            "catalog_items": catalog_summary["catalog"]["items"],
        },
        "min_history_gap_s": min(gaps) if gaps else None,
        "splits": splits,
        "catalog": catalog_summary["catalog"],
        "sampling_probability_sum": catalog_summary["probability_sum"],
        "vocabularies": catalog_summary["vocabularies"],
        schema.OOV_BUCKETS: cfg.oov_buckets,
        "shards": shards,
        **(extra or {}),
    }
    files.write_json(files.join(out, schema.FEATURES_MANIFEST), manifest)
    return manifest
