"""The Two-tower view: a FastAPI app the Airflow plugin (`plugin.py`) mounts under `/two-tower`.

    /                           overview: production, bundles (when and by whom each was
                                promoted), history, the last runs' headline metrics as a chart
                                and a table, links to the latest reports, the rollback button
    /runs/<run>/                one run: decision, metrics, gate rules, links to its reports
    /runs/<run>/files/<path>    a report file of the run (markdown rendered to HTML)
    /api/overview               the overview as JSON
    POST /api/rollback          restore the previous production bundle (form or JSON body)

Plain server-rendered HTML with everything escaped; no Airflow import here: the plugin passes
in the two auth dependencies (`reader` guards every page, `operator` the rollback and returns
the acting user's name), so the view is testable without an API server. The artifact root is
read at request time (`artifact_root()`), so a view never serves a stale deployment's files.
On a URL artifact root (s3://, gs://) a run's reports are pulled into the view's own local
copy before they are read or served (`pipelines.artifacts`).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.artifacts import ArtifactRoot
from pipelines.errors import PipelineError
from pipelines.layout import PLOT_FILE, RunLayout, RunSummary
from pipelines.orchestration.approval import ApprovalAnswer
from pipelines.orchestration.events import (
    emit_production_event,
    headline_metrics,
    pointer_event_extra,
)
from pipelines.registry import Registry

DEFAULT_RUNS = 20  # runs on the overview unless `?runs=N`
MAX_RUNS = 500
HISTORY_ROWS = 30
# What a run's files route serves: its reports, never its data or model (a viewer may read
# the reports; the snapshot holds the source's rows).
REPORT_DIRS = ("evaluation", "raw_report", "features_report")
REPORT_FILES = ("summary.json",)
# Served files run sandboxed (no same-origin access: a Data Docs page's scripts cannot call
# the API with the viewer's cookie) and are never content-sniffed.
FILE_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups",
    "X-Content-Type-Options": "nosniff",
}


def default_artifact_root() -> str:
    """The deployment's artifact root, as the DAG's tasks see it (settings + config): a local
    directory or a URL (`pipelines.artifacts`)."""
    from pipelines.config import DeploymentSettings

    return DeploymentSettings.from_env().load_config().data.artifact_root


def _reader(artifact_root: str | Path) -> ArtifactRoot:
    """The artifact root as the view reads it: a URL root's run reports are pulled into the
    view's own staging copy (never one a task works in); a local root is read in place."""
    return ArtifactRoot(artifact_root, role="read")


# ---- what the pages show (plain data; the JSON API returns it as is) -----------------------


def headline(metrics: dict | None) -> dict | None:
    """A run's headline numbers from its `evaluation/metrics.json`: the primary metric with its
    95% interval, champion and popularity (`events.headline_metrics`, as production events
    carry them), plus NDCG@10 and the ANN index's p99 latency."""
    if not metrics or not isinstance(metrics.get("challenger"), dict):
        return None
    out = headline_metrics(metrics)
    if not out:
        return None
    return {
        "ci": None, "champion": None, "popularity": None, **out,
        "ndcg@10": metrics["challenger"].get("ndcg@10"),
        "latency_p99_ms": (metrics.get("ann") or {}).get("latency_p99_ms"),
    }  # fmt: skip


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> str:
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return stamp.isoformat(timespec="seconds")


def report_links(layout: RunLayout) -> dict[str, str]:
    """The run's report files that exist: label -> path relative to the run directory."""
    candidates = {
        "Evaluation report": layout.report,
        "Recall@K plot": layout.evaluation / PLOT_FILE,
        "Gate report": layout.gate_md,
        "Raw-data checks (Data Docs)": layout.raw_report / "index.html",
        "Feature checks (Data Docs)": layout.features_report / "index.html",
        "Raw-data check summary": layout.raw_report / "summary.txt",
        "approval.json": layout.approval,
        "metrics.json": layout.metrics,
        "gate.json": layout.gate_json,
        "summary.json": layout.summary,
    }
    return {
        label: path.relative_to(layout.run_dir).as_posix()
        for label, path in candidates.items()
        if path.is_file()
    }


