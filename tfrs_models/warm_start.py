"""Warm start from a previous model: reuse what still fits, start fresh where the world changed.

Id embeddings are copied row by row for ids present in both vocabularies (vocabularies change
between runs: new users and items appear, rare ones drop out); hash-bucket (OOV) rows are
copied when the bucket count is unchanged; new ids keep their fresh initialisation. Every other
variable is copied when its name and shape match.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipelines import schema

log = logging.getLogger(__name__)


def _vocab(path: Path) -> list[str]:
    return [line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]


def embedding_rows(old_vocab: list[str], new_vocab: list[str], old_oov: int, new_oov: int):
    """Row mapping for a StringLookup-indexed embedding (OOV buckets first, then the vocabulary).

    Returns:
        (new_rows, old_rows): int arrays of equal length; new_rows[i] takes old_rows[i].
    """
    old_index = {value: old_oov + i for i, value in enumerate(old_vocab)}
    pairs = [(new_oov + j, old_index[v]) for j, v in enumerate(new_vocab) if v in old_index]
    if old_oov == new_oov:
        pairs = [(b, b) for b in range(new_oov)] + pairs
    new_rows = np.array([p[0] for p in pairs], dtype=np.int64)
    old_rows = np.array([p[1] for p in pairs], dtype=np.int64)
    return new_rows, old_rows


def warm_start(
    model, new_vocab_dir: Path, new_oov: int, previous_dir: str | Path, previous_oov: int
) -> dict:
    """Initialise `model`'s variables from a previous export.

    Args:
        model: a built `TwoTowerModel`.
        new_vocab_dir: the vocabularies `model` is indexed by (`user_id.tsv`, `item_id.tsv`).
        new_oov: OOV buckets of `model`.
        previous_dir: a previous model directory (with `weights.npz` and `vocab/`).
        previous_oov: OOV buckets of the previous model.

    Returns:
        Counts: variables copied / skipped, id rows copied / fresh per vocabulary.
    """
    previous_dir = Path(previous_dir)
    old = np.load(previous_dir / "weights.npz", allow_pickle=False)
    tables = {model.item_tower.id_embedding.embeddings.name: schema.ITEM_ID}
    if hasattr(model.item_tower, "id_bias"):
        tables[model.item_tower.id_bias.embeddings.name] = schema.ITEM_ID
    if hasattr(model.query_tower, "user_embedding"):
        tables[model.query_tower.user_embedding.embeddings.name] = schema.USER_ID
    stats = {"variables_copied": 0, "variables_skipped": 0}
    for variable in model.variables:
        if variable.name not in old.files:
            stats["variables_skipped"] += 1
            continue
        value = old[variable.name]
        vocab = tables.get(variable.name)
        if vocab is not None:
            new_rows, old_rows = embedding_rows(
                _vocab(previous_dir / "vocab" / f"{vocab}.tsv"), _vocab(Path(new_vocab_dir) / f"{vocab}.tsv"),
                previous_oov, new_oov,
            )  # fmt: skip
            current = variable.numpy()
            current[new_rows] = value[old_rows]
            variable.assign(current)
            stats[f"{vocab}_rows_copied"] = int(len(new_rows))
            stats[f"{vocab}_rows_fresh"] = int(current.shape[0] - len(new_rows))
            stats["variables_copied"] += 1
        elif tuple(value.shape) == tuple(variable.shape):
            variable.assign(value)
            stats["variables_copied"] += 1
        else:
            stats["variables_skipped"] += 1
    log.info("warm start from %s: %s", previous_dir, stats)
    return stats
