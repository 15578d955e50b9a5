"""The Two-tower view inside a real Airflow (API server + scheduler + DAG processor): served by
the plugin under `/two-tower` with Airflow's own auth (a viewer looks, cannot roll back; an op
rolls back, recorded with the user and as a `production_bundle` asset event), listed in the UI's
navigation, and its rollback button working from Chromium with the UI's session cookie.

The registry gets two bundles published from the tiny served model and promoted A, B, A (so
two rollbacks are possible) and two finished run directories, instead of DAG runs (minutes)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from airflow_support import REPO, call, wait_for

from pipelines.layout import RunLayout, RunSummary
from pipelines.orchestration import safe_run_id
from pipelines.registry import Registry

RUNS = ("manual__2026-01-01T00_00_00_00_00", "scheduled__2026-01-02T00_00_00_00_00")
SCREENSHOT = REPO / "docs" / "images" / "two-tower-view.png"


def finished_run(root: Path, run: str, value: float) -> dict:
    """A run directory as the DAG leaves it (metrics, gate, reports); returns its metrics."""
    layout = RunLayout.for_run(root, run)
    layout.evaluation.mkdir(parents=True)
    metrics = {
        "eval": {"primary_metric": "recall@100"},
        "challenger": {"queries": 1719, "recall@100": value, "ndcg@10": value / 3,
                       "ci": {"recall@100": [value - 0.012, value + 0.011]}},
        "popularity": {"recall@100": 0.291},
        "ann": {"latency_p99_ms": 0.05},
    }  # fmt: skip
    layout.metrics.write_text(json.dumps(metrics))
    rules = [{"name": "beats_popularity", "threshold": "> 0.3054", "measured": "ok",
              "passed": True}]  # fmt: skip
    layout.gate_json.write_text(json.dumps({"decision": "promote", "rules": rules}))
    layout.gate_md.write_text("| rule | passed |\n| --- | --- |\n| beats_popularity | yes |\n")
    layout.report.write_text(f"# Evaluation\n\nrecall@100 **{value}**\n")
    return metrics


@pytest.fixture(scope="module")
def production(airflow_stack, served_dir, tmp_path_factory):
    """Bundles A and B in the stack's registry, promoted A, B, A; the DAG (and so the
    `production_bundle` asset) parsed. Afterwards the registry is put back as it was and the
    fake runs removed: later DAG runs on the shared stack must not warm-start from a bundle
    that no training made."""
    root = airflow_stack.artifacts
    kept = tmp_path_factory.mktemp("registry-before") / "registry"
    if (root / "registry").exists():
        shutil.copytree(root / "registry", kept)
    yield _publish_fakes(root, served_dir, tmp_path_factory, airflow_stack)
    shutil.rmtree(root / "registry", ignore_errors=True)
    if kept.exists():
        shutil.copytree(kept, root / "registry")
    for run in RUNS:
        shutil.rmtree(RunLayout.for_run(root, run).run_dir, ignore_errors=True)


def _publish_fakes(root: Path, served_dir: Path, tmp_path_factory, airflow_stack) -> list[str]:
    registry = Registry(root)
    bundles = []
    for run, value in zip(RUNS, (0.412, 0.437), strict=True):
        metrics = finished_run(root, run, value)
        staging = tmp_path_factory.mktemp("staging") / "bundle"
        shutil.copytree(served_dir, staging)
        (staging / "run.txt").write_text(run)  # distinct content, distinct bundle ids
        manifest = {"run_id": run, "created_at": f"2026-01-0{len(bundles) + 1}T00:00:00+00:00",
                    "metrics": metrics}  # fmt: skip
        bundles.append(registry.publish(staging, manifest))
        registry.promote(bundles[-1], reason=f"run {run}: promote", airflow_run_id=run)
        layout = RunLayout.for_run(root, run)
        RunSummary.of(layout, champion=None, decision="promote", promoted=True,
                      production_bundle=bundles[-1]).write(layout)  # fmt: skip
    registry.promote(bundles[0], reason="back to A for the test", actor="admin")
    wait_for(
        "the production_bundle asset",
        lambda: airflow_stack.api("GET", "/assets?name_pattern=production_bundle")["assets"],
        300,
    )
    return bundles


def get(stack, path: str, user: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{stack.base}{path}", headers={"Authorization": f"Bearer {stack.token(user)}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def rollback(stack, user: str, reason: str) -> tuple[int, dict]:
    try:
        return 200, call("POST", f"{stack.base}/two-tower/api/rollback", stack.token(user),
                         {"reason": reason})  # fmt: skip
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def production_events(stack) -> list[dict]:
    [asset] = stack.api("GET", "/assets?name_pattern=production_bundle")["assets"]
    return stack.api("GET", f"/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]


@pytest.mark.slow
def test_plugin_registered(airflow_stack, production):
    [plugin] = [
        p for p in airflow_stack.api("GET", "/plugins")["plugins"] if p["name"] == "two_tower"
    ]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/two-tower"]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["url_route"]) == (
        "Two-tower",
        "/two-tower/",
        "two-tower",
    )
    assert plugin["global_operator_extra_links"]


@pytest.mark.slow
def test_task_instances_link_their_report(airflow_stack, production):
    """The API server computes the global extra link of every task instance of the DAG
    (`@task` ones included): a run triggered while the DAG is paused has its task instances but
    never starts; it is deleted afterwards and the pause state restored."""
    dag = f"/dags/{airflow_stack.DAG_ID}"
    paused = airflow_stack.api("GET", dag)["is_paused"]
    airflow_stack.api("PATCH", dag, {"is_paused": True})
    run_id = airflow_stack.trigger({})
    try:
        runs = f"{dag}/dagRuns/{run_id}/taskInstances"
        links = airflow_stack.api("GET", f"{runs}/evaluate/links")["extra_links"]
        safe = safe_run_id(run_id)  # the run directory's name
        assert links["Two-tower run report"] == (
            f"{airflow_stack.base}/two-tower/runs/{safe}/files/evaluation/report.md"
        )
        links = airflow_stack.api("GET", f"{runs}/train/links")["extra_links"]
        assert links["Two-tower run report"] == f"{airflow_stack.base}/two-tower/runs/{safe}/"
    finally:
        airflow_stack.api("DELETE", f"{dag}/dagRuns/{run_id}")
        airflow_stack.api("PATCH", dag, {"is_paused": paused})


@pytest.mark.slow
def test_viewer_sees_the_view(airflow_stack, production):
    status, page = get(airflow_stack, "/two-tower/", "viewer")
    assert status == 200, page
    assert f"Production serves <code class='badge ok'>{production[0]}</code>" in page
    assert "<svg" in page and all(f"runs/{run}/" in page for run in RUNS)
    status, page = get(
        airflow_stack, f"/two-tower/runs/{RUNS[0]}/files/evaluation/report.md", "viewer"
    )
    assert status == 200 and "<strong>0.412</strong>" in page
    assert get(airflow_stack, f"/two-tower/runs/{RUNS[0]}/files/snapshot", "viewer")[0] == 404
    request = urllib.request.Request(f"{airflow_stack.base}/two-tower/")  # no credentials
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


@pytest.mark.slow
def test_viewer_cannot_roll_back_op_can(airflow_stack, production):
    a, b = production
    root = airflow_stack.artifacts
    before = Registry(root).history()
    status, body = rollback(airflow_stack, "viewer", "viewer tries")
    assert status == 403, body
    assert Registry(root).history() == before

    status, body = rollback(airflow_stack, "op", "recall dropped on the dashboard")
    assert status == 200, body
    assert body["production"]["bundle_id"] == b and body["event_emitted"] is True
    last = Registry(root).history()[-1]
    assert (last["event"], last["bundle_id"], last["from"], last["user"]) == (
        "rollback",
        b,
        a,
        "op",
    )
    assert last["reason"] == "recall dropped on the dashboard"
    [event] = [
        e for e in production_events(airflow_stack) if e["extra"].get("action") == "rollback"
    ]
    extra = event["extra"]
    assert (extra["bundle_id"], extra["previous"], extra["user"]) == (b, a, "op")
    assert extra["metrics"]["value"] == pytest.approx(0.437)


@pytest.mark.slow
def test_rollback_button_in_the_ui(airflow_stack, production):
    """In Chromium, logged in as op: the "Two-tower" page of the UI shows the view (screenshot
    for the docs), and its rollback button works with the UI's session cookie."""
    from airflow_support import chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    a, _ = production
    driver = chromium(airflow_stack.token("op"), airflow_stack.base)
    try:
        driver.get(f"{airflow_stack.base}/plugin/two-tower")
        wait = WebDriverWait(driver, 60)
        frame = wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "iframe")))
        assert frame.get_attribute("src").endswith("/two-tower/")
        driver.switch_to.frame(frame)
        wait.until(expected_conditions.presence_of_element_located((By.NAME, "reason")))
        driver.switch_to.default_content()
        time.sleep(1)  # let the navigation finish drawing
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))

        driver.switch_to.frame(frame)
        driver.find_element(By.NAME, "reason").send_keys("rolled back from the UI")
        driver.find_element(By.NAME, "confirm").click()
        driver.find_element(By.CSS_SELECTOR, "form.rollback button").click()
        wait.until(lambda d: "rolled back from the UI" in d.page_source)
    finally:
        driver.quit()
    last = Registry(airflow_stack.artifacts).history()[-1]
    assert (last["event"], last["bundle_id"], last["user"]) == ("rollback", a, "op")
    assert last["reason"] == "rolled back from the UI"


def test_extra_link_points_at_the_run_report():
    from types import SimpleNamespace

    from pipelines.orchestration.plugin import TwoTowerRunLink

    link = TwoTowerRunLink()
    key = SimpleNamespace(dag_id="two_tower_retrain", run_id="manual__2026-01-01T00:00:00+00:00")
    url = link.get_link(SimpleNamespace(task_id="evaluate"), ti_key=key)
    assert url.endswith(
        "/two-tower/runs/manual__2026-01-01T00_00_00_00_00/files/evaluation/report.md"
    )
    assert link.get_link(SimpleNamespace(task_id="train"), ti_key=key).endswith("_00_00/")
    assert (
        link.get_link(
            SimpleNamespace(task_id="x"), ti_key=SimpleNamespace(dag_id="other", run_id="r")
        )
        == ""
    )