def run_info(layout: RunLayout) -> dict:
    """One run as the pages show it (missing files leave their fields None)."""
    summary = None
    if layout.summary.is_file():
        try:
            summary = RunSummary.read(layout).to_dict()
        except PipelineError:
            summary = None
    gate = _json(layout.gate_json) or {}
    try:
        approval = ApprovalAnswer.read(layout)
    except (OSError, ValueError, TypeError):  # unreadable: shown as no answer
        approval = None
    return {
        "run": layout.run_id,
        "finished_at": _mtime(layout.summary) if layout.summary.is_file() else None,
        "decision": (summary or {}).get("decision") or gate.get("decision"),
        "promoted": (summary or {}).get("promoted"),
        "champion": (summary or {}).get("champion"),
        "production_bundle": (summary or {}).get("production_bundle"),
        "headline": headline(_json(layout.metrics)),
        "approval": approval.line() if approval else None,
        "rules": gate.get("rules", []),
        "failed_rules": [r["name"] for r in gate.get("rules", []) if not r.get("passed")],
        "reports": report_links(layout),
    }


def recent_runs(artifact_root: str | Path, limit: int) -> list[dict]:
    """The last `limit` runs that finished (wrote `summary.json`), oldest first."""
    root = _reader(artifact_root)
    layouts = [root.run_reports(run) for run, _ in root.finished_runs()[-limit:]]
    return [run_info(layout) for layout in layouts if layout is not None]


def overview(artifact_root: str | Path, limit: int = DEFAULT_RUNS) -> dict:
    """Production, the bundles, the registry history and the last runs."""
    registry = Registry(artifact_root)
    history = registry.history()
    pointer = registry.pointer()
    bundles = []
    for bundle in reversed(registry.bundles()):  # newest first
        made = [e for e in history if e.get("bundle_id") == bundle["bundle_id"]]
        promoted = [e for e in made if e.get("event") == "promote"]
        run = bundle.get("run_id")
        bundles.append(
            {
                **bundle,
                "promoted": promoted[-1] if promoted else None,
                "last_event": made[-1] if made else None,
                "run_page": bool(run) and _run_exists(artifact_root, run),
                "headline": headline(registry.manifest(bundle["bundle_id"]).get("metrics")),
            }
        )  # fmt: skip
    return {
        "artifact_root": str(artifact_root),
        "production": pointer,
        "rollback_to": (pointer or {}).get("previous"),
        "bundles": bundles,
        "history": list(reversed(history))[:HISTORY_ROWS],
        "runs": recent_runs(artifact_root, limit),
    }


def _run_exists(artifact_root: str | Path, run: str) -> bool:
    try:
        return _reader(artifact_root).has_run(run)
    except PipelineError:
        return False


def _run_layout(artifact_root: str | Path, run: str) -> RunLayout:
    """The run's local layout with its reports (pulled from a URL root); 404 if no such run."""
    try:
        layout = _reader(artifact_root).run_reports(run)
    except PipelineError:
        raise HTTPException(404, "no such run") from None
    if layout is None:
        raise HTTPException(404, "no such run")
    return layout


def report_file(layout: RunLayout, relative: str) -> Path:
    """The report file `relative` of the run, resolved; 404 for anything outside the run's
    report directories (`..`, symlinks out, data, models) or not a file."""
    run_dir = layout.run_dir.resolve()
    target = (run_dir / relative).resolve()
    allowed = [run_dir / d for d in REPORT_DIRS]
    inside = any(target.is_relative_to(d) for d in allowed) or target in [
        run_dir / f for f in REPORT_FILES
    ]
    if not inside or not target.is_file():
        raise HTTPException(404, "no such report file")
    return target


# ---- HTML ----------------------------------------------------------------------------------

