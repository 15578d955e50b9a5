"""The promotion gate: named rules, thresholds, measured values, one decision.

Rules (thresholds in `GateConfig`; how the first two are measured is below):
    beats_popularity    challenger primary >= popularity primary x (1 + min_lift_over_popularity)
    no_regression       challenger primary >= champion primary x (1 - max_regression)
                        (passes with "no champion" on the first run; fails when the champion
                        trained on this eval period, e.g. in a backfill: no honest comparison)
    ann_recall          index recall vs exact search >= min_ann_recall
    latency_p99         single-query search p99 <= max_latency_p99_ms
    index_size          index size on disk <= max_index_mb
    smoke_test          `recommend` on the challenger bundle returned valid items

The two model comparisons are decided on the eval queries' noise, not on point estimates,
when `metrics.json` carries the bootstrap replicates of the primary metric
(`pipelines.evaluation.compare_models`; the same resampled queries for every model):

    beats_popularity    the lower bound of challenger - popularity x (1 + lift) must be > 0;
                        a point estimate above the margin whose interval includes 0 fails as
                        "cannot decide" (the run keeps production and says why)
    no_regression       non-inferiority: the lower bound of challenger - champion must be
                        >= -max_regression x champion; "cannot decide" when the interval
                        straddles that floor, "regression" when it lies wholly below

Without replicates (older files, `eval.bootstrap_samples` 0) both compare point estimates.

`force_promote` promotes whatever the rules say (and says so); `dry_run` never promotes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from pipelines.config import GateConfig
from pipelines.layout import GATE_JSON, GATE_MD
from pipelines.metrics import percentile_interval


@dataclasses.dataclass
class Rule:
    name: str
    threshold: str
    measured: str
    passed: bool
    # The threshold lies inside the rule's confidence interval: the data cannot tell pass from
    # fail (`promotion.mode` approve_if_marginal asks a person). False without intervals.
    marginal: bool = False


@dataclasses.dataclass
class GateDecision:
    promote: bool
    decision: str  # "promote", "reject", "promote (forced)", "dry run: would promote", ...
    rules: list[Rule]
    primary_metric: str
    basis: str = ""  # what the model comparisons rest on (intervals or point estimates)

    @property
    def failed(self) -> list[Rule]:
        return [r for r in self.rules if not r.passed]

    def to_dict(self) -> dict:
        return {
            "promote": self.promote,
            "decision": self.decision,
            "primary_metric": self.primary_metric,
            "rules": [dataclasses.asdict(r) for r in self.rules],
            "basis": self.basis,
        }

    def markdown(self) -> str:
        lines = [f"# Gate: {self.decision}", "", *self._reasons(), ""]
        if self.basis:
            lines += [self.basis, ""]
        lines += [
            "| rule | threshold | measured | result |",
            "| --- | --- | --- | --- |",
        ]
        for r in self.rules:
            lines.append(
                f"| {r.name} | {r.threshold} | {r.measured} | {'pass' if r.passed else 'FAIL'} |"
            )
        return "\n".join(lines) + "\n"

    def _reasons(self) -> list[str]:
        """Which rules decided, with what they measured."""
        if not self.failed:
            return ["Decided by: every rule passed."]
        return ["Decided by the failed rules:", ""] + [
            f"- **{r.name}**: {r.measured} (needs {r.threshold})" for r in self.failed
        ]

    def write(self, out_dir: str | Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / GATE_JSON).write_text(json.dumps(self.to_dict(), indent=2))
        (out_dir / GATE_MD).write_text(self.markdown())


def decide(
    metrics: dict, cfg: GateConfig, primary: str, smoke_test: str | None = None
) -> GateDecision:
    """Apply every rule to an evaluation's `metrics.json` content.

    Args:
        primary: the metric compared (e.g. `recall@100`).
        smoke_test: None if the challenger bundle served correctly, else what went wrong.
    """
    boot = _Bootstrap.read(metrics, primary)
    rules = [_beats_popularity(metrics, cfg, primary, boot)]
    if "champion" in metrics:
        rules.append(_no_regression(metrics, cfg, primary, boot))
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
    return GateDecision(promote, decision, rules, primary, _basis(metrics, primary, boot))


@dataclasses.dataclass
class _Bootstrap:
    """The primary metric's bootstrap replicate means per model (same resampled queries)."""

    replicates: dict[str, np.ndarray]  # model -> float [samples]
    confidence: float
    samples: int

    @classmethod
    def read(cls, metrics: dict, primary: str) -> _Bootstrap | None:
        """From `metrics.json` content; None when it has no replicates of `primary`."""
        settings = metrics.get("eval", {}).get("bootstrap")
        if not settings:
            return None
        replicates = {
            name: np.asarray(section["bootstrap"]["means"], dtype=np.float64)
            for name, section in metrics.items()
            if isinstance(section, dict) and section.get("bootstrap", {}).get("metric") == primary
        }
        if "challenger" not in replicates:
            return None
        return cls(replicates, settings["confidence"], settings["samples"])

    def interval(self, baseline: str, scale: float = 1.0) -> tuple[float, float] | None:
        """Paired interval of challenger - scale x baseline; None without the baseline's."""
        if baseline not in self.replicates:
            return None
        diff = self.replicates["challenger"] - scale * self.replicates[baseline]
        return percentile_interval(diff, self.confidence)


