"""The human-readable side of an evaluation: `report.md` and the recall@K plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.layout import PLOT_FILE  # next to `report.md`, which links to it

# Report rows, in this order, for the models that were evaluated.
MODELS = ("challenger", "champion", "popularity", "oracle")


def plot_recall(curves: dict[str, np.ndarray], path: Path) -> None:
    """Recall@K for K = 1..kmax, one line per model, as a PNG.

    Args:
        curves: model name -> recall `[kmax]` (`pipelines.metrics.recall_curve`).
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for name, curve in curves.items():
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            label=name,
            linestyle="--" if name == "oracle" else "-",
        )
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_title("Recall@K on the eval period (seen items excluded)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_report(metrics: dict) -> str:
    """Markdown: one row per model (with intervals), the differences, slices, the index.

    Args:
        metrics: the `metrics.json` content (`eval`, `challenger` with `slices`, `ann`, and
            any other evaluated models and `differences`).
    """
    ev = metrics["eval"]
    models = [m for m in MODELS if m in metrics]
    kmax = max(ev["ks"])
    columns = [f"recall@{k}" for k in ev["ks"]] + [f"ndcg@{k}" for k in ev["ks"] if k in (10, kmax)]
    columns += [f"hit_rate@{kmax}", f"mrr@{kmax}", f"coverage@{kmax}"]
    lines = [
        "# Evaluation",
        "",
        *_protocol_lines(ev),
        "| model | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_cell(metrics[m], c) for c in columns) + " |")
    lines += _differences_lines(metrics, columns)
    lines += [
        "",
        f"## Slices (challenger, recall@{kmax})",
        "",
        "| slice | queries | recall |",
        "| --- | ---: | ---: |",
    ]
    for name, s in metrics["challenger"]["slices"].items():
        lines.append(f"| {name} | {s['queries']:,} | {s[f'recall@{kmax}']:.4f} |")
    ann = metrics["ann"]
    ann_recall = ann[f"recall@{ann['k']}"]
    lines += [
        "",
        "## Index",
        "",
        f"{ann['kind']}: recall@{ann['k']} vs exact search {ann_recall:.4f} on "
        f"{ann['queries']:,} eval queries; p50 {ann['latency_p50_ms']} ms, p99 "
        f"{ann['latency_p99_ms']} ms per query; {ann['qps_batched']} queries/s batched; "
        f"{ann['size_mb']} MB; built in {ann['build_seconds']} s.",
        "",
        f"![Recall@K]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)


def _protocol_lines(ev: dict) -> list[str]:
    """What was evaluated, how the queries split (warm / cold users) and the eval design."""
    lines = [
        f"{ev['queries']:,} eval queries, {ev['items']:,} catalog items, eval period "
        f"{ev['window']['eval_start']} .. {ev['window']['window_end']}; seen items excluded; "
        f"primary metric **{ev['primary_metric']}**.",
        "",
    ]
    if "warm_queries" in ev:
        lines += [
            f"Queries by user: {ev['warm_queries']:,} warm (in the training vocabulary), "
            f"{ev['cold_queries']:,} cold.",
            "",
        ]
    split = ev.get("split") or {}
    if split.get("design"):
        reason = f": {split['reason']}" if split.get("reason") else ""
        lines += [f"Eval design: **{split['design']}**{reason}.", ""]
    if "champion_excluded" in ev:
        lines += [f"The production model was not evaluated: {ev['champion_excluded']}.", ""]
    final = ev.get("final_fit")
    if final:
        lines += [
            "The challenger row (and the gate) measured the selected weights, before the final "
            f"fit. The shipped model additionally trained on the held-out interactions "
            f"(validation and eval, every user's most recent data) for {final['epochs']} "
            f"epoch(s), up to {final['trained_until']}: it cannot be scored on this eval "
            "period, whose labels it trained on.",
            "",
        ]
    if ev.get("champion_weights"):
        lines += [f"Champion measured on {ev['champion_weights']}.", ""]
    boot = ev.get("bootstrap")
    if boot:
        lines += [
            f"Brackets: {boot['confidence']:.0%} percentile-bootstrap intervals over the eval "
            f"queries ({boot['samples']:,} resamples, seed {boot['seed']}); coverage is a "
            "property of the whole set and has none.",
            "",
        ]
    return lines


def _cell(section: dict, metric: str) -> str:
    """`0.3120 [0.2950, 0.3290]` when the metric has an interval, else `0.3120`."""
    ci = section.get("ci", {}).get(metric)
    return f"{section[metric]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _differences_lines(metrics: dict, columns: list[str]) -> list[str]:
    """Paired differences with their intervals; significant = the interval excludes 0."""
    differences = metrics.get("differences")
    if not differences:
        return []
    confidence = metrics["eval"]["bootstrap"]["confidence"]
    lines = [
        "",
        "## Differences (paired, same queries)",
        "",
        f"| comparison | metric | difference | {confidence:.0%} interval | significant |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, by_metric in differences.items():
        for metric in (c for c in columns if c in by_metric):
            d, (low, high) = by_metric[metric]["diff"], by_metric[metric]["ci"]
            verdict = "yes" if low > 0 or high < 0 else "no: inside the noise"
            lines.append(
                f"| {name} | {metric} | {d:+.4f} | [{low:+.4f}, {high:+.4f}] | {verdict} |"
            )
    return lines