esc = html.escape

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2rem 1.6rem;color:#1a202c;background:#fff}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
table{border-collapse:collapse;margin:.4rem 0}th,td{border:1px solid #d5dae1;padding:.25rem .55rem;
text-align:left;vertical-align:top}th{background:#f1f4f8}td.num{text-align:right;
font-variant-numeric:tabular-nums}code{font-size:.92em}.prod{background:#e6f6ea}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.85em;background:#e2e8f0}
.ok{background:#c6f0d0}.no{background:#fde2e1}.muted{color:#6b7480}a{color:#1f5fbf}
form.rollback{border:1px solid #f0b8b5;background:#fff6f5;padding:.7rem;margin:.6rem 0;max-width:48rem}
form.rollback input[type=text]{width:26rem}button{padding:.3rem .8rem}
nav a{margin-right:1rem}img.plot{max-width:100%;border:1px solid #d5dae1}
"""


def page(title: str, body: str, status_code: int = 200, home: str = "") -> HTMLResponse:
    """A whole page; `home` is the relative link back to the overview."""
    nav = f"<nav><a href='{esc(home)}'>Two-tower overview</a></nav>" if home else ""
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body>{nav}<h1>{esc(title)}</h1>{body}</body></html>",
        status_code=status_code,
    )


def _num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "–"


def _metric_cell(head: dict | None) -> str:
    if not head or head.get("value") is None:
        return "<td class='num muted'>–</td>"
    ci = head.get("ci")
    interval = f" <span class='muted'>[{_num(ci[0])}, {_num(ci[1])}]</span>" if ci else ""
    return f"<td class='num'>{_num(head['value'])}{interval}</td>"


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows) or '<tr><td colspan=99>none</td></tr>'}</table>"


def _run_link(run: str | None, known: bool = True) -> str:
    """A link from the overview to a run's page (plain text when `known` is False)."""
    if not run:
        return "–"
    return f"<a href='runs/{esc(quote(run, safe=''))}/'>{esc(run)}</a>" if known else esc(run)


def _report_links(run: str, reports: dict[str, str]) -> str:
    """Links from the overview to a run's human-readable reports (not its JSON files)."""
    base = f"runs/{esc(quote(run, safe=''))}/files/"
    return " · ".join(
        f"<a href='{base}{esc(quote(path))}'>{esc(label)}</a>"
        for label, path in reports.items()
        if not label.endswith(".json")
    )


def chart(runs: list[dict], width: int = 760, height: int = 230) -> str:
    """An inline SVG of the primary metric per run (95% interval whiskers, promoted runs filled)
    with the popularity baseline; empty when no run has metrics."""
    points = [
        (r, r["headline"]) for r in runs if r["headline"] and r["headline"]["value"] is not None
    ]
    if not points:
        return "<p class='muted'>No run with evaluation metrics yet.</p>"
    values = [h["value"] for _, h in points] + [
        h["popularity"] for _, h in points if h["popularity"]
    ]
    values += [v for _, h in points if h["ci"] for v in h["ci"]]
    low, high = min(values), max(values)
    pad = max((high - low) * 0.1, 0.01)
    low, high = max(0.0, low - pad), high + pad
    left, right, top, bottom = 56, 16, 14, 34
    span_x = max(len(points) - 1, 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / span_x if len(points) > 1 else 0.5)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - low) / ((high - low) or 1))

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"role='img' aria-label='{esc(points[0][1]['metric'])} per run'>"]  # fmt: skip
    for k in range(5):
        v = low + (high - low) * k / 4
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{y(v):.1f}' y2='{y(v):.1f}' "
                     f"stroke='#e2e8f0'/><text x='{left - 6}' y='{y(v) + 4:.1f}' font-size='11' "
                     f"text-anchor='end' fill='#6b7480'>{v:.3f}</text>")  # fmt: skip
    baseline = [(x(i), y(h["popularity"])) for i, (_, h) in enumerate(points) if h["popularity"]]
    if baseline:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in baseline)
        parts.append(
            f"<polyline points='{path}' fill='none' stroke='#a0aec0' stroke-dasharray='4 3'/>"
        )
    line = " ".join(f"{x(i):.1f},{y(h['value']):.1f}" for i, (_, h) in enumerate(points))
    parts.append(f"<polyline points='{line}' fill='none' stroke='#1f5fbf' stroke-width='1.5'/>")
    for i, (run, h) in enumerate(points):
        if h["ci"]:
            parts.append(f"<line x1='{x(i):.1f}' x2='{x(i):.1f}' y1='{y(h['ci'][0]):.1f}' "
                         f"y2='{y(h['ci'][1]):.1f}' stroke='#1f5fbf'/>")  # fmt: skip
        fill = "#2f9e44" if run["promoted"] else "#fff"
        parts.append(
            f"<circle cx='{x(i):.1f}' cy='{y(h['value']):.1f}' r='4.5' fill='{fill}' "
            f"stroke='#1f5fbf' stroke-width='1.5'><title>{esc(run['run'])}: {esc(h['metric'])} "
            f"{_num(h['value'])} ({esc(str(run['decision']))})</title></circle>"
            f"<text x='{x(i):.1f}' y='{height - 14}' font-size='11' text-anchor='middle' "
            f"fill='#6b7480'>{i + 1}</text>"
        )
    parts.append("</svg>")
    legend = (f"<p class='muted'>{esc(points[0][1]['metric'])} of each run (1 = oldest shown) with its "
              "95% interval; filled = promoted; dashed = popularity baseline.</p>")  # fmt: skip
    return "".join(parts) + legend


