"""What the Airflow DAG needs that is not Airflow: Params -> config, safe paths, alerts.

Kept free of Airflow, TensorFlow, Beam and ScaNN imports so the DAG file parses fast and the
logic is testable on its own.

Alerts are Slack-compatible JSON (`text` plus `blocks`-free `attachments`) posted to a webhook
URL; every payload is also logged, so an alert is never lost when no webhook is configured.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pipelines.config import PipelineConfig, load_config
from pipelines.errors import ConfigError

log = logging.getLogger(__name__)

ALERT_CONNECTION = "two_tower_alerts"

# Param name -> (config section, field). The form's types and ranges mirror the config's, and
# the config validates again when the task builds it (a value the form let through by API is
# still refused).
PARAM_FIELDS: dict[str, tuple[str, str]] = {
    "format": ("data", "format"),
    "preset": ("synthetic", "preset"),
    "as_of": ("features", "as_of"),
    "window_days": ("features", "window_days"),
    "eval_days": ("features", "eval_days"),
    "epochs": ("train", "epochs"),
    "learning_rate": ("train", "learning_rate"),
    "embedding_dim": ("train", "embedding_dim"),
    "batch_size": ("train", "batch_size"),
    "min_lift_over_popularity": ("gate", "min_lift_over_popularity"),
    "max_regression": ("gate", "max_regression"),
    "min_ann_recall": ("gate", "min_ann_recall"),
    "force_promote": ("gate", "force_promote"),
    "dry_run": ("gate", "dry_run"),
}


def param_specs(cfg: PipelineConfig | None = None) -> dict[str, dict[str, Any]]:
    """Typed Param definitions (JSON schema keywords) for the DAG's trigger form.

    Each default is the deployment's value (`cfg`, else code defaults < `TTR_CONFIG` YAML <
    environment), so a run nobody edited the form for runs the deployment's config.
    """
    values = (cfg or load_config(os.environ.get("TTR_CONFIG"))).model_dump(mode="json")
    specs = _param_schemas()
    for name, (section, field) in PARAM_FIELDS.items():
        specs[name]["default"] = values[section][field]
    return specs


def _param_schemas() -> dict[str, dict[str, Any]]:
    return {
        "source": {
            "default": None, "type": ["null", "string"],
            "description": "Data source directory relative to the data root (TTR_DATA_ROOT); "
            "empty = the embedded synthetic world. Absolute paths, URLs and '..' are refused.",
        },
        "format": {
            "enum": ["auto", "contract", "ml-100k", "ml-1m", "ml-latest"],
            "description": "Source format ('auto' detects it).",
        },
        "preset": {
            "enum": ["small", "medium", "large"],
            "description": "Synthetic world size (only without a source).",
        },
        "as_of": {
            "type": ["null", "string"], "format": "date-time",
            "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
            r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$",
            "description": "Replay the past: see only interactions and items from before this "
            "moment (UTC). Backfill runs use their logical date; empty = all data.",
        },
        "window_days": {
            "type": ["null", "integer"], "minimum": 1, "maximum": 3650,
            "description": "Training window in days ending at the data's end; empty = all data.",
        },
        "eval_days": {
            "type": ["null", "integer"], "minimum": 1, "maximum": 365,
            "description": "Eval period in days; empty = the most recent 10% of events.",
        },
        "epochs": {
            "type": "integer", "minimum": 1, "maximum": 100,
            "description": "Maximum training epochs (early stopping may end sooner).",
        },
        "learning_rate": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 1,
            "description": "Adam learning rate.",
        },
        "embedding_dim": {
            "type": "integer", "minimum": 8, "maximum": 512,
            "description": "Output dimension of both towers.",
        },
        "batch_size": {
            "type": "integer", "minimum": 32, "maximum": 65536,
            "description": "Training batch size (= in-batch negatives + 1).",
        },
        "min_lift_over_popularity": {
            "type": "number", "minimum": -1, "maximum": 100,
            "description": "Gate: challenger must beat popularity by this relative margin.",
        },
        "max_regression": {
            "type": "number", "minimum": 0, "maximum": 1,
            "description": "Gate: largest relative drop vs the champion allowed.",
        },
        "min_ann_recall": {
            "type": "number", "minimum": 0, "maximum": 1,
            "description": "Gate: index recall vs exact search.",
        },
        "force_promote": {
            "type": "boolean",
            "description": "Promote even if gate rules fail (recorded in the bundle).",
        },
        "dry_run": {
            "type": "boolean",
            "description": "Run everything but promotion; production stays as it is.",
        },
    }  # fmt: skip


def data_root() -> Path:
    """The only directory data sources may come from (TTR_DATA_ROOT; default ./data)."""
    return Path(os.environ.get("TTR_DATA_ROOT", "data")).resolve()


# A source Param names a directory under the data root: printable text of bounded length.
MAX_SOURCE_CHARS = 1024
MAX_PARAM_CHARS = 1024  # any string Param; the longest legitimate one is a path
MAX_PATH_COMPONENT_BYTES = 255  # NAME_MAX on Linux, macOS and the usual filesystems
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def resolve_source(value: str | None, root: Path | None = None) -> str | None:
    """A source Param as a path inside the data root.

    Raises:
        ConfigError: not a string, holding a NUL or other control character, too long, absolute,
            URL-like or escaping the root (path traversal).
    """
    if value is None or value == "":
        return None
    _check_source_text(value)
    root = (root or data_root()).resolve()
    if "://" in value or Path(value).is_absolute():
        raise ConfigError(f"param source={value!r}: give a path relative to the data root {root}")
    path = (root / value).resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"param source={value!r} points outside the data root {root}")
    return str(path)


def _check_source_text(value: Any) -> None:
    """Refuse what no directory under the data root can be called, before touching a path."""
    if not isinstance(value, str):
        raise ConfigError(
            f"param source: must be a string (a directory relative to the data root) or empty, "
            f"got {type(value).__name__}"
        )
    shown = _shown(value)
    if _CONTROL_CHARS.search(value):
        raise ConfigError(
            f"param source={shown}: must not contain NUL or other control characters "
            "(newline, tab, ...); give a directory name relative to the data root"
        )
    if len(value) > MAX_SOURCE_CHARS:
        raise ConfigError(
            f"param source={shown}: {len(value)} characters, at most {MAX_SOURCE_CHARS} allowed"
        )
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_COMPONENT_BYTES:
            raise ConfigError(
                f"param source={shown}: a path component is longer than "
                f"{MAX_PATH_COMPONENT_BYTES} bytes, which no filesystem allows"
            )


# JSON schema "type" of a Param -> the Python values that satisfy it (bool is not a number).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _check_param_types(params: dict[str, Any]) -> None:
    """Each Param's value has a type its form allows (what Airflow's own Param check enforces).

    The config would otherwise coerce quietly: "yes" -> True, "5" -> 5, an integer `as_of` ->
    seconds since 1970.

    Raises:
        ConfigError: naming the Param, the types allowed and the type given.
    """
    schemas = _param_schemas()
    for name, value in params.items():
        schema = schemas[name]
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_json_type(value, t) for t in types):
                raise ConfigError(
                    f"param {name}={_shown(value)}: must be {' or '.join(types)}, "
                    f"got {type(value).__name__}"
                )
        if isinstance(value, str) and "\x00" in value:
            raise ConfigError(f"param {name}={_shown(value)}: must not contain a NUL character")
        if isinstance(value, str) and len(value) > MAX_PARAM_CHARS:
            raise ConfigError(
                f"param {name}={_shown(value)}: {len(value)} characters, "
                f"at most {MAX_PARAM_CHARS} allowed"
            )


def _is_json_type(value: Any, json_type: str) -> bool:
    if isinstance(value, bool):
        return json_type == "boolean"
    if json_type == "integer" and isinstance(value, float):
        return value.is_integer()  # JSON schema: 3.0 is an integer
    return isinstance(value, _JSON_TYPES[json_type])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def config_from_params(
    params: dict[str, Any], config_path: str | None = None, *, as_of=None
) -> PipelineConfig:
    """The run's config: deployment YAML/env, then the trigger form's Params on top.

    Args:
        as_of: the point in time a backfill run replays (its logical date); an `as_of` Param
            wins over it.

    Raises:
        ConfigError: a Param is unknown, of a type its form does not allow, holds a NUL,
            is out of range or points outside the data root.
    """
    unknown = set(params) - set(PARAM_FIELDS) - {"source"}
    if unknown:
        raise ConfigError(f"unknown params: {', '.join(sorted(map(_param_name, unknown)))}")
    _check_param_types(params)
    if params.get("as_of") in (None, "") and as_of is not None:
        params = {**params, "as_of": as_of}
    overrides: dict[str, dict[str, Any]] = {
        "data": {"source": resolve_source(params.get("source"))}
    }
    for name, (section, field) in PARAM_FIELDS.items():
        if name in params:
            overrides.setdefault(section, {})[field] = params[name]
    if overrides["data"]["source"] is None:
        del overrides["data"]["source"]
    if params.get("window_days") is None:  # "empty" in the form means: all data
        overrides.setdefault("features", {})["window_days"] = None
    return load_config(config_path or os.environ.get("TTR_CONFIG"), overrides=overrides)


def _param_name(name: Any) -> str:
    return name if isinstance(name, str) and name.isprintable() else repr(name)


def safe_run_id(run_id: str) -> str:
    """An Airflow run id as a directory name (`manual__2026-01-01T00:00:00+00:00` -> safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id).lstrip(".") or "run"


# -- alerts ------------------------------------------------------------------------------------


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
