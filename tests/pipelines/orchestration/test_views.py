"""The Two-tower view (`pipelines.orchestration.views`) over an artifact root built with the
real registry: two runs, two published bundles, both promoted. Airflow's auth is replaced by
two stand-in dependencies here (`tests/dags/test_plugin.py` checks the real one)."""

from __future__ import annotations

import json

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from pipelines.layout import RunLayout, RunSummary
from pipelines.orchestration import views
from pipelines.registry import Registry

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
RUNS = {  # run dir -> recall@100
    "manual__2026-01-01T00_00_00_00_00": 0.41,
    "scheduled__2026-01-02T00_00_00_00_00": 0.43,
}


def write_run(root, run: str, value: float) -> RunLayout:
    """A finished run directory: metrics, gate, reports, Data Docs, a snapshot, its summary."""
    layout = RunLayout.for_run(root, run)
    layout.evaluation.mkdir(parents=True)
    metrics = {
        "eval": {"primary_metric": "recall@100"},
        "challenger": {"queries": 900, "recall@100": value, "ndcg@10": 0.15,
                       "ci": {"recall@100": [value - 0.01, value + 0.01]}},
        "popularity": {"recall@100": 0.29},
        "ann": {"latency_p99_ms": 0.05},
    }  # fmt: skip
    layout.metrics.write_text(json.dumps(metrics))
    rules = [
        {"name": "beats_popularity", "threshold": "> 0.3054", "measured": "+0.1", "passed": True},
        {"name": "no_regression", "threshold": "<= 1%", "measured": "<b>x</b>", "passed": True},
    ]
    layout.gate_json.write_text(json.dumps({"decision": "promote", "rules": rules}))
    layout.gate_md.write_text("| rule | passed |\n| --- | --- |\n| beats_popularity | yes |\n")
    layout.report.write_text(
        "# Evaluation\n\n<script>alert('report')</script>\n\n"
        "| model | recall@100 |\n| --- | ---: |\n| challenger | 0.41 |\n\n"
        "[bad](javascript:alert(1)) ![plot](recall_at_k.png)\n"
    )
    (layout.evaluation / "recall_at_k.png").write_bytes(PNG)
    layout.raw_report.mkdir()
    (layout.raw_report / "index.html").write_text("<html><body>Data Docs</body></html>")
    layout.snapshot.mkdir()
    (layout.snapshot / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    return layout


@pytest.fixture
def root(tmp_path):
    """Two runs, each publishing and promoting a bundle (the second one serves)."""
    root = tmp_path / "artifacts"
    registry = Registry(root)
    for n, (run, value) in enumerate(RUNS.items()):
        layout = write_run(root, run, value)
        staging = tmp_path / f"staging{n}"
        staging.mkdir()
        (staging / "weights.txt").write_text(f"bundle {n}")
        manifest = {
            "run_id": run,
            "created_at": f"2026-01-0{n + 1}",
            "metrics": json.loads(layout.metrics.read_text()),
        }  # as steps.promote
        bundle = registry.publish(staging, manifest)
        registry.promote(bundle, reason=f"run {run}: promote", airflow_run_id=run.replace("_", ":"))
        RunSummary.of(
            layout, champion=None, decision="promote", promoted=True, production_bundle=bundle
        ).write(layout)
    return root


def op_only(request: Request) -> str:
    """Stand-in for Airflow's auth: the `X-User` header; only "op" may roll back."""
    user = request.headers.get("x-user", "")
    if user != "op":
        raise HTTPException(403, f"{user or 'anonymous'} may not roll back")
    return user


@pytest.fixture
def emitted(monkeypatch):
    events = []
    monkeypatch.setattr(views, "emit_production_event", lambda extra: events.append(extra) or True)
    return events


@pytest.fixture
def client(root):
    app = views.create_app(reader=lambda: None, operator=op_only, artifact_root=lambda: root)
    return TestClient(app)


def test_overview_shows_production_bundles_history_and_runs(client, root):
    registry = Registry(root)
    first, second = (b["bundle_id"] for b in registry.bundles())
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert f"Production serves <code class='badge ok'>{second}</code>" in text
    assert text.count("<svg") == 1 and text.count("<circle") == 2  # one point per run
    for run in RUNS:
        assert f"href='runs/{run}/'" in text
    assert "0.4100" in text and "0.4300" in text  # headline metric of each run
    assert f"Roll back</b> production to <code>{first}</code>" in text
    assert "name='confirm' required" in text  # no confirm() dialog: the UI's iframe blocks it
    assert text.count("<td>promote</td>") == 2  # the history rows
    assert "files/evaluation/report.md'>Evaluation report" in text


def test_overview_json(client, root):
    data = client.get("/api/overview").json()
    production = Registry(root).production()
    assert data["production"]["bundle_id"] == production
    assert [b["production"] for b in data["bundles"]] == [True, False]  # newest first
    assert data["bundles"][0]["promoted"]["airflow_run_id"] == list(RUNS)[1].replace("_", ":")
    assert data["bundles"][0]["headline"]["value"] == 0.43
    assert [r["run"] for r in data["runs"]] == list(RUNS)
    assert data["runs"][0]["headline"]["ci"] == [0.4, 0.42]
    assert data["runs"][0]["reports"]["Raw-data checks (Data Docs)"] == "raw_report/index.html"
    assert client.get("/api/overview?runs=1").json()["runs"][0]["run"] == list(RUNS)[1]


def test_run_page_links_its_reports(client):
    run = list(RUNS)[0]
    text = client.get(f"/runs/{run}/").text
    for path in ("evaluation/report.md", "evaluation/gate.md", "raw_report/index.html"):
        assert f"href='files/{path}'" in text
    assert "<img class='plot' alt='Recall@K' src='files/evaluation/recall_at_k.png'>" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text  # gate values escaped
    assert "snapshot" not in text


def test_markdown_is_rendered_and_escaped(client):
    run = list(RUNS)[0]
    page = client.get(f"/runs/{run}/files/evaluation/report.md")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>Evaluation</h1>" in page.text and "<table>" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert "javascript:" not in page.text.replace("[bad](javascript:alert(1))", "")
    assert '<img src="recall_at_k.png"' in page.text  # resolves beside the report
    assert "href='../../../../'" in page.text  # back to the overview
    raw = client.get(f"/runs/{run}/files/evaluation/report.md?raw=true")
    assert raw.headers["content-type"].startswith("text/plain") and "<script>" in raw.text


def test_files_served_with_their_type_and_sandboxed(client):
    run = list(RUNS)[0]
    plot = client.get(f"/runs/{run}/files/evaluation/recall_at_k.png")
    assert plot.headers["content-type"] == "image/png" and plot.content == PNG
    docs = client.get(f"/runs/{run}/files/raw_report/index.html")
    assert docs.headers["content-type"].startswith("text/html") and "Data Docs" in docs.text
    assert docs.headers["content-security-policy"].startswith("sandbox")
    assert docs.headers["x-content-type-options"] == "nosniff"
    summary = client.get(f"/runs/{run}/files/summary.json")
    assert summary.json()["run_id"] == run


@pytest.mark.parametrize(
    "path",
    [
        "files/..%2F..%2Fregistry%2Fproduction.json",
        "files/evaluation%2F..%2F..%2F..%2Fregistry%2Fhistory.jsonl",
        "files/%2Fetc%2Fpasswd",
        "files/snapshot/interactions.csv",  # data, not a report
        "files/evaluation/missing.md",
        "files/evaluation",  # a directory
        "files/evaluation/escape.txt",  # a symlink out of the run
    ],
)
def test_anything_but_a_report_file_is_404(client, root, path):
    run = list(RUNS)[0]
    (RunLayout.for_run(root, run).evaluation / "escape.txt").symlink_to(
        root / "registry" / "history.jsonl"
    )
    response = client.get(f"/runs/{run}/{path}")
    assert response.status_code == 404, response.text


@pytest.mark.parametrize("run", ["..%2Fregistry", ".hidden", "no_such_run"])
def test_unknown_or_unsafe_run_is_404(client, run):
    assert client.get(f"/runs/{run}/").status_code == 404
    assert client.get(f"/runs/{run}/files/summary.json").status_code == 404


def test_errors_are_pages_for_browsers(client):
    response = client.get("/runs/no_such_run/", headers={"accept": "text/html"})
    assert response.status_code == 404 and "<h1>404: no such run</h1>" in response.text


def test_rollback_refused_without_permission(client, root, emitted):
    before = Registry(root).history()
    response = client.post("/api/rollback", json={"reason": "bad"}, headers={"x-user": "viewer"})
    assert response.status_code == 403
    assert Registry(root).history() == before and emitted == []


def test_rollback_restores_previous_records_user_and_emits(client, root, emitted):
    first, second = (b["bundle_id"] for b in Registry(root).bundles())
    response = client.post(
        "/api/rollback", json={"reason": "<b>bad</b> recall"}, headers={"x-user": "op"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["production"]["bundle_id"] == first
    registry = Registry(root)
    last = registry.history()[-1]
    assert (registry.production(), last["event"], last["user"]) == (first, "rollback", "op")
    assert last["reason"] == "<b>bad</b> recall"
    [extra] = emitted
    assert extra["action"] == "rollback" and extra["user"] == "op"
    assert (extra["bundle_id"], extra["previous"]) == (first, second)
    assert extra["metrics"]["value"] == 0.41
    page = client.get("/").text
    assert "&lt;b&gt;bad&lt;/b&gt; recall" in page and "<b>bad</b>" not in page
    # Nothing before the first bundle: a second rollback has nothing to restore.
    again = client.post("/api/rollback", json={}, headers={"x-user": "op"})
    assert again.status_code == 409 and "no previous production bundle" in again.json()["detail"]


def test_rollback_form_redirects_to_the_history(client, root, emitted):
    response = client.post(
        "/api/rollback", data={"reason": "from the form"}, headers={"x-user": "op"},
        follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == "../#history"
    assert Registry(root).history()[-1]["reason"] == "from the form"


def test_cross_origin_rollback_refused(client, root, emitted):
    before = Registry(root).production()
    response = client.post(
        "/api/rollback", data={"reason": "x"},
        headers={"x-user": "op", "origin": "https://evil.example"},
    )  # fmt: skip
    assert response.status_code == 403 and Registry(root).production() == before


def test_run_url_under_airflow_base_url(monkeypatch):
    from pipelines.orchestration.links import run_url, view_url

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example/base/")
    base = "https://airflow.example/base/two-tower/"
    assert view_url() == base
    assert run_url("manual__2026-01-01T00_00_00") == base + "runs/manual__2026-01-01T00_00_00/"
    assert (
        run_url("r 1", "raw_report/index.html") == base + "runs/r%201/files/raw_report/index.html"
    )


def test_a_persons_approval_answer_is_shown(client, root):
    from pipelines.orchestration.approval import REJECT, ApprovalAnswer

    run = list(RUNS)[1]
    answer = ApprovalAnswer(chosen=REJECT, user="alice", reason="<i>slices</i> look off",
                            at="2026-01-02T01:00:00+00:00", asked_because="promotion.mode is approve")  # fmt: skip
    answer.write(RunLayout.for_run(root, run))
    line = "rejected by alice: &lt;i&gt;slices&lt;/i&gt; look off"
    assert line in client.get(f"/runs/{run}/").text
    assert line in client.get("/").text
    assert "href='files/evaluation/approval.json'" in client.get(f"/runs/{run}/").text
