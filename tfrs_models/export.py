"""Export: a query-tower SavedModel that takes raw features, and the catalog's item vectors.

<model_dir>/query_tower/        SavedModel, signature `serving_default`:
                                user_id [n] string, timestamp [n] int64,
                                history_item_ids [n, h] string ("" = none),
                                history_timestamps [n, h] int64, user_<feature> [n] string
                                -> embedding [n, d (+ bias/age dims)] float32 (first d unit norm)
<model_dir>/item_embeddings.npy float32 [N, same dims], rows aligned with item_ids.txt
<model_dir>/item_ids.txt        one item id per line (the whole catalog)
<model_dir>/weights.npz         every variable by name (warm starts read it)
<model_dir>/vocab/              the vocabularies the embedding tables are indexed by
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import schema
from pipelines.layout import ModelLayout
from tfrs_models.data import FeatureSet

QUERY_INPUTS = (
    schema.USER_ID,
    schema.TIMESTAMP,
    schema.HISTORY_ITEM_IDS,
    schema.HISTORY_TIMESTAMPS,
)


def query_signature(user_features: list[str]) -> list[tf.TensorSpec]:
    """Input specs of the serving signature (names are the feature names)."""
    specs = [
        tf.TensorSpec([None], tf.string, name=schema.USER_ID),
        tf.TensorSpec([None], tf.int64, name=schema.TIMESTAMP),
        tf.TensorSpec([None, None], tf.string, name=schema.HISTORY_ITEM_IDS),
        tf.TensorSpec([None, None], tf.int64, name=schema.HISTORY_TIMESTAMPS),
    ]
    return specs + [tf.TensorSpec([None], tf.string, name=name) for name in user_features]


class QueryServing(tf.Module):
    """Wraps the query tower with a flat, named, raw-feature signature."""

    def __init__(self, query_tower, user_features: list[str]):
        super().__init__()
        self.query_tower = query_tower
        self.names = [*QUERY_INPUTS, *user_features]
        self.serve = tf.function(self._serve, input_signature=query_signature(user_features))

    def _serve(self, *inputs):
        features = dict(zip(self.names, inputs, strict=True))
        return {"embedding": self.query_tower(features)}


def export_model(model, features: FeatureSet, model_dir: str | Path) -> dict:
    """Write the SavedModel, item embeddings, weights and vocabularies.

    Returns:
        Paths and sizes for the training manifest.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    serving = QueryServing(model.query_tower, features.user_features)
    layout = ModelLayout(model_dir)
    saved = layout.query_tower
    if saved.exists():
        shutil.rmtree(saved)
    tf.saved_model.save(
        serving, str(saved), signatures={"serving_default": serving.serve.get_concrete_function()}
    )

    item_ids = features.catalog[schema.ITEM_ID].to_numpy(str)
    vectors = np.concatenate([
        model.item_tower(tf.constant(item_ids[i : i + 4096])).numpy() for i in range(0, len(item_ids), 4096)
    ]).astype(np.float32)  # fmt: skip
    np.save(layout.item_embeddings, vectors, allow_pickle=False)
    layout.item_ids.write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
    np.savez(model_dir / "weights.npz", **{v.name: v.numpy() for v in model.variables})
    vocab_dir = model_dir / "vocab"
    vocab_dir.mkdir(exist_ok=True)
    for name in schema.VOCABULARIES:  # warm starts map every embedding table's rows by value
        source = Path(features.directory) / schema.vocabulary_file(name)
        if source.exists():
            shutil.copyfile(source, vocab_dir / f"{name}.tsv")
    return {
        "query_tower": str(saved),
        "item_embeddings": str(layout.item_embeddings),
        "item_ids": str(layout.item_ids),
        "items": int(len(item_ids)),
        "embedding_dim": int(vectors.shape[1]),
    }


def load_query_tower(model_dir: str | Path):
    """The exported serving function: call it with the signature's named tensors."""
    return tf.saved_model.load(str(ModelLayout(model_dir).query_tower)).signatures[
        "serving_default"
    ]