def overview_page(data: dict) -> HTMLResponse:
    prod = data["production"]
    if prod:
        who = f" by <b>{esc(prod['user'])}</b>" if prod.get("user") else ""
        status = (f"<p>Production serves <code class='badge ok'>{esc(prod['bundle_id'])}</code> since "
                  f"{esc(prod.get('promoted_at', '?'))} ({esc(prod.get('event', ''))}{who}: "
                  f"{esc(prod.get('reason', ''))}).</p>")  # fmt: skip
    else:
        status = "<p>No production bundle yet.</p>"
    if data["rollback_to"]:
        status += (
            # No confirm() dialog: the UI's iframe sandbox has no allow-modals (it would
            # silently cancel); a required checkbox asks instead.
            "<form class='rollback' method='post' action='api/rollback'>"
            f"<b>Roll back</b> production to <code>{esc(data['rollback_to'])}</code> (the bundle "
            "it served before). Reason: <input type='text' name='reason' required "
            "placeholder='why (recorded in the registry history)'><br><label><input "
            "type='checkbox' name='confirm' required> production will serve "
            f"<code>{esc(data['rollback_to'])}</code></label> <button type='submit'>Roll "
            "back</button><br><span class='muted'>Needs permission to edit runs of the "
            "two_tower_retrain DAG (Airflow role User, Op or Admin).</span></form>"
        )
    bundle_rows = []
    for b in data["bundles"]:
        promoted = b["promoted"] or {}
        by = promoted.get("user") or promoted.get("airflow_run_id") or ""
        serving = " <span class='badge ok'>serving</span>" if b["production"] else ""
        bundle_rows.append(
            f"<tr class='{'prod' if b['production'] else ''}'><td><code>{esc(b['bundle_id'])}</code>"
            f"{serving}</td>"
            f"<td>{esc(b['created_at'] or '')}</td><td>{_run_link(b.get('run_id'), b['run_page'])}</td>"
            f"{_metric_cell(b['headline'])}<td>{esc(promoted.get('promoted_at', '–'))}</td>"
            f"<td>{esc(by) or '–'}</td><td>{esc(promoted.get('reason', ''))}</td></tr>"
        )
    history_rows = [
        f"<tr><td class='num'>{esc(str(h.get('seq', '')))}</td><td>{esc(h.get('promoted_at', ''))}</td>"
        f"<td>{esc(h.get('event', ''))}</td><td><code>{esc(h.get('bundle_id', ''))}</code></td>"
        f"<td><code>{esc(h.get('from') or h.get('previous') or '')}</code></td>"
        f"<td>{esc(h.get('user') or '')}</td><td>{esc(h.get('airflow_run_id') or '')}</td>"
        f"<td>{esc(h.get('reason', ''))}</td></tr>"
        for h in data["history"]
    ]
    run_rows = []
    for r in reversed(data["runs"]):
        head = r["headline"] or {}
        decision = esc(str(r["decision"] or "–"))
        badge = "ok" if r["promoted"] else "no" if r["decision"] else ""
        approval = f"<br><span class='muted'>{esc(r['approval'])}</span>" if r["approval"] else ""
        run_rows.append(
            f"<tr><td>{_run_link(r['run'])}</td><td>{esc(r['finished_at'] or '')}</td>"
            f"<td><span class='badge {badge}'>{decision}</span>"
            f"{' promoted' if r['promoted'] else ''}"
            f"{approval}"
            f"</td>{_metric_cell(r['headline'])}"
            f"<td class='num'>{_num(head.get('ndcg@10'))}</td>"
            f"<td class='num'>{_num(head.get('popularity'))}</td>"
            f"<td>{esc(', '.join(r['failed_rules'])) or '–'}</td>"
            f"<td>{_report_links(r['run'], r['reports'])}</td></tr>"
        )
    metric = next((r["headline"]["metric"] for r in data["runs"] if r["headline"]), "recall@100")
    latest = data["runs"][-1] if data["runs"] else None
    latest_links = (
        f"<p>Latest run {_run_link(latest['run'])}: "
        f"{_report_links(latest['run'], latest['reports']) or 'no reports'}</p>"
        if latest
        else ""
    )
    body = (
        f"{status}<h2>Last {len(data['runs'])} runs</h2>{latest_links}{chart(data['runs'])}"
        + _table(["run", "finished", "decision", metric + " [95%]", "ndcg@10",
                  "popularity " + metric, "failed rules", "reports"], run_rows)
        + "<h2>Bundles</h2>"
        + _table(["bundle", "created", "run", metric + " [95%]", "promoted at", "promoted by",
                  "reason"], bundle_rows)
        + "<h2 id='history'>Registry history</h2>"
        + _table(["#", "at", "event", "bundle", "previous", "user", "Airflow run", "reason"],
                 history_rows)
        + f"<p class='muted'>Artifact root {esc(data['artifact_root'])} · "
          "<a href='api/overview'>JSON</a></p>"
    )  # fmt: skip
    return page("Two-tower", body)


