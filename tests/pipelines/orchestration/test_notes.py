"""Run notes from run directories built on disk: each outcome's exact headline and details."""

from __future__ import annotations

import json

import pytest

from pipelines.layout import RunLayout, RunSummary
from pipelines.orchestration.approval import ApprovalAnswer
from pipelines.orchestration.links import run_url
from pipelines.orchestration.notes import NOTE_LIMIT, run_note

RULES = ("beats_popularity", "no_regression", "ann_recall", "latency_p99")
BAD_FILE = "/data/bad/interactions/dt=2026-01-10/part-00000.parquet"


def _run(tmp_path, *, decision="promote", promoted=True, failed=(), champion=0.405, ci=True,
         source=None) -> RunLayout:  # fmt: skip
    """A finished run directory: raw report, metrics, gate decision, summary."""
    root = tmp_path / "artifacts"
    layout = RunLayout.for_run(root, "manual__2026-01-15T00_00_00_00_00")
    layout.evaluation.mkdir(parents=True)
    _validation(layout, source or str(root / "landing" / "small"), [])
    metrics = {
        "challenger": {"recall@100": 0.4123, **({"ci": {"recall@100": [0.402, 0.422]}} if ci else {})},
        "popularity": {"recall@100": 0.29},
        "eval": {"primary_metric": "recall@100"},
    }  # fmt: skip
    if champion is not None:
        metrics["champion"] = {"recall@100": champion}
    layout.metrics.write_text(json.dumps(metrics))
    layout.report.write_text("# report\n")
    rules = [{"name": n, "threshold": "t", "measured": f"m-{n}", "passed": n not in failed}
             for n in RULES]  # fmt: skip
    layout.gate_json.write_text(json.dumps({
        "promote": promoted, "decision": decision, "primary_metric": "recall@100", "rules": rules,
    }))  # fmt: skip
    layout.gate_md.write_text("# Gate\n")
    RunSummary.of(
        layout, champion="0a1b2c3d" if champion is not None else None, decision=decision,
        promoted=promoted, production_bundle="1e67f00d" if promoted else "0a1b2c3d",
    ).write(layout)  # fmt: skip
    return layout


def _validation(layout: RunLayout, source: str, failures: list[dict], report="raw_report"):
    out = layout.run_dir / report
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.html").write_text("<html></html>")
    passed = {"table": "items", "file": "items.parquet", "column": None, "rule": "ok",
              "check": "x", "success": True, "failed": 0, "total": 10, "samples": []}  # fmt: skip
    results = [passed] + [{**passed, "success": False, **f} for f in failures]
    (out / "validation.json").write_text(json.dumps({
        "source": source, "format": "contract", "rows": 100, "success": not failures,
        "results": results,
    }))  # fmt: skip


def _answer(layout, chosen, user, reason="", because="promotion.mode is approve"):
    ApprovalAnswer(chosen, user, reason, "2026-01-15T01:00:00+00:00", because).write(layout)


def test_promoted_run_names_bundle_metric_interval_champion_source_and_links(tmp_path):
    layout = _run(tmp_path)
    note = run_note(layout.run_dir, "success", run_type="manual", triggered_by="admin")
    lines = note.splitlines()
    assert lines[0] == "promoted 1e67… R@100 0.412 ± 0.010 vs champion 0.405"
    assert "- gate: promote (all 4 rules passed)" in lines
    assert "- production: 1e67… (was 0a1b…)" in lines
    assert "- source: synthetic preset small" in lines
    assert "- started by a manual trigger (admin)" in lines
    name = layout.run_id
    assert lines[-1] == (
        f"reports: [run]({run_url(name)}) · [evaluation]({run_url(name, 'evaluation/report.md')})"
        f" · [gate]({run_url(name, 'evaluation/gate.md')})"
        f" · [data checks]({run_url(name, 'raw_report/index.html')})"
    )


def test_first_promotion_without_interval_says_no_champion(tmp_path):
    layout = _run(tmp_path, champion=None, ci=False)
    assert run_note(layout.run_dir, "success").splitlines()[0] == (
        "promoted 1e67… R@100 0.412 vs no champion"
    )


def test_gate_rejection_names_the_failed_rules_and_what_they_measured(tmp_path):
    layout = _run(tmp_path, decision="reject (failed: beats_popularity, no_regression)",
                  promoted=False, failed=("beats_popularity", "no_regression"))  # fmt: skip
    lines = run_note(layout.run_dir, "success", run_type="scheduled").splitlines()
    assert lines[0] == (
        "rejected: beats_popularity, no_regression (R@100 0.412 ± 0.010 vs champion 0.405)"
    )
    assert lines[2:4] == [
        "- production unchanged: 0a1b…",
        "- gate: reject (failed: beats_popularity, no_regression)",
    ]
    assert lines[-4:-2] == [  # each failed rule's measurement, last: dropped first when long
        "- ✗ beats_popularity: m-beats_popularity",
        "- ✗ no_regression: m-no_regression",
    ]
    assert "- production unchanged: 0a1b…" in lines
    assert "- started by the timer" in lines


def test_forced_promotion_says_forced_and_which_rules_failed(tmp_path):
    layout = _run(tmp_path, decision="promote (forced; failed: beats_popularity)",
                  failed=("beats_popularity",))  # fmt: skip
    assert run_note(layout.run_dir, "success").splitlines()[0] == (
        "promoted 1e67… R@100 0.412 ± 0.010 vs champion 0.405 (forced; failed: beats_popularity)"
    )


