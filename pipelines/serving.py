"""The serving path: query tower SavedModel -> ScaNN index, plus the user state it needs.

A served model directory (a training output with an `index/`, or a registry bundle) holds:

    query_tower/            SavedModel taking raw features (tfrs_models.export)
    item_ids.txt            the catalog, rows of the index
    index/                  scann_index.ItemIndex
    serving_state.parquet   per user at the data window's end: the last H events (most recent
                            first), every item seen, user features
    popular_items.txt       fallback ranking for users the model knows nothing about

Evaluation, the gate's smoke test and `recommend` all go through `ServingModel`, so what is
measured is what serves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from pipelines import schema
from pipelines.errors import PipelineError
from pipelines.layout import ModelLayout, RunLayout

log = logging.getLogger(__name__)

STATE_FILE = "serving_state.parquet"
POPULAR_FILE = "popular_items.txt"
_BATCH = 4096
_POPULAR_DAYS = 7


def build_serving_state(run_dir: str | Path, out_dir: str | Path) -> dict:
    """Write the user state and popularity fallback of a run's data window to `out_dir`.

    Histories come from `schema.point_in_time_history` at the window end, the function that
    builds the training histories (events sorted in `schema.EVENT_ORDER`, most recent first,
    `history_length` of them), so serving queries look like training queries.

    Returns:
        Counts for the manifest.
    """
    run, out_dir = RunLayout(run_dir), Path(out_dir)
    manifest = json.loads(run.features_manifest.read_text())
    window = manifest["window_epoch_s"]
    h = int(manifest["config"]["history_length"])
    # Events sharing (user, timestamp, item) give the same history whatever their event and
    # weight, so the first three keys of the feature job's order are enough.
    order = list(schema.EVENT_ORDER[:3])
    table = ds.dataset(run.raw / "interactions", format="parquet").to_table(
        columns=order,
        filter=(ds.field(schema.TIMESTAMP) >= window["history_start"])
        & (ds.field(schema.TIMESTAMP) < window["window_end"]),
    )
    events = table.to_pandas().sort_values(order, kind="stable")
    state = _latest_histories(events, h)
    users_path = run.raw / "users.parquet"
    if users_path.exists():
        users = pd.read_parquet(users_path).set_index(schema.USER_ID)
        users.columns = [schema.user_feature(c) for c in users.columns]
        state = state.join(users, how="outer")
    state.index.name = schema.USER_ID
    state = state.reset_index()
    for column in _LIST_COLUMNS:
        state[column] = state[column].apply(lambda v: v if isinstance(v, list) else [])
    out_dir.mkdir(parents=True, exist_ok=True)
    state.to_parquet(out_dir / STATE_FILE, index=False)
    popular = popular_items(events, window["window_end"], _catalog(out_dir))
    (out_dir / POPULAR_FILE).write_text("".join(f"{i}\n" for i in popular), encoding="utf-8")
    return {"users": int(len(state)), "window_end": int(window["window_end"])}


_LIST_COLUMNS = (schema.HISTORY_ITEM_IDS, schema.HISTORY_TIMESTAMPS, schema.SEEN_ITEM_IDS)


def _latest_histories(events: pd.DataFrame, h: int) -> pd.DataFrame:
    """Per user (sorted index `user_id`): the last `h` items and timestamps, most recent first,
    and every item seen (sorted), from events before one moment (`user_id, item_id, timestamp`,
    sorted in `schema.EVENT_ORDER`).
    """
    codes, users = pd.factorize(events[schema.USER_ID], sort=True)
    user_start = np.searchsorted(codes, np.arange(len(users)), side="left")
    user_end = np.searchsorted(codes, np.arange(len(users)), side="right")
    rows, lengths = schema.point_in_time_history(user_start, user_end, h)
    flat = rows[rows >= 0]  # row-major: each user's history, most recent first
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    pairs = list(zip(bounds[:-1], bounds[1:], strict=True))
    items = events[schema.ITEM_ID].to_numpy(dtype=object)
    history_items, history_times = items[flat].tolist(), events[schema.TIMESTAMP].to_numpy()[flat]
    return pd.DataFrame(
        {
            schema.HISTORY_ITEM_IDS: [history_items[a:b] for a, b in pairs],
            schema.HISTORY_TIMESTAMPS: [history_times[a:b].tolist() for a, b in pairs],
            schema.SEEN_ITEM_IDS: [
                sorted(set(items[a:b])) for a, b in zip(user_start, user_end, strict=True)
            ],
        },
        index=pd.Index(np.asarray(users, dtype=object), name=schema.USER_ID),
    )


def popular_items(events: pd.DataFrame, window_end: int, catalog: set[str], n: int = 1000) -> list:
    """The fallback ranking: the last week's most interacted items, then the rest of the
    window's, then the remaining catalog in id order; only items in the catalog (the index's
    rows: anything else cannot be served, e.g. unknown items the checks tolerated, or items
    first seen in the eval period)."""
    in_catalog = events[events["item_id"].isin(catalog)]
    recent = in_catalog[in_catalog["timestamp"] >= window_end - _POPULAR_DAYS * 86_400]
    ranked = list(recent["item_id"].value_counts(sort=True).index)
    window = in_catalog["item_id"].value_counts(sort=True).index
    for more in (window, sorted(catalog)):
        if len(ranked) >= n:
            break
        have = set(ranked)
        ranked += [i for i in more if i not in have][: n - len(ranked)]
    return ranked[:n]


def _catalog(model_dir: Path) -> set[str]:
    ids = ModelLayout(model_dir).item_ids
    if not ids.is_file():
        raise PipelineError(f"{model_dir}: no item_ids.txt; export the model before its state")
    return set(ids.read_text(encoding="utf-8").splitlines())


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


def read_state(directory: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The user state (indexed by user_id) and the popularity fallback of a served directory."""
    directory = Path(directory)
    state = pd.read_parquet(directory / STATE_FILE).set_index("user_id")
    popular = (directory / POPULAR_FILE).read_text(encoding="utf-8").split()
    return state, popular
