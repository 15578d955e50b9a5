"""The note of a `two_tower_retrain` DAG run: what the run did, in the words on-call looks for.

`run_note` reads only the run directory (`RunLayout`): `summary.json`, the gate's decision and
the metrics, a person's approval answer, the data checks' reports, and the source the run read.
The first line is the headline shown in the run list ("promoted 1e67… R@100 0.412 ± 0.010 vs
champion 0.405", "rejected: beats_popularity", "data check failed: 3 rules in dt=2026-01-10");
the lines after it are markdown bullets with the details and links to the reports in the
Two-tower view. `listener.py` writes it as the run's note when the run ends.

Pure: no Airflow, no clock; what Airflow knows and the run directory does not (which tasks
failed, how the run was started) is passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from pipelines.layout import LANDING, RunLayout, RunSummary
from pipelines.orchestration.approval import TIMEOUT, ApprovalAnswer
from pipelines.orchestration.links import run_url

# `dag_run_note.content` is a String(1000) column (enforced by PostgreSQL and MySQL).
NOTE_LIMIT = 1000
# The file a data_checks `ValidationReport` writes into its report directory.
VALIDATION_JSON = "validation.json"
# How the run was started, by Airflow's `DagRunType` value.
STARTED_BY = {
    "scheduled": "the timer",
    "asset_triggered": "a landing asset event",
    "asset_materialization": "an asset materialization request",
    "manual": "a manual trigger",
    "backfill": "a backfill",
    "operator_triggered": "another DAG",
}
_METRIC_NAMES = {"recall": "R", "ndcg": "NDCG", "hit_rate": "HR", "mrr": "MRR"}
_SHOWN_LOCATIONS = 3
# Airflow's reasons for a failed run, as said in a note (None: the failed task says it all).
_MESSAGES = {
    "task_failure": None,
    "timed_out": "the run timed out (dagrun_timeout)",
    "all_tasks_deadlocked": "no task could run (upstream tasks failed or were removed)",
}


def run_note(
    run_dir: str | Path,
    state: str,
    *,
    failed_tasks: Sequence[str] = (),
    run_type: str | None = None,
    triggered_by: str | None = None,
    message: str | None = None,
) -> str:
    """The markdown note of the DAG run whose run directory is `run_dir`.

    Args:
        run_dir: `<artifact_root>/runs/<safe run id>/` (may be missing or partly written).
        state: the run's final state, "success" or "failed".
        failed_tasks: ids of the tasks that failed (a failed run).
        run_type: Airflow's run type value ("manual", "scheduled", "asset_triggered", ...).
        triggered_by: the user who triggered a manual run.
        message: Airflow's reason for the state change ("task_failure", "timed_out", ...).

    Returns:
        At most `NOTE_LIMIT` characters; the first line is the headline.
    """
    layout = RunLayout(Path(run_dir))
    if state == "success":
        headline, details, evidence = _success(layout, message)
    else:
        headline, details, evidence = _failure(layout, failed_tasks, message)
    details += _provenance(layout, run_type, triggered_by)
    return _fit(headline, details + evidence, _links(layout))


def _success(layout: RunLayout, message: str | None) -> tuple[str, list[str], list[str]]:
    """Headline, details and evidence (each failed rule's measurement) of a run that ended
    green: promoted, rejected or a dry run."""
    try:
        summary = RunSummary.read(layout)
    except Exception as exc:  # noqa: BLE001 - a note explains, it never raises
        why = f" ({message})" if message and message != "success" else ""
        return f"succeeded without a readable run summary{why}", [f"- {exc}"], []
    gate = _read_json(layout.gate_json) or {}
    metrics = _read_json(layout.metrics) or {}
    primary = gate.get("primary_metric") or metrics.get("eval", {}).get("primary_metric")
    measured = _metric_line(metrics, primary) if primary else None
    rules = gate.get("rules") or []
    failed = [r["name"] for r in rules if not r.get("passed")]
    answer = ApprovalAnswer.read(layout)
    details = [_production_line(summary)]
    if answer is not None:
        details.append(f"- approval: {answer.line()}")
        if answer.asked_because and answer.chosen != TIMEOUT:
            details.append(f"- asked because {answer.asked_because}")
    # summary.decision also carries the approval answer, said on its own line above
    passed = f" (all {len(rules)} rules passed)" if rules and not failed else ""
    details.append(f"- gate: {gate.get('decision', summary.decision)}{passed}")
    evidence = [f"- ✗ {r['name']}: {r.get('measured', '')}" for r in rules if not r.get("passed")]

    if summary.promoted:
        bundle = _short(summary.production_bundle)
        notes = []
        if "forced" in summary.decision:
            notes.append("forced")
        if failed:
            notes.append(f"failed: {', '.join(failed)}")
        if answer is not None and answer.approved:
            notes.append(f"approved by {answer.user}")
        suffix = f" ({'; '.join(notes)})" if notes else ""
        headline = f"promoted {bundle} {measured or ''}".rstrip() + suffix
    elif answer is not None and answer.chosen == TIMEOUT:
        headline = "not promoted: no approval answer before the timeout"
    elif answer is not None and not answer.approved:
        headline = f"rejected by {answer.user}" + (f": {answer.reason}" if answer.reason else "")
    else:
        in_brackets = f" ({measured})" if measured else ""
        if summary.decision.startswith("dry run"):
            headline = f"{summary.decision}{in_brackets}"
        elif failed:
            headline = f"rejected: {', '.join(failed)}{in_brackets}"
        else:
            headline = f"not promoted (gate: {summary.decision}){in_brackets}"
    return headline, details, evidence


def _failure(
    layout: RunLayout, failed_tasks: Sequence[str], message: str | None
) -> tuple[str, list[str], list[str]]:
    """Headline, details and evidence (each failed data rule) of a failed run: the data check
    that failed, else the task."""
    for report_dir, what in ((layout.raw_report, "data check"),
                             (layout.features_report, "feature check")):  # fmt: skip
        report = _read_json(report_dir / VALIDATION_JSON)
        if report and report.get("success") is False:
            failures = [r for r in report.get("results", []) if not r.get("success")]
            rules = f"{len(failures)} rule{'s' if len(failures) != 1 else ''}"
            return (
                f"{what} failed: {rules} in {_locations(failures)}",
                ["- production unchanged (the run stopped before promotion)"],
                [_failure_line(r) for r in failures],
            )
    tasks = ", ".join(failed_tasks)
    why = _MESSAGES.get(message or "", message)
    details = [f"- failed task{'s' if len(failed_tasks) > 1 else ''}: {tasks or 'none'}"]
    if why:
        details.append(f"- Airflow: {why}")
    if not failed_tasks:
        return f"failed ({why})" if why else "failed", details, []
    return f"failed in {tasks}", details, []


def _provenance(layout: RunLayout, run_type: str | None, triggered_by: str | None) -> list[str]:
    """Which source the run read and what started it."""
    lines = []
    source = _source(layout)
    if source:
        lines.append(f"- source: {source}")
    if run_type:
        started = STARTED_BY.get(run_type, run_type)
        lines.append(f"- started by {started}" + (f" ({triggered_by})" if triggered_by else ""))
    return lines


def _source(layout: RunLayout) -> str | None:
    """The source the run read, as the raw data report records it: a directory, or the
    synthetic preset when it is the preset's landing under the artifact root."""
    report = _read_json(layout.raw_report / VALIDATION_JSON) or {}
    source = report.get("source")
    if not source:
        return None
    path = Path(source)
    landing = layout.run_dir.parent.parent / LANDING  # <artifact_root>/runs/<id>/
    if path.parent == landing or path.parent.resolve() == landing.resolve():
        return f"synthetic preset {path.name}"
    return f"`{source}`"


def _links(layout: RunLayout) -> str:
    """Markdown links to the run's page in the Two-tower view (every report, the plot and the
    feature checks included) and to the reports on-call opens first, when they exist."""
    files = [
        ("evaluation", layout.report),
        ("gate", layout.gate_md),
        ("data checks", layout.raw_report / "index.html"),
    ]
    name = layout.run_id
    links = [f"[run]({run_url(name)})"]
    links += [
        f"[{label}]({run_url(name, str(path.relative_to(layout.run_dir)))})"
        for label, path in files
        if path.is_file()
    ]
    return "reports: " + " · ".join(links)


def _fit(headline: str, details: list[str], links: str) -> str:
    """Headline, details and links within `NOTE_LIMIT`: details are dropped from the end (and
    said to be), then the links, before the headline is cut."""
    body = list(details)
    while True:
        text = "\n".join([headline, "", *body, "", links]).rstrip()
        if len(text) <= NOTE_LIMIT or not body:
            break
        body = body[:-2] + ["- … (more in the reports)"] if len(body) > 1 else []
    if len(text) > NOTE_LIMIT:
        text = "\n".join([headline, "", *body]).rstrip()
    return text[: NOTE_LIMIT - 1] + "…" if len(text) > NOTE_LIMIT else text


def _metric_line(metrics: dict, primary: str) -> str | None:
    """'R@100 0.412 ± 0.010 vs champion 0.405': the challenger's primary metric, half its
    bootstrap interval's width, and the champion's value (or 'no champion')."""
    challenger = metrics.get("challenger") or {}
    value = challenger.get(primary)
    if value is None:
        return None
    ci = (challenger.get("ci") or {}).get(primary)
    spread = f" ± {(ci[1] - ci[0]) / 2:.3f}" if ci else ""
    champion = (metrics.get("champion") or {}).get(primary)
    versus = f"vs champion {champion:.3f}" if champion is not None else "vs no champion"
    return f"{_metric_name(primary)} {value:.3f}{spread} {versus}"


def _metric_name(metric: str) -> str:
    """'recall@100' -> 'R@100'."""
    name, at, k = metric.partition("@")
    return f"{_METRIC_NAMES.get(name, name)}{at}{k}"


def _production_line(summary: RunSummary) -> str:
    now = _short(summary.production_bundle) if summary.production_bundle else "none"
    if summary.promoted:
        was = _short(summary.champion) if summary.champion else "none"
        return f"- production: {now} (was {was})"
    return f"- production unchanged: {now}"


def _failure_line(result: dict) -> str:
    """'- ✗ interactions.user_id: user_id must not be null — 3 of 100,362 rows in dt=…/part….'"""
    where = f"{result.get('table')}.{result.get('column') or '*'}"
    total = f" of {result['total']:,}" if result.get("total") else ""
    return (
        f"- ✗ {where}: {result.get('rule')} — {result.get('failed', 0):,}{total} rows "
        f"in {_location(result)}"
    )


def _locations(results: list[dict]) -> str:
    """The partitions (else files, else tables) the failures are in: 'dt=2026-01-10, …'."""
    places = list(dict.fromkeys(_location(r, short=True) for r in results))
    shown = ", ".join(places[:_SHOWN_LOCATIONS])
    more = len(places) - _SHOWN_LOCATIONS
    return shown + (f" and {more} more" if more > 0 else "")


def _location(result: dict, short: bool = False) -> str:
    """A failure's place: its partition `dt=…` (with the file unless `short`), its file name,
    or its table when the rows come from many files."""
    file = str(result.get("file") or "")
    partition = re.search(r"(?:^|/)(dt=[^/]+)", file)
    if partition:
        return partition.group(1) if short else f"{partition.group(1)}/{Path(file).name}"
    if file and not file.startswith("<"):
        return Path(file).name
    return str(result.get("table") or "the data")


def _short(bundle_id: str | None) -> str:
    """The first four characters of a bundle id and an ellipsis, as on-call says it."""
    return f"{bundle_id[:4]}…" if bundle_id else "none"


def _read_json(path: Path) -> dict | None:
    """A JSON file's object, or None when it is missing or not JSON."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
