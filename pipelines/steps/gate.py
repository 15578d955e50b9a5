"""Gate: the promotion rules on the run's evaluation, with a smoke test of what would ship."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.layout import RunLayout

log = logging.getLogger(__name__)


def gate(cfg: PipelineConfig, layout: RunLayout) -> dict:
    """Apply the gate rules to the run's evaluation; writes gate.json / gate.md.

    Returns:
        The decision (`pipelines.gate.GateDecision.to_dict`: `promote`, `decision`, `rules`).
    """
    from pipelines.gate import decide

    metrics = json.loads(layout.metrics.read_text())
    # The smoke test serves the directory that will ship (the final model after a final fit).
    decision = decide(
        metrics, cfg.gate, cfg.eval.primary_metric,
        smoke_test=smoke_test(layout.shipped_model()),
    )  # fmt: skip
    decision.write(layout.evaluation)
    log.info("gate: %s", decision.decision)
    return decision.to_dict()


def smoke_test(served_dir: str | Path, k: int = 10) -> str | None:
    """Serve a few known users and an unknown one; None if fine, else what went wrong."""
    from pipelines.recommend import Recommender

    try:
        rec = Recommender(served_dir)
        users = list(rec.state.index[:3]) + ["__smoke_test_unknown_user__"]
        results = rec.recommend(users, k=k)
        catalog = set(rec.model.item_ids)
        for r in results:
            items = [i["item_id"] for i in r["items"]]
            who = f"user {r['user_id']} ({r['source']})"
            outside = [i for i in items if i not in catalog]
            if outside:
                return f"{who}: {len(outside)} items not in the catalog, e.g. {outside[:3]}"
            if len(items) != min(k, len(catalog)):
                return f"{who}: {len(items)} items, expected {min(k, len(catalog))}"
            if len(set(items)) != len(items):
                return f"{who}: duplicate items"
    except Exception as exc:  # noqa: BLE001 - the gate reports any serving failure
        return f"{type(exc).__name__}: {exc}"
    return None
