"""The promotion gate: named rules, thresholds, measured values, one decision.

Rules (thresholds in `GateConfig`):
    beats_popularity    challenger primary >= popularity primary x (1 + min_lift_over_popularity)
    no_regression       challenger primary >= champion primary x (1 - max_regression)
                        (passes with "no champion" on the first run; fails when the champion
                        trained on this eval period, e.g. in a backfill: no honest comparison)
    ann_recall          index recall vs exact search >= min_ann_recall
    latency_p99         single-query search p99 <= max_latency_p99_ms
    index_size          index size on disk <= max_index_mb
    smoke_test          `recommend` on the challenger bundle returned valid items

`force_promote` promotes whatever the rules say (and says so); `dry_run` never promotes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipelines.config import GateConfig


@dataclasses.dataclass
class Rule:
    name: str
    threshold: str
    measured: str
    passed: bool


@dataclasses.dataclass
class GateDecision:
    promote: bool
    decision: str  # "promote", "reject", "promote (forced)", "dry run: would promote", ...
    rules: list[Rule]
    primary_metric: str

    @property
    def failed(self) -> list[Rule]:
        return [r for r in self.rules if not r.passed]

    def to_dict(self) -> dict:
        return {
            "promote": self.promote,
            "decision": self.decision,
            "primary_metric": self.primary_metric,
            "rules": [dataclasses.asdict(r) for r in self.rules],
        }

    def markdown(self) -> str:
        lines = [
            f"# Gate: {self.decision}",
            "",
            "| rule | threshold | measured | result |",
            "| --- | --- | --- | --- |",
        ]
        for r in self.rules:
            lines.append(
                f"| {r.name} | {r.threshold} | {r.measured} | {'pass' if r.passed else 'FAIL'} |"
            )
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gate.json").write_text(json.dumps(self.to_dict(), indent=2))
        (out_dir / "gate.md").write_text(self.markdown())


def decide(
    metrics: dict, cfg: GateConfig, primary: str, smoke_test: str | None = None
) -> GateDecision:
    """Apply every rule to an evaluation's `metrics.json` content.

    Args:
        primary: the metric compared (e.g. `recall@100`).
        smoke_test: None if the challenger bundle served correctly, else what went wrong.
    """
    ours = metrics["challenger"][primary]
    pop = metrics["popularity"][primary]
    rules = [
        Rule(
            "beats_popularity",
            f"{primary} >= popularity {pop:.4f} x {1 + cfg.min_lift_over_popularity:.2f}"
            f" = {pop * (1 + cfg.min_lift_over_popularity):.4f}",
            f"{ours:.4f}",
            ours >= pop * (1 + cfg.min_lift_over_popularity),
        )
    ]
    if "champion" in metrics:
        champ = metrics["champion"][primary]
        floor = champ * (1 - cfg.max_regression)
        rules.append(
            Rule(
                "no_regression",
                f"{primary} >= champion {champ:.4f} x {1 - cfg.max_regression:.2f} = {floor:.4f}",
                f"{ours:.4f} ({ours - champ:+.4f} vs champion)",
                ours >= floor,
            )
        )
    elif excluded := metrics.get("eval", {}).get("champion_excluded"):
        # The champion saw this eval period: no honest comparison, and a challenger trained on
        # older data must not replace it.
        rules.append(
            Rule("no_regression", "champion comparable on this eval period", excluded, False)
        )
    else:
        rules.append(Rule("no_regression", "no champion (first run)", "-", True))
    ann = metrics["ann"]
    recall = ann[f"recall@{ann['k']}"]
    rules.append(
        Rule(
            "ann_recall",
            f">= {cfg.min_ann_recall:.3f}",
            f"{recall:.4f}",
            recall >= cfg.min_ann_recall,
        )
    )
    p99 = ann.get("latency_p99_ms")
    rules.append(
        Rule(
            "latency_p99",
            f"<= {cfg.max_latency_p99_ms:g} ms",
            "not measured" if p99 is None else f"{p99:.3f} ms",
            p99 is not None and p99 <= cfg.max_latency_p99_ms,
        )
    )
    size = ann.get("size_mb", 0.0)
    rules.append(
        Rule(
            "index_size", f"<= {cfg.max_index_mb:g} MB", f"{size:.2f} MB", size <= cfg.max_index_mb
        )
    )
    rules.append(
        Rule(
            "smoke_test", "recommend returns k valid items", smoke_test or "ok", smoke_test is None
        )
    )
    failed = ", ".join(r.name for r in rules if not r.passed)
    if cfg.dry_run:
        decision = f"dry run: would {'promote' if not failed or cfg.force_promote else 'reject'}"
        promote = False
    elif not failed:
        decision, promote = "promote", True
    elif cfg.force_promote:
        decision, promote = f"promote (forced; failed: {failed})", True
    else:
        decision, promote = f"reject (failed: {failed})", False
    return GateDecision(promote, decision, rules, primary)
