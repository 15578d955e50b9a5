"""The serving path: query tower SavedModel -> ScaNN index, plus the user state it needs.

A served model directory (a training output with an `index/`, or a registry bundle) holds:

    query_tower/            SavedModel taking raw features (tfrs_models.export)
    item_ids.txt            the catalog, rows of the index
    index/                  scann_index.ItemIndex
    serving_state/          per user at the data window's end: the last H events (most recent
                            first), every item seen, user features; one Parquet file per user
                            shard plus state.json (`state.py`; older bundles: one
                            serving_state.parquet)
    popular_items.txt       fallback ranking for users the model knows nothing about

Modules: `build` writes the state in bounded memory from `events` (the window's events split
by user shard) and the fallback (`popularity`); `state` reads them shard by shard. Evaluation, the gate's smoke test and `recommend` all go through `ServingModel`, so
what is measured is what serves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.errors import PipelineError
from pipelines.layout import ModelLayout
from pipelines.serving.build import build_serving_state, copy_serving_state
from pipelines.serving.popularity import popular_items
from pipelines.serving.state import (
    POPULAR_FILE,
    STATE_DIR,
    STATE_FILE,
    ServingState,
    read_popular,
    read_state,
)

__all__ = [
    "POPULAR_FILE",
    "STATE_DIR",
    "STATE_FILE",
    "ServingModel",
    "ServingState",
    "build_serving_state",
    "copy_serving_state",
    "popular_items",
    "read_popular",
    "read_state",
]

_BATCH = 4096


class ServingModel:
    """Loads a served directory; embeds queries and searches the index."""

    def __init__(self, directory: str | Path, threads: int = 0):
        from scann_index.index import ItemIndex
        from tfrs_models.export import load_query_tower

        self.directory = Path(directory)
        if not ModelLayout(self.directory).query_tower.is_dir():
            raise PipelineError(f"{self.directory}: no query_tower/ SavedModel to serve")
        self.query_tower = load_query_tower(self.directory)
        self.index = ItemIndex.load(ModelLayout(self.directory).index, threads=threads)
        self.item_ids = self.index.item_ids
        self.row_of = {item: row for row, item in enumerate(self.item_ids)}
        self.inputs = {
            spec.name: spec for spec in self.query_tower.structured_input_signature[1].values()
        }

    def embed(self, features: dict) -> np.ndarray:
        """Query vectors `[n, d]` from raw features (numpy or tensors, keyed by input name).

        Inputs the tower needs but `features` lacks (e.g. a user feature the data does not
        have) are filled with empty strings, as the feature job does for missing values.
        """
        import tensorflow as tf

        n = len(features["user_id"])
        out = []
        for start in range(0, n, _BATCH):
            batch = {}
            for name, spec in self.inputs.items():
                value = features.get(name)
                if value is None:
                    value = tf.fill([min(_BATCH, n - start)], "")
                else:
                    value = value[start : start + _BATCH]
                batch[name] = tf.convert_to_tensor(value, dtype=spec.dtype)
            out.append(self.query_tower(**batch)["embedding"].numpy())
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def rows(self, item_ids) -> np.ndarray:
        """Index rows of item ids (unknown ids dropped)."""
        return np.array([self.row_of[i] for i in item_ids if i in self.row_of], dtype=np.int64)
