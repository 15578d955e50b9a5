"""Approval before promotion: when a person must decide, what they are shown, what they said.

`promotion.mode`:
    auto                  the gate decides alone.
    approve               every promotion the gate allows (forced ones included) waits for a
                          person.
    approve_if_marginal   a person decides when `force_promote` was requested.
In both approve modes a challenger the gate rejected only on rules whose threshold lies inside
their confidence interval ("cannot decide": the eval queries cannot tell pass from fail) is put
to a person instead of rejected outright. Any other rejection stays a rejection, and a dry run
never asks.

A person's answer is kept in the run (`RunLayout.approval`): approve promotes, reject or no
answer before `promotion.approval_timeout_hours` leaves production unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from pipelines.config import PipelineConfig
from pipelines.layout import RunLayout

APPROVE, REJECT, TIMEOUT = "approve", "reject", "timeout"


def approval_request(cfg: PipelineConfig, decision: dict) -> str | None:
    """Why a person must decide this run's promotion; None when the gate decides alone.

    Args:
        decision: the gate's decision (`pipelines.gate.GateDecision.to_dict`).
    """
    mode = cfg.promotion.mode
    if mode == "auto" or cfg.gate.dry_run:
        return None
    failed = [r for r in decision["rules"] if not r["passed"]]
    if decision["promote"]:
        if cfg.gate.force_promote and failed:
            return f"force_promote was requested (failed: {', '.join(r['name'] for r in failed)})"
        if cfg.gate.force_promote:
            return "force_promote was requested"
        return "promotion.mode is approve" if mode == "approve" else None
    if failed and all(r.get("marginal") for r in failed):
        names = ", ".join(r["name"] for r in failed)
        return f"the gate cannot decide: {names} inside the confidence interval"
    return None


def approval_body(layout: RunLayout, asked_because: str, links: dict[str, str]) -> str:
    """The approval request a person reads (markdown): why they are asked, the gate table, the
    metrics with their intervals, the slices and links to the reports."""
    metrics = json.loads(layout.metrics.read_text())
    primary = (
        metrics.get("eval", {}).get("primary_metric")
        or json.loads(layout.gate_json.read_text())["primary_metric"]
    )
    lines = [f"**Asked because** {asked_because}.", "", layout.gate_md.read_text().strip(), ""]
    lines += [metrics_markdown(metrics, primary)]
    if links:
        lines += ["", "Reports: " + " · ".join(f"[{name}]({url})" for name, url in links.items())]
    return "\n".join(lines) + "\n"


def metrics_markdown(metrics: dict, primary: str) -> str:
    """The headline metrics of every model with their intervals, then the slices (markdown)."""
    return "\n".join(_metrics_table(metrics, primary) + [""] + _slices_table(metrics, primary))


def headline(metrics: dict, primary: str) -> dict:
    """The primary metric of each model with its interval, and the differences' intervals."""
    out = {
        model: {primary: metrics[model][primary], "ci": metrics[model].get("ci", {}).get(primary)}
        for model in ("challenger", "champion", "popularity", "oracle")
        if model in metrics and primary in metrics[model]
    }
    for pair, values in metrics.get("differences", {}).items():
        if primary in values:
            out[pair] = values[primary]
    return out


def _metrics_table(metrics: dict, primary: str) -> list[str]:
    k = primary.partition("@")[2]
    shown = [primary] + [m for m in (f"ndcg@{k}", "ndcg@10") if m in metrics["challenger"]]
    shown = list(dict.fromkeys(shown))
    confidence = metrics.get("eval", {}).get("bootstrap", {}).get("confidence")
    head = f"| model | {' | '.join(shown)} |"
    lines = [
        f"**Metrics** (mean{f' [{confidence:.0%} interval]' if confidence else ''}, "
        f"{metrics['challenger'].get('queries', '?')} eval queries)",
        "",
        head,
        "| --- |" + " --- |" * len(shown),
    ]
    for model in ("challenger", "champion", "popularity"):
        if model not in metrics:
            continue
        cells = []
        for name in shown:
            value, ci = metrics[model].get(name), metrics[model].get("ci", {}).get(name)
            cells.append(
                "-" if value is None
                else f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
            )  # fmt: skip
        lines.append(f"| {model} | {' | '.join(cells)} |")
    return lines


def _slices_table(metrics: dict, primary: str) -> list[str]:
    slices = metrics["challenger"].get("slices") or {}
    names = [name for name, values in slices.items() if primary in values]
    if not names:
        return []
    models = [m for m in ("challenger", "champion", "popularity") if m in metrics]
    lines = [f"**Slices** ({primary})", "", f"| slice | {' | '.join(models)} |",
             "| --- |" + " --- |" * len(models)]  # fmt: skip
    for name in names:
        cells = []
        for model in models:
            value = (metrics[model].get("slices") or {}).get(name, {}).get(primary)
            cells.append("-" if value is None else f"{value:.4f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


@dataclasses.dataclass(frozen=True)
class ApprovalAnswer:
    """What a person (or the timeout) answered, kept in `RunLayout.approval`."""

    chosen: str  # APPROVE | REJECT | TIMEOUT
    user: str | None
    reason: str
    at: str
    asked_because: str

    @property
    def approved(self) -> bool:
        return self.chosen == APPROVE

    @classmethod
    def from_response(cls, response: dict, asked_because: str) -> ApprovalAnswer:
        """From the HITL operator's result (`chosen_options`, `params_input`,
        `responded_by_user`, `responded_at`); no user = the timeout's default answer."""
        user = response.get("responded_by_user")
        name = user.get("name") or user.get("id") if isinstance(user, dict) else user
        chosen = response["chosen_options"][0].lower()
        at = response.get("responded_at") or dt.datetime.now(dt.UTC)
        return cls(
            chosen=chosen if name else TIMEOUT,
            user=name or None,
            reason=str((response.get("params_input") or {}).get("reason") or "").strip(),
            at=at.isoformat() if isinstance(at, dt.datetime) else str(at),
            asked_because=asked_because,
        )

    def write(self, layout: RunLayout) -> None:
        layout.approval.parent.mkdir(parents=True, exist_ok=True)
        layout.approval.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def read(cls, layout: RunLayout) -> ApprovalAnswer | None:
        if not layout.approval.is_file():
            return None
        return cls(**json.loads(layout.approval.read_text()))

    def line(self) -> str:
        """One sentence: who answered what, and why."""
        why = f": {self.reason}" if self.reason else ""
        if self.chosen == TIMEOUT:
            return f"no answer before the approval timeout (asked because {self.asked_because})"
        return f"{'approved' if self.approved else 'rejected'} by {self.user}{why}"