def _beats_popularity(
    metrics: dict, cfg: GateConfig, primary: str, boot: _Bootstrap | None
) -> Rule:
    ours, pop = metrics["challenger"][primary], metrics["popularity"][primary]
    scale = 1 + cfg.min_lift_over_popularity
    floor = pop * scale
    needed = f"popularity {pop:.4f} x {scale:.2f} = {floor:.4f}"
    interval = boot and boot.interval("popularity", scale)
    if not interval:
        return Rule("beats_popularity", f"{primary} >= {needed}", f"{ours:.4f}", ours >= floor)
    (low, high), margin = interval, ours - floor
    shown = f"{margin:+.4f} [{low:+.4f}, {high:+.4f}]"
    values = f"({ours:.4f} vs {floor:.4f})"
    if low > 0:
        measured = f"{shown} above the margin {values}"
    elif margin >= 0:
        measured = f"cannot decide: {shown} includes 0, the lift is inside the noise {values}"
    elif high < 0:
        measured = f"below the margin: {shown} {values}"
    else:
        measured = f"below the margin, inside the noise: {shown} {values}"
    threshold = (
        f"lower {boot.confidence:.0%} bound of {primary} - popularity x {scale:.2f} > 0 ({needed})"
    )
    return Rule("beats_popularity", threshold, measured, low > 0, marginal=low <= 0 <= high)


def _no_regression(metrics: dict, cfg: GateConfig, primary: str, boot: _Bootstrap | None) -> Rule:
    ours, champ = metrics["challenger"][primary], metrics["champion"][primary]
    floor = champ * (1 - cfg.max_regression)
    interval = boot and boot.interval("champion")
    if not interval:
        return Rule(
            "no_regression",
            f"{primary} >= champion {champ:.4f} x {1 - cfg.max_regression:.2f} = {floor:.4f}",
            f"{ours:.4f} ({ours - champ:+.4f} vs champion)",
            ours >= floor,
        )
    (low, high), diff, tolerated = interval, ours - champ, -cfg.max_regression * champ
    shown = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}] vs champion"
    inside_noise = low <= 0 <= high
    if low >= tolerated:
        verdict = "inside the noise" if inside_noise else "better" if low > 0 else "lower"
        measured = f"{shown}: {verdict}, within tolerance"
    elif diff >= tolerated:
        measured = (
            f"cannot decide: {shown}{': inside the noise' if inside_noise else ''}; the "
            f"interval reaches below the tolerated {tolerated:+.4f}"
        )
    elif high < tolerated:
        measured = f"regression: {shown}, wholly below the tolerated {tolerated:+.4f}"
    else:
        measured = (
            f"likely regression: {shown}, the estimate is below the tolerated {tolerated:+.4f}"
        )
    threshold = (
        f"lower {boot.confidence:.0%} bound of {primary} - champion >= "
        f"-{cfg.max_regression:.2f} x champion {champ:.4f} = {tolerated:+.4f}"
    )
    return Rule(
        "no_regression", threshold, measured, low >= tolerated, marginal=low < tolerated <= high
    )


def _basis(metrics: dict, primary: str, boot: _Bootstrap | None) -> str:
    """One sentence on what the model comparisons rest on."""
    if boot is None:
        return (
            f"Model comparisons use point estimates of {primary}: metrics.json has no bootstrap "
            "replicates (eval.bootstrap_samples 0 or an older evaluation), so noise is not "
            "accounted for."
        )
    queries = metrics["challenger"].get("queries")
    return (
        f"Model comparisons use paired {boot.confidence:.0%} percentile-bootstrap intervals of "
        f"{primary} over the same {f'{queries:,} ' if queries is not None else ''}eval queries "
        f"({boot.samples:,} resamples): a rule passes only when its whole interval clears "
        "its threshold."
    )