def test_approved_promotion_says_who_approved(tmp_path):
    layout = _run(tmp_path)
    _answer(layout, "approve", "op", "slices look fine")
    lines = run_note(layout.run_dir, "success").splitlines()
    assert lines[0] == "promoted 1e67… R@100 0.412 ± 0.010 vs champion 0.405 (approved by op)"
    assert "- approval: approved by op: slices look fine" in lines
    assert "- asked because promotion.mode is approve" in lines


def test_person_rejecting_says_who_and_why_and_production_unchanged(tmp_path):
    layout = _run(tmp_path, promoted=False)
    _answer(layout, "reject", "op", "cold users regress")
    lines = run_note(layout.run_dir, "success").splitlines()
    assert lines[0] == "rejected by op: cold users regress"
    assert "- approval: rejected by op: cold users regress" in lines
    assert "- production unchanged: 0a1b…" in lines


def test_approval_timeout_leaves_production_and_says_so(tmp_path):
    layout = _run(tmp_path, promoted=False)
    _answer(layout, "timeout", None)
    lines = run_note(layout.run_dir, "success").splitlines()
    assert lines[0] == "not promoted: no approval answer before the timeout"
    assert (
        "- approval: no answer before the approval timeout (asked because promotion.mode is "
        "approve)" in lines
    )


def test_dry_run_says_what_it_would_have_done(tmp_path):
    layout = _run(tmp_path, decision="dry run: would promote", promoted=False)
    assert run_note(layout.run_dir, "success").splitlines()[0] == (
        "dry run: would promote (R@100 0.412 ± 0.010 vs champion 0.405)"
    )


def test_data_check_failure_names_rules_partitions_counts_and_source(tmp_path):
    layout = RunLayout(tmp_path / "artifacts" / "runs" / "asset_triggered__x")
    _validation(layout, "/data/bad", [
        {"table": "interactions", "file": BAD_FILE, "column": "user_id",
         "rule": "user_id must not be null", "failed": 3, "total": 8121},
        {"table": "interactions", "file": BAD_FILE, "column": "weight",
         "rule": "weight must be positive", "failed": 1, "total": 8121},
        {"table": "items", "file": "<2 files>", "column": None, "rule": "ids unique", "failed": 2,
         "total": 0},
    ])  # fmt: skip
    note = run_note(layout.run_dir, "failed", failed_tasks=["validate_raw"],
                    run_type="asset_triggered", message="task_failure")  # fmt: skip
    lines = note.splitlines()
    assert lines[0] == "data check failed: 3 rules in dt=2026-01-10, items"
    assert (
        "- ✗ interactions.user_id: user_id must not be null — 3 of 8,121 rows in "
        "dt=2026-01-10/part-00000.parquet" in lines
    )
    assert "- ✗ items.*: ids unique — 2 rows in items" in lines
    assert "- production unchanged (the run stopped before promotion)" in lines
    assert "- source: `/data/bad`" in lines
    assert "- started by a landing asset event" in lines
    assert f"[data checks]({run_url(layout.run_id, 'raw_report/index.html')})" in lines[-1]


def test_feature_check_failure_is_named_as_such(tmp_path):
    layout = RunLayout(tmp_path / "artifacts" / "runs" / "r")
    _validation(layout, "/data/good", [])
    _validation(layout, "/ignored", [{"table": "features", "file": "<3 files>",
                                      "rule": "no eval row before the cut", "failed": 5}],
                report="features_report")  # fmt: skip
    assert run_note(layout.run_dir, "failed", failed_tasks=["validate_features"]).startswith(
        "feature check failed: 1 rule in features\n"
    )


def test_other_failure_names_the_failed_task_and_airflow_reason(tmp_path):
    layout = _run(tmp_path)
    layout.summary.unlink()
    lines = run_note(layout.run_dir, "failed", failed_tasks=["train"]).splitlines()
    assert lines[0] == "failed in train"
    assert "- failed task: train" in lines
    timed_out = run_note(tmp_path / "missing", "failed", message="timed_out").splitlines()
    assert timed_out[:4] == [
        "failed (the run timed out (dagrun_timeout))", "", "- failed task: none",
        "- Airflow: the run timed out (dagrun_timeout)",
    ]  # fmt: skip


def test_success_without_summary_says_so_instead_of_raising(tmp_path):
    layout = _run(tmp_path)
    layout.summary.write_text("{not json")
    assert run_note(layout.run_dir, "success").startswith(
        "succeeded without a readable run summary\n"
    )
    marked = run_note(tmp_path / "none", "success", message="state manually set to `success`")
    assert marked.startswith("succeeded without a readable run summary (state manually set to ")


@pytest.mark.parametrize("failures", [40, 400])
def test_note_fits_the_note_column(tmp_path, failures):
    layout = RunLayout(tmp_path / "artifacts" / "runs" / "r")
    _validation(layout, "/data/bad", [
        {"table": "interactions", "file": f"/d/interactions/dt=2026-01-{i % 28 + 1:02d}/p.parquet",
         "column": "user_id", "rule": "user_id must not be null " + "x" * 30, "failed": i}
        for i in range(failures)
    ])  # fmt: skip
    note = run_note(layout.run_dir, "failed", failed_tasks=["validate_raw"])
    assert len(note) <= NOTE_LIMIT
    assert note.splitlines()[0] == (
        f"data check failed: {failures} rules in dt=2026-01-01, dt=2026-01-02, dt=2026-01-03 "
        "and 25 more"
    )
    lines = note.splitlines()
    assert lines[2:4] == [  # what the run did and read survive; the rule lines are cut
        "- production unchanged (the run stopped before promotion)",
        "- source: `/data/bad`",
    ]
    assert "- … (more in the reports)" in lines and lines[-1].startswith("reports: ")
