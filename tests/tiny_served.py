"""A tiny served directory built by hand (conftest.py's `served_dir`): a query tower
SavedModel, a brute-force index over five items, a serving state and a popularity fallback.
No training: the tower looks the query vector up by user id, so every ranking is known in
advance.

Item vectors (the first three dims; dims 3-5 are 0 for items, so they never change a ranking):

    i0 [1, 0, 0]   i1 [0.9, 0.1, 0]   i2 [0, 1, 0]   i3 [0, 0, 1]   i4 [-1, 0, 0]

Query vectors: u1 -> [1, 0, 0], u2 -> [0, 1, 0], any other user -> [0, 0, 0.5]; then
dim 3 = 1 if `user_country` is "DE", dim 4 = the `timestamp` input, dim 5 = how many history
ids are non-empty, so tests can see what the tower was fed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

ITEMS = ["i0", "i1", "i2", "i3", "i4"]
ITEM_VECTORS = np.array(
    [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]], dtype=np.float32
)
USER_VECTORS = {"u1": [1.0, 0.0, 0.0], "u2": [0.0, 1.0, 0.0]}
OTHER_USER = [0.0, 0.0, 0.5]
WINDOW_END = 1_000_000
POPULAR = ["i3", "i2", "i0", "i1", "i4"]
DIMS = 6  # 3 ranking dims + country, timestamp, history length


def _save_tower(directory: Path) -> None:
    import tensorflow as tf

    from tfrs_models.export import query_signature

    class Tower(tf.Module):
        def __init__(self):
            super().__init__()
            users = list(USER_VECTORS)
            self.rows = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(users), tf.range(len(users), dtype=tf.int64)
                ),
                default_value=len(users),
            )
            self.vectors = tf.constant([*USER_VECTORS.values(), OTHER_USER], dtype=tf.float32)
            self.serve = tf.function(self._serve, input_signature=query_signature(["user_country"]))

        def _serve(self, *inputs):
            user_id, timestamp, history, _, country = inputs
            vector = tf.gather(self.vectors, self.rows.lookup(user_id))
            extra = tf.stack(
                [
                    tf.cast(tf.equal(country, "DE"), tf.float32),
                    tf.cast(timestamp, tf.float32),
                    tf.reduce_sum(tf.cast(tf.not_equal(history, ""), tf.float32), axis=1),
                ],
                axis=1,
            )
            return {"embedding": tf.concat([vector, extra], axis=1)}

    tower = Tower()
    tf.saved_model.save(
        tower,
        str(directory / "query_tower"),
        signatures={"serving_default": tower.serve.get_concrete_function()},
    )


def build_served_dir(directory: Path) -> Path:
    """Write the tiny served directory described above into `directory`; returns it."""
    from pipelines.config import IndexConfig
    from scann_index.index import build_index

    directory.mkdir(parents=True, exist_ok=True)
    _save_tower(directory)
    embeddings = np.concatenate([ITEM_VECTORS, np.zeros((len(ITEMS), DIMS - 3), np.float32)], 1)
    np.save(directory / "item_embeddings.npy", embeddings, allow_pickle=False)
    (directory / "item_ids.txt").write_text("".join(f"{i}\n" for i in ITEMS))
    build_index(embeddings, ITEMS, IndexConfig(threads=1)).save(directory / "index")
    state = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "history_item_ids": [["i0", "i2"], ["i2"], []],
            "history_timestamps": [[900, 800], [700], []],
            "seen_item_ids": [["i0", "i2"], ["i2"], []],
            "user_country": ["DE", None, "FR"],
        }
    )
    state.to_parquet(directory / "serving_state.parquet", index=False)
    (directory / "popular_items.txt").write_text("".join(f"{i}\n" for i in POPULAR))
    (directory / "manifest.json").write_text(
        json.dumps({"data_window": {"window_end": WINDOW_END}})
    )
    return directory
