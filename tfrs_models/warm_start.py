"""Warm start from a previous model: reuse what still fits, start fresh where the world changed.

Every vocabulary-indexed table (user and item ids, title tokens, genres) is copied row by row
for the values present in both vocabularies: vocabularies change between runs (new users,
items and title words appear, rare ones drop out) and are ordered by frequency, so the same
row number can mean another token the next day. Id tables' hash-bucket (OOV) rows are copied
when the bucket count is unchanged, token and genre tables' padding row always; new values keep
their fresh initialisation. A table whose vocabulary the previous model did not export (models
from before 2026-11-26 kept only ids) starts fresh rather than being copied by position. Every
other variable is copied when its name and shape match.
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
    # variable name -> (vocabulary, rows before the vocabulary in the new / the old table)
    tables = {
        model.item_tower.id_embedding.embeddings.name: (schema.ITEM_ID, new_oov, previous_oov)
    }
    if hasattr(model.item_tower, "id_bias"):
        tables[model.item_tower.id_bias.embeddings.name] = (schema.ITEM_ID, new_oov, previous_oov)
    if hasattr(model.query_tower, "user_embedding"):
        tables[model.query_tower.user_embedding.embeddings.name] = (
            schema.USER_ID, new_oov, previous_oov,
        )  # fmt: skip
    if hasattr(model.item_tower, "token_embedding"):  # row 0 is padding, value i is row i + 1
        tables[model.item_tower.token_embedding.embeddings.name] = (schema.TITLE_TOKEN, 1, 1)
        tables[model.item_tower.genre_embedding.embeddings.name] = (schema.GENRE, 1, 1)
    stats = {"variables_copied": 0, "skipped": []}
    for variable in model.variables:
        if variable.name not in old.files:
            stats["skipped"].append(f"{variable.name}: not in the previous model")
            continue
        value = old[variable.name]
        table = tables.get(variable.name)
        if table is not None:
            vocab, new_offset, old_offset = table
            previous_vocab = previous_dir / "vocab" / f"{vocab}.tsv"
            new_vocab = Path(new_vocab_dir) / f"{vocab}.tsv"
            if not (previous_vocab.exists() and new_vocab.exists()):
                stats["skipped"].append(f"{variable.name}: no {vocab} vocabulary to map rows by")
                continue
            new_rows, old_rows = embedding_rows(
                _vocab(previous_vocab), _vocab(new_vocab),
                old_offset, new_offset,
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
            stats["skipped"].append(
                f"{variable.name}: shape {tuple(variable.shape)} vs {tuple(value.shape)} before"
            )
    stats["variables_skipped"] = len(stats["skipped"])
    if stats["skipped"]:
        log.warning("warm start from %s left fresh: %s", previous_dir, "; ".join(stats["skipped"]))
    log.info("warm start from %s: %s", previous_dir, stats)
    return stats