def run_page(info: dict) -> HTMLResponse:
    head = info["headline"] or {}
    facts = [
        ("decision", info["decision"]),
        ("approval", info["approval"]),
        ("promoted", info["promoted"]),
        ("gated against champion", info["champion"]),
        ("production after the run", info["production_bundle"]),
        ("finished", info["finished_at"]),
    ]
    rows = [
        f"<tr><th>{esc(k)}</th><td>{esc(str(v)) if v is not None else '–'}</td></tr>"
        for k, v in facts
    ]
    if head:
        rows.append(f"<tr><th>{esc(head['metric'])} [95%]</th>{_metric_cell(head)}</tr>")
        rows += [f"<tr><th>{esc(k)}</th><td class='num'>{_num(head.get(key))}</td></tr>"
                 for k, key in (("ndcg@10", "ndcg@10"), ("popularity " + head["metric"], "popularity"),
                                ("ANN p99 latency (ms)", "latency_p99_ms"))]  # fmt: skip
    rules = [
        f"<tr><td>{esc(r.get('name', ''))}</td><td><span class='badge {'ok' if r.get('passed') else 'no'}'>"
        f"{'pass' if r.get('passed') else 'fail'}</span></td><td>{esc(str(r.get('threshold', '')))}</td>"
        f"<td>{esc(str(r.get('measured', '')))}</td></tr>"
        for r in info["rules"]
    ]
    links = "".join(
        f"<li><a href='files/{esc(quote(path))}'>{esc(label)}</a> <span class='muted'>{esc(path)}</span></li>"
        for label, path in info["reports"].items()
    )
    plot = info["reports"].get("Recall@K plot")
    body = (
        "<table>" + "".join(rows) + "</table><h2>Reports</h2>"
        + (f"<ul>{links}</ul>" if links else "<p class='muted'>No report files in this run.</p>")
        + ("<h2>Gate</h2>" + _table(["rule", "result", "threshold", "measured"], rules) if rules else "")
        + (f"<h2>Recall@K</h2><img class='plot' alt='Recall@K' src='files/{esc(quote(plot))}'>" if plot else "")
    )  # fmt: skip
    return page(f"Run {info['run']}", body, home="../../")


