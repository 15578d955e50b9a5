"""Alerts: Slack-compatible payloads, one per incident, delivered by the alert connection's type.

Payloads are `text` plus `blocks`-free `attachments` (with links to the run's reports in the
Two-tower view) and machine-readable fields (`kind`, `severity`, `fingerprint`, ...); every
payload is also logged, so an alert is never lost when no connection is configured.

Incidents: an alert opens (or repeats) an incident keyed by DAG, kind and fingerprint (the
failed rules or the failed task, never the run id), kept in `IncidentBook`
(`<artifact_root>/alerts/incidents.json`, shared by the task processes and the DAG callbacks
through a file lock, or on an object store through conditional writes). A repeat of an open incident inside the quiet period is logged, not
posted; a later repeat is posted with the count of repeats it stood for. The data-check alert
covers its task try, so the task-failure alert of that try is not posted a second time. When
the DAG next succeeds, its open failure incidents close with one "resolved" message.

Deployment setting (environment, read when an alert is raised):
    TTR_ALERT_QUIET_MINUTES   quiet period for repeats of an open incident, minutes >= 0
                              (default 360; 0 posts every repeat). An invalid value is logged
                              and the default applies: an alert must still go out.

Delivery by the type of the Airflow connection `two_tower_alerts`:
    http / https    our JSON POST of the whole payload to the URL (host, or scheme/host/port/path)
    slackwebhook    the Slack provider's `SlackWebhookNotifier` (token or full URL in password;
                    host may name another endpoint)
    slack           the Slack provider's `SlackNotifier` (API token in password) to the channel
                    in the connection's extra `channel`
Delivery problems are logged without any secret part of the connection, never raised.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from pipelines.errors import PipelineError
from pipelines.locks import exclusive_lock
from pipelines.orchestration.links import run_url

log = logging.getLogger(__name__)

ALERT_CONNECTION = "two_tower_alerts"
QUIET_ENV = "TTR_ALERT_QUIET_MINUTES"
DEFAULT_QUIET_MINUTES = 360
# Kinds a successful DAG run resolves (a gate rejection resolves when the gate passes again).
FAILURE_KINDS = ("data_check_failure", "task_failure")
GATE_KIND = "gate_rejection"
_TRIES_KEPT = 50  # task tries remembered per incident (to suppress their duplicate alerts)
ALERTS_DIR = "alerts"  # under the artifact root
INCIDENTS_FILE = "incidents.json"
_CAS_ATTEMPTS = 20  # conditional writes of the incident book before giving up (object stores)
_T = TypeVar("_T")


def fingerprint(*parts: str) -> str:
    """A short stable hash of what makes two failures "the same" (order-insensitive parts)."""
    return hashlib.sha256("\n".join(sorted(set(parts))).encode()).hexdigest()[:16]


# ---- payloads -----------------------------------------------------------------------------------


def data_check_alert(
    dag_id: str, run_id: str, report: dict, *, links: Mapping[str, str] | None = None
) -> dict:
    """High-severity alert: which expectations failed, where, and links to the Data Docs.

    Args:
        report: `failed` (one line per failed rule, for people), `rules` (the failed rules
            without counts or files: the incident's fingerprint; default `failed`), `html` /
            `report_dir` (the report's location on disk).
        links: label -> URL (e.g. the run's Data Docs in the Two-tower view).
    """
    failed = report.get("failed", [])
    lines = [f"- {f}" for f in failed[:20]] + (
        [f"- ... {len(failed) - 20} more"] if len(failed) > 20 else []
    )
    return _payload(
        kind="data_check_failure",
        severity="high",
        dag_id=dag_id,
        run_id=run_id,
        title=f":rotating_light: {dag_id} {run_id}: raw data checks FAILED, production unchanged",
        body="\n".join(lines),
        fingerprint=fingerprint(*(report.get("rules") or failed)),
        links=links,
        fields={
            "failed_expectations": failed,
            "report": report.get("html") or report.get("report_dir"),
        },
    )


def gate_alert(
    dag_id: str,
    run_id: str,
    decision: dict,
    metrics: dict,
    *,
    links: Mapping[str, str] | None = None,
) -> dict:
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
        kind=GATE_KIND,
        severity="medium",
        dag_id=dag_id,
        run_id=run_id,
        title=f":no_entry: {dag_id} {run_id}: challenger rejected on {primary}, production unchanged",
        body=body,
        fingerprint=fingerprint(*(r["name"] for r in failed)),
        links=links,
        fields={"decision": decision["decision"], "failed_rules": failed, "metrics": diff},
    )


def task_failure_alert(
    dag_id: str,
    run_id: str,
    task_id: str,
    error: str,
    log_url: str | None,
    *,
    error_type: str = "",
    links: Mapping[str, str] | None = None,
) -> dict:
    """High-severity alert: which task failed, the end of its error and where its log is.

    The incident is the task and the exception's type (`error_type`): a task failing the same
    way again repeats it, whatever the message's details (paths, counts).
    """
    return _payload(
        kind="task_failure",
        severity="high",
        dag_id=dag_id,
        run_id=run_id,
        title=f":x: {dag_id} {run_id}: task {task_id} failed",
        body=error[-2000:],
        fingerprint=fingerprint(f"task={task_id}", f"error={error_type}"),
        links={**({"task log": log_url} if log_url else {}), **(links or {})},
        fields={"task_id": task_id, "log_url": log_url},
    )


def resolved_alert(
    dag_id: str,
    run_id: str,
    incidents: list[dict],
    *,
    cause: str = "the run succeeded",
    links: Mapping[str, str] | None = None,
) -> dict:
    """The recovery message: which open incidents `run_id` closed, since when, how many repeats."""
    lines = []
    for incident in incidents:
        seen = incident["seen"]
        lines.append(
            f"- {incident['kind']}: {incident['title']} (open since {incident['opened_at']}, "
            f"{seen} failing run{'s' if seen != 1 else ''})"
        )
    return _payload(
        kind="resolved",
        severity="ok",
        dag_id=dag_id,
        run_id=run_id,
        title=f":white_check_mark: {dag_id} {run_id}: resolved, {cause}",
        body="\n".join(lines),
        fingerprint=fingerprint(*(i["fingerprint"] for i in incidents)),
        links=links,
        fields={
            "resolved": [{"kind": i["kind"], "fingerprint": i["fingerprint"]} for i in incidents]
        },
    )


def run_links(run_dir_name: str, files: Mapping[str, str] | None = None) -> dict[str, str]:
    """Label -> absolute URL: the run's page in the Two-tower view plus each of `files`
    (label -> path relative to the run directory)."""
    files = files or {}
    return {"run reports": run_url(run_dir_name)} | {
        label: run_url(run_dir_name, path) for label, path in files.items()
    }


def _payload(
    *,
    kind: str,
    severity: str,
    dag_id: str,
    run_id: str,
    title: str,
    body: str,
    fingerprint: str,
    links: Mapping[str, str] | None,
    fields: dict,
) -> dict:
    color = {"high": "#d00000", "medium": "#e8a400", "ok": "#2eb67d"}.get(severity, "#888888")
    links = dict(links or {})
    text = body + ("\n" if body and links else "")
    text += " · ".join(f"<{url}|{label}>" for label, url in links.items())
    return {
        "text": title,
        "attachments": [{"color": color, "text": text, "mrkdwn_in": ["text"]}],
        "kind": kind,
        "severity": severity,
        "dag_id": dag_id,
        "run_id": run_id,
        "fingerprint": fingerprint,
        "links": links,
        **fields,
    }


# ---- incidents ----------------------------------------------------------------------------------


def quiet_period(env: Mapping[str, str] | None = None) -> dt.timedelta:
    """`TTR_ALERT_QUIET_MINUTES` (default 360) as a timedelta; invalid values log and fall back."""
    raw = (os.environ if env is None else env).get(QUIET_ENV, "").strip()
    if not raw:
        return dt.timedelta(minutes=DEFAULT_QUIET_MINUTES)
    try:
        minutes = float(raw)
        if not minutes >= 0 or minutes == float("inf"):
            raise ValueError
    except ValueError:
        log.error(
            "%s=%r is not a number of minutes >= 0; using the default %s",
            QUIET_ENV, raw, DEFAULT_QUIET_MINUTES,
        )  # fmt: skip
        minutes = DEFAULT_QUIET_MINUTES
    return dt.timedelta(minutes=minutes)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IncidentBook:
    """Open alert incidents of one artifact root, in `<artifact_root>/alerts/incidents.json`.

    Tasks and DAG callbacks run in separate processes (on several hosts with Celery), so every
    read-modify-write is a transaction: on the local disk under the file lock
    `alerts/.incidents.lock`, the file replaced atomically; on an object store (`s3://`,
    `gs://`, `memory://`) a conditional write of the version read
    (`pipelines.formats.store.write_if`), read again and retried when another process wrote
    first.
    """

    def __init__(
        self,
        artifact_root: str | Path,
        quiet: dt.timedelta | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ):
        from pipelines.formats.store import is_remote, open_root
        from pipelines.layout import local_root

        if is_remote(artifact_root):
            self.fs, root = open_root(artifact_root)
            self.dir, self.path = None, f"{root}/{ALERTS_DIR}/{INCIDENTS_FILE}"
        else:
            self.fs = None
            self.dir = local_root(artifact_root) / ALERTS_DIR
            self.path = self.dir / INCIDENTS_FILE
        self.quiet = quiet_period() if quiet is None else quiet
        self.clock = clock

    def open(self, payload: dict, task_try: str | None = None) -> dict | None:
        """Record `payload`'s incident; return the payload to post, or None to stay quiet.

        A new incident, or a repeat after the quiet period since the last posted alert, is
        posted (a repeat carries `repeats_suppressed`, the repeats not posted since). `task_try`
        ("run_id/task_id/try") is remembered, so `covers` can tell that this try has its alert.
        """
        now = self.clock()
        key = _key(payload["dag_id"], payload["kind"], payload["fingerprint"])

        def record(state: dict) -> tuple[dict | None, dict]:
            incident = state.setdefault(key, {
                "dag_id": payload["dag_id"], "kind": payload["kind"],
                "fingerprint": payload["fingerprint"], "title": payload["text"],
                "opened_at": now.isoformat(), "last_alert_at": None,
                "seen": 0, "alerts": 0, "suppressed": 0, "runs": [], "tries": [],
            })  # fmt: skip
            incident["seen"] += 1
            incident["runs"] = [*incident["runs"], payload["run_id"]][-_TRIES_KEPT:]
            if task_try:
                incident["tries"] = [*incident["tries"], task_try][-_TRIES_KEPT:]
            last = incident["last_alert_at"]
            if last is not None and now - dt.datetime.fromisoformat(last) < self.quiet:
                incident["suppressed"] += 1
                return None, dict(incident)
            repeats, incident["suppressed"] = incident["suppressed"], 0
            incident["alerts"] += 1
            incident["last_alert_at"] = now.isoformat()
            if last is None:
                return payload, incident
            repeat = {**payload, "repeats_suppressed": repeats, "open_since": incident["opened_at"]}
            return repeat, incident

        posted, incident = self._transact(record)
        if posted is None:
            log.warning(
                "alert %s suppressed: repeats the incident open since %s (alerted %s; quiet "
                "period %s)", payload["kind"], incident["opened_at"], incident["last_alert_at"],
                self.quiet,
            )  # fmt: skip
        return posted

    def covers(self, dag_id: str, task_try: str) -> bool:
        """Whether an open incident of `dag_id` already stands for this task try."""
        return self._transact(
            lambda state: any(
                i["dag_id"] == dag_id and task_try in i["tries"] for i in state.values()
            )
        )

    def resolve(self, dag_id: str, kinds: Iterable[str] = FAILURE_KINDS) -> list[dict]:
        """Close `dag_id`'s open incidents of `kinds`; return them (oldest first)."""
        kinds = set(kinds)

        def close(state: dict) -> list[dict]:
            closed = [k for k, i in state.items() if i["dag_id"] == dag_id and i["kind"] in kinds]
            return [state.pop(k) for k in closed]

        return sorted(self._transact(close), key=lambda i: i["opened_at"])

    def incidents(self) -> list[dict]:
        """Every open incident (for people and tests)."""
        return self._transact(lambda state: list(state.values()))

    def _transact(self, change: Callable[[dict], _T]) -> _T:
        """`change(state)` on the book's incidents, saved when it changed them."""
        if self.fs is None:
            with self._state() as state:
                return change(state)
        from pipelines.formats.store import WriteConflict, read_versioned, write_if

        for attempt in range(_CAS_ATTEMPTS):
            data, token = read_versioned(self.fs, self.path)
            state = json.loads(data) if data else {}
            before = json.dumps(state, sort_keys=True)
            result = change(state)
            after = json.dumps(state, indent=1, sort_keys=True)
            if json.dumps(state, sort_keys=True) == before:
                return result
            try:
                write_if(self.fs, self.path, after.encode(), token)
                return result
            except WriteConflict:
                log.info("incident book %s changed under us; reading it again", self.path)
                time.sleep(random.uniform(0.02, 0.2) * (attempt + 1))
        raise PipelineError(
            f"{self.path}: {_CAS_ATTEMPTS} writers in a row got there first; alert handled "
            "without the incident book"
        )

    @contextlib.contextmanager
    def _state(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.dir / ".incidents.lock"):
            try:
                state = json.loads(self.path.read_text())
            except FileNotFoundError:
                state = {}
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
                os.replace(tmp, self.path)


def _key(dag_id: str, kind: str, fp: str) -> str:
    return f"{dag_id}|{kind}|{fp}"


def task_try(run_id: str, task_id: str, try_number: int) -> str:
    """The key of one task try in the incident book."""
    return f"{run_id}/{task_id}/{try_number}"


# ---- delivery -----------------------------------------------------------------------------------


def deliver(payload: dict, conn, timeout: float = 10.0) -> bool:
    """Log `payload` and post it through the alert connection `conn` (chosen by its type).

    Returns True if delivered. No connection: logged only. Never raises. What is posted and
    logged has passed `without_secrets`.
    """
    payload = without_secrets(payload, conn)
    conn_type = (getattr(conn, "conn_type", None) or "").lower()
    if conn_type in ("slackwebhook", "slack"):
        log.warning("ALERT %s", json.dumps(payload, default=str))
        return _send_slack(payload, conn, conn_type, timeout)
    return send_alert(payload, webhook_url_from_connection(conn), timeout=timeout)


_MIN_SECRET = 6  # shorter strings are not treated as secrets (Airflow's masker: > 5 characters)


def without_secrets(payload: dict, conn=None) -> dict:
    """`payload` with every known secret replaced by `***` in every string, at any depth.

    Known secrets: the alert connection's password and the secret parts of its webhook URL
    (user info, query, the path and each of its tails), and whatever Airflow's secrets masker holds in this process
    (passwords of connections fetched, sensitive Variables, values of sensitive keys) when
    Airflow is importable. Error text quoted from a failed task is the usual carrier.
    """
    secrets = []
    if conn is not None:
        secrets.append(getattr(conn, "password", None) or "")
        url = webhook_url_from_connection(conn) or ""
        try:
            parts = urllib.parse.urlsplit(url)
            secrets += [url, parts.query, parts.password or "", parts.username or ""]
            segments = parts.path.split("/")  # a token may be quoted without the path's head
            secrets += ["/".join(segments[i:]) for i in range(len(segments))]
        except ValueError:
            secrets.append(url)
    secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def scrub(value):
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    payload = scrub(payload)
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:
        return payload
    return redact(payload)


def _send_slack(payload: dict, conn, conn_type: str, timeout: float) -> bool:
    """Post `text` + `attachments` with the Slack provider's notifier for this connection type.

    The notifier fetches the connection itself (by `conn.conn_id`); its `notify` is called
    directly, so nothing in the alert is rendered as a Jinja template.
    """
    try:
        if conn_type == "slackwebhook":
            from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

            notifier = SlackWebhookNotifier(
                slack_webhook_conn_id=conn.conn_id, text=payload["text"],
                attachments=payload["attachments"], timeout=int(timeout),
            )  # fmt: skip
        else:
            from airflow.providers.slack.notifications.slack import SlackNotifier

            channel = (conn.extra_dejson or {}).get("channel")
            if not channel:
                log.error(
                    "the Slack alert connection %s has no `channel` in its extra", conn.conn_id
                )
                return False
            notifier = SlackNotifier(
                slack_conn_id=conn.conn_id, channel=channel, text=payload["text"],
                attachments=payload["attachments"], timeout=int(timeout),
            )  # fmt: skip
        notifier.notify({})
        return True
    except Exception as exc:  # noqa: BLE001 - an alert must not fail the task it reports on
        secrets = [conn.password or "", conn.host or "", getattr(conn, "get_uri", lambda: "")()]
        text = f"{type(exc).__name__}: {exc}"
        for secret in secrets:
            if secret:
                text = _scrub(text, secret)
        log.error("the Slack alert connection (%s) failed: %s", conn_type, text)
        return False


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


# ---- the whole path, for the DAG ----------------------------------------------------------------


def raise_alert(
    payload: dict, conn, artifact_root: str | Path, task_try: str | None = None
) -> bool:
    """Open or repeat `payload`'s incident and post it unless it is inside the quiet period.

    Returns True if an alert was delivered. The incident book failing (disk full, permissions)
    must not swallow the alert: it is then posted without de-duplication.
    """
    try:
        to_post = IncidentBook(artifact_root).open(payload, task_try)
    except Exception:  # noqa: BLE001 - post rather than lose the alert
        log.exception(
            "the incident book under %s failed; posting without de-duplication", artifact_root
        )
        to_post = payload
    return to_post is not None and deliver(to_post, conn)


def alerted_already(dag_id: str, artifact_root: str | Path, task_try: str) -> bool:
    """Whether an incident (the data-check alert) already stands for this task try."""
    try:
        return IncidentBook(artifact_root).covers(dag_id, task_try)
    except Exception:  # noqa: BLE001 - unknown: post the task failure rather than nothing
        log.exception("the incident book under %s failed", artifact_root)
        return False


def resolve_incidents(
    dag_id: str,
    run_id: str,
    conn,
    artifact_root: str | Path,
    *,
    kinds: Iterable[str] = FAILURE_KINDS,
    cause: str = "the run succeeded",
    links: Mapping[str, str] | None = None,
) -> bool:
    """Close `dag_id`'s open incidents of `kinds` and post one "resolved" message if any were open.

    Returns True if a message was delivered.
    """
    try:
        incidents = IncidentBook(artifact_root).resolve(dag_id, kinds)
    except Exception:  # noqa: BLE001 - a callback must not fail the run it reports on
        log.exception("the incident book under %s failed", artifact_root)
        return False
    if not incidents:
        return False
    return deliver(resolved_alert(dag_id, run_id, incidents, cause=cause, links=links), conn)
