"""Index: the ScaNN index over a trained model's item embeddings, tuned, plus serving state."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import PipelineConfig
from pipelines.layout import ModelLayout, RunLayout


def build_index(cfg: PipelineConfig, layout: RunLayout) -> dict:
    """Index the exported item embeddings, tune on eval queries, write the serving state.

    Done for `layout.model` (what evaluation measures) and, after a final fit, for
    `layout.model_final` (what ships), each with its own query tower's vectors.

    Returns:
        The model's index summary (`index_dir`, `kind`, the tuned section, `state`) plus
        `final`: the same for the final model, or None.
    """
    from pipelines.evaluation import EvalSet

    sample = cfg.eval.model_copy(update={"max_queries": cfg.index.tune_queries})
    evalset = EvalSet(layout.features, sample, seed=1)
    out = _index_model(cfg, layout, layout.model, evalset)
    shipped = layout.shipped_model() == layout.model_final
    final = (
        _index_model(cfg, layout, layout.model_final, evalset, state_from=layout.model)
        if shipped
        else None
    )
    return {**out, "final": final}


def _index_model(
    cfg: PipelineConfig,
    layout: RunLayout,
    model_dir: Path,
    evalset,
    state_from: Path | None = None,
) -> dict:
    """Index and tune one model directory and give it its serving state (copied from
    `state_from` when that directory exports the same catalog: the state depends only on the
    run's data window and the catalog)."""
    from pipelines.serving import build_serving_state, copy_serving_state
    from scann_index.index import build_index as build
    from scann_index.index import tune_index
    from tfrs_models.export import load_query_tower

    model = ModelLayout(model_dir)
    embeddings = np.load(model.item_embeddings)
    item_ids = np.array(model.item_ids.read_text(encoding="utf-8").splitlines())
    index = build(embeddings, item_ids, cfg.index)
    tower = load_query_tower(model_dir)
    names = {spec.name for spec in tower.structured_input_signature[1].values()}
    queries = tower(**{n: v for n, v in evalset.queries.items() if n in names})["embedding"]
    tuned = tune_index(index, embeddings, queries.numpy(), cfg.index)
    index.save(model.index)
    state = copy_serving_state(state_from, model_dir) if state_from is not None else None
    if state is None:
        state = build_serving_state(layout.run_dir, model_dir)
    return {"index_dir": str(model.index), "kind": index.kind, **tuned, "state": state}