def markdown_page(title: str, text: str, home: str) -> HTMLResponse:
    """A markdown report as HTML: raw HTML in it is escaped, unsafe link schemes dropped."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return page(title, rendered, home=home)


# ---- the app -------------------------------------------------------------------------------


async def _rollback_reason(request: Request) -> str:
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        reason = data.get("reason") if isinstance(data, dict) else None
    else:
        reason = (parse_qs(body.decode(errors="replace")).get("reason") or [None])[0]
    return str(reason or "").strip() or "rollback from the Two-tower view"


def create_app(
    *,
    reader: Callable[..., Any],
    operator: Callable[..., str],
    artifact_root: Callable[[], str | Path] = default_artifact_root,
) -> FastAPI:
    """The Two-tower view.

    Args:
        reader: FastAPI dependency every page and file requires (raises 401/403 to refuse).
        operator: FastAPI dependency of the rollback: raises 401/403 to refuse, else returns
            the acting user's name (recorded in the registry history and the asset event).
        artifact_root: where the runs and the registry are (a directory or a URL), called on
            each request.
    """
    app = FastAPI(
        title="Two-tower", docs_url=None, redoc_url=None, openapi_url=None,
        dependencies=[Depends(reader)],
    )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _error(request: Request, exc: StarletteHTTPException) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return page(f"{exc.status_code}: {exc.detail}", "", status_code=exc.status_code)
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/", response_class=HTMLResponse)
    def overview_html(runs: int = DEFAULT_RUNS) -> HTMLResponse:
        return overview_page(overview(artifact_root(), min(max(runs, 1), MAX_RUNS)))

    @app.get("/api/overview")
    def overview_json(runs: int = DEFAULT_RUNS) -> dict:
        return overview(artifact_root(), min(max(runs, 1), MAX_RUNS))

    @app.get("/runs/{run}/", response_class=HTMLResponse)
    def run_html(run: str) -> HTMLResponse:
        return run_page(run_info(_run_layout(artifact_root(), run)))

    @app.get("/runs/{run}/files/{path:path}")
    def run_file(run: str, path: str, raw: bool = False) -> Response:
        target = report_file(_run_layout(artifact_root(), run), path)
        if target.suffix == ".md" and not raw:
            home = "../" * (path.count("/") + 3)
            response = markdown_page(f"{run}: {path}", target.read_text(errors="replace"), home)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response
        media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if media_type.startswith("text/") or target.suffix in (".json", ".txt", ".md"):
            media_type = (
                media_type if target.suffix != ".md" else "text/plain"
            ) + "; charset=utf-8"
        return FileResponse(target, media_type=media_type, headers=FILE_HEADERS)

    @app.post("/api/rollback")
    async def rollback(request: Request, user: str = Depends(operator)) -> Response:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin rollback refused")
        reason = await _rollback_reason(request)
        registry = Registry(artifact_root())
        # The registry lock, its I/O and the event's DB write block: off the event loop.
        try:
            pointer = await run_in_threadpool(registry.rollback, reason=reason, actor=user)
        except PipelineError as exc:  # nothing to restore, or it is gone or damaged
            raise HTTPException(409, str(exc)) from None
        emitted = await run_in_threadpool(
            lambda: emit_production_event(pointer_event_extra(registry, pointer))
        )
        if request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"production": pointer, "event_emitted": emitted})
        return RedirectResponse("../#history", status_code=303)

    return app
