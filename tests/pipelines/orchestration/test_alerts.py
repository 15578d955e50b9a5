"""Alerts: one per incident (quiet period, "resolved"), links, no secrets, delivery by type."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from pipelines.orchestration import alerts

sys.path.insert(0, str(Path(__file__).parents[2] / "dags"))
from airflow_support import Hook  # noqa: E402 - the DAG tests' local webhook

DAG = "two_tower_retrain"


class Clock:
    """A settable UTC clock for the incident book."""

    def __init__(self):
        self.now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += dt.timedelta(**delta)


def data_check(run_id: str, rows: int = 3, rules=("interactions.user_id: must not be null",)):
    failed = [f"{r} ({rows} rows) in /data/{run_id}/part-0.parquet" for r in rules]
    return alerts.data_check_alert(
        DAG, run_id, {"failed": failed, "rules": list(rules), "html": "/x/index.html"}
    )


@pytest.fixture
def book(tmp_path):
    clock = Clock()
    return alerts.IncidentBook(tmp_path, quiet=dt.timedelta(minutes=360), clock=clock), clock


def test_first_alert_posts_repeat_inside_quiet_period_does_not_later_repeat_does(book):
    book, clock = book
    first = data_check("run1")
    assert book.open(first) == first  # a new incident: posted as is
    clock.advance(minutes=30)
    assert book.open(data_check("run2", rows=7)) is None  # same rules, other counts and files
    clock.advance(minutes=60)
    assert book.open(data_check("run3")) is None
    clock.advance(minutes=271)  # 361 minutes after the posted alert
    again = book.open(data_check("run4"))
    assert again is not None and again["run_id"] == "run4"
    assert again["repeats_suppressed"] == 2 and again["open_since"] == "2026-11-25T12:00:00+00:00"
    [incident] = book.incidents()
    assert incident["alerts"] == 2 and incident["seen"] == 4 and incident["suppressed"] == 0
    assert incident["runs"] == ["run1", "run2", "run3", "run4"]
    assert (book.path.parent / "incidents.json").is_file()  # shared by the task processes


def test_a_different_fingerprint_is_a_new_incident(book):
    book, _ = book
    assert book.open(data_check("run1")) is not None
    assert book.open(data_check("run2", rules=["items.item_id: must be unique"])) is not None
    assert book.open(alerts.task_failure_alert(DAG, "run3", "train", "OOM", None)) is not None
    assert len(book.incidents()) == 3
    other_dag = {**data_check("run4"), "dag_id": "other_dag"}
    assert book.open(other_dag) is not None  # the DAG is part of the incident


def test_recovery_resolves_open_failures_once_and_the_next_failure_is_new(book):
    book, clock = book
    book.open(data_check("run1"))
    book.open(data_check("run2"))  # suppressed repeat
    gate = {"primary_metric": "recall_at_100", "decision": "reject",
            "rules": [{"name": "beats_popularity", "passed": False, "measured": 0.1,
                       "threshold": 0.2}]}  # fmt: skip
    book.open(alerts.gate_alert(DAG, "run2", gate, {}))
    [closed] = book.resolve(DAG)  # a successful run: failure kinds only
    assert closed["kind"] == "data_check_failure" and closed["suppressed"] == 1
    assert book.resolve(DAG) == []  # nothing left to resolve: no second "resolved"
    assert [i["kind"] for i in book.incidents()] == ["gate_rejection"]
    assert [i["kind"] for i in book.resolve(DAG, [alerts.GATE_KIND])] == ["gate_rejection"]
    clock.advance(minutes=5)
    assert book.open(data_check("run3")) is not None  # after recovery: a new incident, posted


def test_resolved_message_names_what_recovered():
    incident = {"kind": "data_check_failure", "title": "raw data checks FAILED",
                "opened_at": "2026-11-25T12:00:00+00:00", "seen": 3, "alerts": 1, "suppressed": 0,
                "fingerprint": "abc"}  # fmt: skip
    payload = alerts.resolved_alert(DAG, "run9", [incident], links={"run": "http://h/r"})
    assert payload["kind"] == "resolved" and "resolved" in payload["text"]
    body = payload["attachments"][0]["text"]
    assert "raw data checks FAILED" in body and "3 failing runs" in body
    assert "<http://h/r|run>" in body


def test_the_data_check_alert_covers_its_task_try(book):
    book, _ = book
    key = alerts.task_try("manual__1", "validate_raw", 1)
    book.open(data_check("manual__1"), key)
    assert book.covers(DAG, key)
    assert not book.covers(DAG, alerts.task_try("manual__1", "validate_raw", 2))
    assert not book.covers("other_dag", key)


def test_quiet_period_setting(caplog):
    assert alerts.quiet_period({}) == dt.timedelta(minutes=alerts.DEFAULT_QUIET_MINUTES)
    assert alerts.quiet_period({"TTR_ALERT_QUIET_MINUTES": "0"}) == dt.timedelta(0)
    assert alerts.quiet_period({"TTR_ALERT_QUIET_MINUTES": "90"}) == dt.timedelta(minutes=90)
    with caplog.at_level(logging.ERROR):
        for bad in ("-1", "soon", "nan", "inf"):
            assert alerts.quiet_period({"TTR_ALERT_QUIET_MINUTES": bad}) == dt.timedelta(
                minutes=alerts.DEFAULT_QUIET_MINUTES
            )
    assert "TTR_ALERT_QUIET_MINUTES='soon'" in caplog.text


def test_zero_quiet_period_posts_every_repeat(tmp_path):
    book = alerts.IncidentBook(tmp_path, quiet=dt.timedelta(0))
    assert book.open(data_check("r1")) is not None and book.open(data_check("r2")) is not None


def test_alerts_link_the_runs_reports_in_the_two_tower_view():
    links = alerts.run_links("manual__2026", {"data docs": "raw_report/index.html"})
    assert links["data docs"].endswith("/two-tower/runs/manual__2026/files/raw_report/index.html")
    assert links["run reports"].endswith("/two-tower/runs/manual__2026/")
    payload = alerts.data_check_alert(DAG, "r", {"failed": ["x"]}, links=links)
    assert f"<{links['data docs']}|data docs>" in payload["attachments"][0]["text"]
    assert payload["links"] == links


class Conn:
    """The attributes of an Airflow Connection the alerts read."""

    def __init__(self, conn_type, host=None, password=None, conn_id="two_tower_alerts", **extra):
        self.conn_type, self.host, self.password, self.conn_id = conn_type, host, password, conn_id
        self.port = self.schema = None
        self.extra_dejson = extra


def test_no_secret_reaches_the_alert_text(caplog):
    hook = Hook()
    try:
        token = "T0000/B0000/XXXXXXXXsecretXXXXXXXX"
        conn = Conn("http", host=f"{hook.url}/{token}")
        error = f"POST {hook.url}/{token} refused; retry with token {token}"
        payload = alerts.task_failure_alert(DAG, "r", "publish", error, None)
        with caplog.at_level(logging.WARNING):
            assert alerts.deliver(payload, conn)
        [posted] = hook.received
        assert token not in json.dumps(posted) and token not in caplog.text
        assert "***" in posted["attachments"][0]["text"]
    finally:
        hook.close()


def test_airflow_masked_secrets_are_redacted_too():
    from airflow.sdk._shared.secrets_masker import mask_secret

    mask_secret("hunter2-db-password")
    payload = alerts.task_failure_alert(DAG, "r", "t", "login failed: hunter2-db-password", None)
    assert "hunter2-db-password" not in json.dumps(alerts.without_secrets(payload))


def test_incident_book_failure_still_posts(tmp_path):
    (tmp_path / "alerts").write_text("not a directory")
    hook = Hook()
    try:
        assert alerts.raise_alert(data_check("r1"), Conn("http", host=hook.url), tmp_path)
        assert [a["kind"] for a in hook.received] == ["data_check_failure"]
    finally:
        hook.close()


def test_raise_alert_and_resolve_through_the_webhook(tmp_path, monkeypatch):
    monkeypatch.setenv(alerts.QUIET_ENV, "360")
    hook = Hook()
    try:
        conn = Conn("http", host=hook.url)
        assert alerts.raise_alert(data_check("r1"), conn, tmp_path)
        assert not alerts.raise_alert(data_check("r2"), conn, tmp_path)
        assert alerts.resolve_incidents(DAG, "r3", conn, tmp_path)
        assert not alerts.resolve_incidents(DAG, "r4", conn, tmp_path)
        assert [a["kind"] for a in hook.received] == ["data_check_failure", "resolved"]
    finally:
        hook.close()


# ---- the Slack provider's notifiers --------------------------------------------------------------


def test_slackwebhook_connection_posts_through_the_providers_notifier(monkeypatch):
    hook = Hook()  # the provider takes the endpoint from the connection's host
    try:
        base, path = hook.url.rsplit("/", 1)
        monkeypatch.setenv(
            "AIRFLOW_CONN_TWO_TOWER_ALERTS",
            json.dumps({"conn_type": "slackwebhook", "host": base, "password": path}),
        )
        conn = Conn("slackwebhook", host=base, password=path)
        payload = data_check("r1", rules=["interactions.user_id: must not be null"])
        assert alerts.deliver(payload, conn)
        [posted] = hook.received
        assert posted == {"text": payload["text"], "attachments": payload["attachments"]}
    finally:
        hook.close()


def test_slackwebhook_failure_names_no_token(monkeypatch, caplog):
    token = "T0000/B0000/XXXXXXXXsecretXXXXXXXX"
    monkeypatch.setenv(
        "AIRFLOW_CONN_TWO_TOWER_ALERTS",
        json.dumps({"conn_type": "slackwebhook", "host": "http://127.0.0.1:9", "password": token}),
    )
    conn = Conn("slackwebhook", host="http://127.0.0.1:9", password=token)
    with caplog.at_level(logging.DEBUG):
        assert alerts.deliver(data_check("r1"), conn, timeout=2) is False
    assert "the Slack alert connection (slackwebhook) failed" in caplog.text
    assert token not in caplog.text


class SlackApi:
    """A stand-in Slack Web API on 127.0.0.1: answers chat.postMessage with ok."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Authorization"], json.loads(body)))
                answer = json.dumps({"ok": True, "channel": "C1", "ts": "1.0"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_slack_api_connection_posts_to_its_channel(monkeypatch):
    api = SlackApi()
    try:
        extra = {"base_url": api.url, "channel": "#ml-oncall"}
        monkeypatch.setenv(
            "AIRFLOW_CONN_TWO_TOWER_ALERTS",
            json.dumps({"conn_type": "slack", "password": "xoxb-test-token", "extra": extra}),
        )
        payload = data_check("r1")
        assert alerts.deliver(payload, Conn("slack", password="xoxb-test-token", **extra))
        [(path, auth, body)] = api.received
        assert path == "/api/chat.postMessage" and auth == "Bearer xoxb-test-token"
        assert body["channel"] == "#ml-oncall" and body["text"] == payload["text"]
        assert json.loads(body["attachments"]) == payload["attachments"]  # slack_sdk sends JSON
        assert not alerts.deliver(payload, Conn("slack", password="xoxb-test-token"))  # no channel
    finally:
        api.close()
