"""Alerts: Slack-compatible JSON payloads, their delivery to a webhook, the webhook's URL.

Payloads are `text` plus `blocks`-free `attachments`; every payload is also logged, so an alert
is never lost when no webhook is configured.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

log = logging.getLogger(__name__)

ALERT_CONNECTION = "two_tower_alerts"


def data_check_alert(dag_id: str, run_id: str, report: dict) -> dict:
    """High-severity alert: which expectations failed, where, and the report's location."""
    failed = report.get("failed", [])
    lines = [f"- {f}" for f in failed[:20]] + (
        [f"- ... {len(failed) - 20} more"] if len(failed) > 20 else []
    )
    return _payload(
        kind="data_check_failure",
        severity="high",
        title=f":rotating_light: {dag_id} {run_id}: raw data checks FAILED, production unchanged",
        body="\n".join(lines),
        fields={
            "failed_expectations": failed,
            "report": report.get("html") or report.get("report_dir"),
        },
    )


def gate_alert(dag_id: str, run_id: str, decision: dict, metrics: dict) -> dict:
    """Gate rejection: failed rules and the challenger-vs-champion metric diff."""
    primary = decision["primary_metric"]
    diff = {}
    for key, value in metrics.get("challenger", {}).items():
        if isinstance(value, float):
            row = {"challenger": round(value, 5)}
            for other in ("champion", "popularity"):
                if isinstance(metrics.get(other, {}).get(key), float):
                    row[other] = round(metrics[other][key], 5)
            diff[key] = row
    failed = [r for r in decision["rules"] if not r["passed"]]
    body = "\n".join(f"- {r['name']}: {r['measured']} (needs {r['threshold']})" for r in failed)
    return _payload(
        kind="gate_rejection",
        severity="medium",
        title=f":no_entry: {dag_id} {run_id}: challenger rejected on {primary}, production unchanged",
        body=body,
        fields={"decision": decision["decision"], "failed_rules": failed, "metrics": diff},
    )


def task_failure_alert(
    dag_id: str, run_id: str, task_id: str, error: str, log_url: str | None
) -> dict:
    """High-severity alert: which task failed, the end of its error and where its log is."""
    return _payload(
        kind="task_failure",
        severity="high",
        title=f":x: {dag_id} {run_id}: task {task_id} failed",
        body=error[-2000:],
        fields={"task_id": task_id, "log_url": log_url},
    )


def _payload(kind: str, severity: str, title: str, body: str, fields: dict) -> dict:
    color = {"high": "#d00000", "medium": "#e8a400"}.get(severity, "#888888")
    return {
        "text": title,
        "attachments": [{"color": color, "text": body, "mrkdwn_in": ["text"]}],
        "kind": kind,
        "severity": severity,
        **fields,
    }


def send_alert(payload: dict, webhook_url: str | None, timeout: float = 10.0) -> bool:
    """Log the payload and POST it as JSON to the webhook (if any). Returns True if delivered.

    Delivery problems are logged, never raised: an alert must not fail the task it reports on.
    The webhook URL is a credential (Slack-style URLs carry their token in the path), so a
    failure names only the host and the reason, with any part of the URL scrubbed from it.
    """
    log.warning("ALERT %s", json.dumps(payload, default=str))
    if not webhook_url:
        return False
    try:
        request = urllib.request.Request(
            webhook_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our conn
            return 200 <= response.status < 300
    except (OSError, ValueError, http.client.HTTPException) as exc:
        log.error(
            "the alerts webhook (host %s) failed: %s",
            _webhook_host(webhook_url),
            _delivery_failure(exc, webhook_url),
        )
        return False


def _webhook_host(url: str) -> str:
    """The host of a webhook URL, never its user info, path or query (which may hold a token)."""
    try:
        return urllib.parse.urlsplit(url).hostname or "unknown"
    except ValueError:
        return "unknown"


def _delivery_failure(exc: BaseException, url: str) -> str:
    """Why delivery failed, without any secret part of `url` (urllib errors may quote it)."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"{type(exc).__name__}: {exc.reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _scrub(text, url)


def _scrub(text: str, url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        secrets = [url, parts.netloc, parts.path, parts.query, parts.fragment]
        secrets += [parts.username or "", parts.password or ""]
    except ValueError:
        secrets = [url]
    secrets += [urllib.parse.unquote(s) for s in secrets]
    # Longest first, so a part inside a longer secret does not leave the rest behind.
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


def webhook_url_from_connection(conn) -> str | None:
    """URL of an HTTP Airflow Connection: `host` as a full URL, or scheme/host/port/path."""
    if conn is None or not conn.host:
        return None
    if "://" in conn.host:
        return conn.host
    scheme = "https" if conn.conn_type == "https" else "http"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{conn.host}{port}{path}"
