"""`render_report` on a small hand-written `metrics.json`, and `plot_recall`."""

from __future__ import annotations

import numpy as np

from pipelines.evaluation import PLOT_FILE, plot_recall, render_report

COLUMNS = ["recall@10", "recall@50", "ndcg@10", "ndcg@50", "hit_rate@50", "mrr@50", "coverage@50"]


def section(base: float, ci: bool = True) -> dict:
    out = {c: base + i / 100 for i, c in enumerate(COLUMNS)}
    if ci:
        out["ci"] = {c: [v - 0.01, v + 0.01] for c, v in out.items() if c != "coverage@50"}
    return out


def metrics(**eval_extra) -> dict:
    return {
        "eval": {
            "queries": 1234,
            "items": 5000,
            "window": {"eval_start": "2026-03-01", "window_end": "2026-03-08"},
            "ks": [10, 50],
            "primary_metric": "recall@50",
            **eval_extra,
        },
        "challenger": {
            **section(0.3),
            "slices": {
                "warm_users": {"queries": 1000, "recall@50": 0.35},
                "cold_users": {"queries": 234, "recall@50": 0.1},
            },
        },
        "popularity": section(0.1, ci=False),
        "ann": {
            "kind": "tree_ah",
            "k": 50,
            "recall@50": 0.9712,
            "queries": 1234,
            "latency_p50_ms": 0.4,
            "latency_p99_ms": 1.1,
            "qps_batched": 9000,
            "size_mb": 1.5,
            "build_seconds": 2.0,
        },
    }


def test_one_row_per_evaluated_model_with_intervals_where_there_are_any():
    lines = render_report(metrics()).splitlines()
    assert lines[0] == "# Evaluation"
    assert lines[2] == (
        "1,234 eval queries, 5,000 catalog items, eval period 2026-03-01 .. 2026-03-08; "
        "seen items excluded; primary metric **recall@50**."
    )
    header = lines.index("| model | " + " | ".join(COLUMNS) + " |")
    challenger, popularity = lines[header + 2], lines[header + 3]
    assert challenger.startswith("| challenger | 0.3000 [0.2900, 0.3100] | 0.3100 [0.3000, 0.3200]")
    assert challenger.endswith("| 0.3600 |")  # coverage: no interval
    assert (
        popularity
        == "| popularity | "
        + " | ".join(f"{0.1 + i / 100:.4f}" for i in range(len(COLUMNS)))
        + " |"
    )
    assert not any(line.startswith("| champion") or "Differences" in line for line in lines)
    assert "| warm_users | 1,000 | 0.3500 |" in lines and "| cold_users | 234 | 0.1000 |" in lines
    assert any(
        line.startswith("tree_ah: recall@50 vs exact search 0.9712 on 1,234") for line in lines
    )
    assert lines[-1] == f"![Recall@K]({PLOT_FILE})"


def test_protocol_lines_say_what_was_left_out_and_how_it_was_measured():
    report = render_report(
        metrics(
            warm_queries=1000,
            cold_queries=234,
            split={"design": "temporal", "reason": "enough history"},
            champion_excluded="no production bundle yet",
            final_fit={"epochs": 2, "trained_until": "2026-03-08"},
            champion_weights="its evaluated/ weights",
            bootstrap={"samples": 1000, "confidence": 0.95, "seed": 0},
        )
    )
    assert "Queries by user: 1,000 warm (in the training vocabulary), 234 cold." in report
    assert "Eval design: **temporal**: enough history." in report
    assert "The production model was not evaluated: no production bundle yet." in report
    assert "for 2 epoch(s), up to 2026-03-08" in report
    assert "Champion measured on its evaluated/ weights." in report
    assert "Brackets: 95% percentile-bootstrap intervals over the eval queries (1,000 " in report


def test_differences_are_significant_only_when_the_interval_excludes_zero():
    m = metrics(bootstrap={"samples": 1000, "confidence": 0.9, "seed": 0})
    m["differences"] = {
        "challenger-popularity": {
            "recall@50": {"diff": 0.2, "ci": [0.15, 0.25]},
            "mrr@50": {"diff": -0.01, "ci": [-0.03, 0.01]},
            "not_a_column@7": {"diff": 1.0, "ci": [1.0, 1.0]},
        }
    }
    lines = render_report(m).splitlines()
    assert "| comparison | metric | difference | 90% interval | significant |" in lines
    rows = [line for line in lines if line.startswith("| challenger-popularity")]
    assert rows == [
        "| challenger-popularity | recall@50 | +0.2000 | [+0.1500, +0.2500] | yes |",
        "| challenger-popularity | mrr@50 | -0.0100 | [-0.0300, +0.0100] | no: inside the noise |",
    ]


def test_plot_recall_writes_a_png(tmp_path):
    path = tmp_path / PLOT_FILE
    plot_recall(
        {"challenger": np.linspace(0.1, 0.5, 50), "oracle": np.linspace(0.2, 0.9, 50)}, path
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
