"""Airflow asset events for what changes production and for what lands.

`production_bundle` (uri `two-tower://registry/production`) gets one event per promotion and
rollback, whoever makes it: the DAG's `promote` task (as its outlet, with
`production_event_extra`), `two-tower promote` / `two-tower rollback`, and the Two-tower view's
rollback button. Its `extra` (`production_event_extra`) says what production serves now and
before, who or which Airflow run changed it, why, and the headline metrics, so the asset's
history in the UI is production's history.

`two_tower_landing` (uri `file://<TTR_DATA_ROOT>/landing`) gets one event per landed partition
(`two-tower land`); the DAG is scheduled on it.

Events are written in-process through Airflow's asset manager on a session of the metadata DB,
as the REST API's `POST /api/v2/assets/events` does: inside the API server or scheduler, and
from the CLI when the environment names an Airflow deployment (`AIRFLOW_HOME` or
`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`). Without one, nothing of Airflow is imported and no file
is created. Emitting never raises: it logs why an event could not be written and returns False
(production already changed; a missing event must not turn that into a failure). A task of a
DAG run has no database access in Airflow 3: there the event comes from the task's outlet.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PRODUCTION_ASSET = "production_bundle"
PRODUCTION_URI = "two-tower://registry/production"
LANDING_ASSET = "two_tower_landing"
ACTIONS = ("promote", "rollback")

# Environment variables that point this process at an Airflow metadata DB.
AIRFLOW_ENV = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET",
)
_DIGITS = 5  # metric values in an event: enough to compare, short enough to read


def landing_uri(data_root: str | os.PathLike) -> str:
    """The landing asset's URI for a data root (as the DAG declares it)."""
    return f"file://{data_root}/landing"


# -- what an event carries -------------------------------------------------------------------


def production_event_extra(
    *,
    action: str,
    bundle_id: str,
    previous: str | None,
    airflow_run_id: str | None = None,
    user: str | None = None,
    decision: str | None = None,
    metrics: dict | None = None,
) -> dict:
    """The `extra` of a `production_bundle` event (JSON-safe, a few hundred bytes).

    Args:
        action: "promote" or "rollback".
        bundle_id: the bundle production serves from now on.
        previous: the bundle it served until now (None: first promotion).
        airflow_run_id: the Airflow DAG run that made the change, as Airflow spells it.
        user: who made it (an Airflow user, `os:<login>` from the CLI).
        decision: the gate's decision, or what a person gave as the reason.
        metrics: the run's `metrics.json` content or a bundle manifest's `metrics`; reduced to
            `headline_metrics`. Anything else is kept as given (its scalar values only).

    Raises:
        ValueError: an unknown action.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    return _json_safe(
        {
            "action": action,
            "bundle_id": bundle_id,
            "previous": previous,
            "airflow_run_id": airflow_run_id,
            "user": user,
            "decision": decision,
            "metrics": headline_metrics(metrics) if metrics else None,
        }
    )


def headline_metrics(metrics: dict) -> dict:
    """The primary metric of an evaluation: the evaluated model's value and interval, the
    champion's and popularity's values, and how many queries measured them.

    Args:
        metrics: `metrics.json` content (or a bundle manifest's `metrics`): sections
            `challenger`, `champion`, `popularity`, `eval` (with `primary_metric`). A dict
            without a `challenger` section is taken as headlines already: its scalars are kept.
    """
    challenger = metrics.get("challenger")
    if not isinstance(challenger, dict):
        return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    primary = (metrics.get("eval") or {}).get("primary_metric")
    if primary not in challenger:
        return {}
    out: dict[str, Any] = {"metric": primary, "value": _rounded(challenger[primary])}
    interval = (challenger.get("ci") or {}).get(primary)
    if interval:
        out["ci"] = [_rounded(x) for x in interval]
    for other in ("champion", "popularity"):
        value = (metrics.get(other) or {}).get(primary)
        if value is not None:
            out[other] = _rounded(value)
    if "queries" in challenger:
        out["queries"] = challenger["queries"]
    return out


def pointer_event_extra(registry, pointer: dict, decision: str | None = None) -> dict:
    """`production_event_extra` for a pointer `Registry.promote` or `Registry.rollback` returned:
    its user, Airflow run and reason, and the headline metrics of the bundle it names (as that
    bundle's run measured them). Never raises: unreadable metrics are left out, with a warning.

    Args:
        registry: the `pipelines.registry.Registry` the pointer belongs to.
        decision: what decided the change (default: the pointer's reason).
    """
    action = pointer.get("event", "promote")
    try:
        metrics = registry.manifest(pointer["bundle_id"]).get("metrics")
    except Exception as exc:  # noqa: BLE001 - the event goes out without metrics
        log.warning("event for bundle %s without metrics: %s", pointer["bundle_id"], exc)
        metrics = None
    return production_event_extra(
        action=action,
        bundle_id=pointer["bundle_id"],
        # After a rollback `previous` is what a further rollback restores; the bundle replaced
        # is `from`.
        previous=pointer.get("from") if action == "rollback" else pointer.get("previous"),
        airflow_run_id=pointer.get("airflow_run_id"),
        user=pointer.get("user"),
        decision=decision if decision is not None else pointer.get("reason"),
        metrics=metrics,
    )


# -- writing events --------------------------------------------------------------------------


def emit_production_event(extra: dict) -> bool:
    """Record a `production_bundle` asset event with this `extra` in Airflow's metadata DB.

    Returns:
        True when the event was written; False (and a log line saying why) when no Airflow is
        configured here, the asset is not registered (the DAG was never parsed) or the DB
        refused. Never raises.
    """
    return _emit(PRODUCTION_ASSET, extra)


def emit_landing_event(partition: str, source: str, extra: dict | None = None) -> bool:
    """Record a `two_tower_landing` asset event for a landed partition.

    The event's `extra` is `{"partition", "source", **extra}` (e.g. `rows`, `path`). The
    partition travels in `extra`, not as the event's partition key: Airflow queues only
    partition-aware DAGs for a keyed event, and `two_tower_retrain` is not one.

    Returns:
        As `emit_production_event`. Never raises.
    """
    return _emit(LANDING_ASSET, {"partition": partition, "source": source, **(extra or {})})


def airflow_unavailable() -> str | None:
    """Why this process cannot write asset events, or None when it can.

    Cheap when no Airflow is configured: unless Airflow is already loaded (API server,
    scheduler) or the environment names a deployment (`AIRFLOW_ENV`), Airflow is not imported,
    so plain CLI use never creates `~/airflow`. A SQLite metadata DB must already exist.
    """
    if "airflow.settings" not in sys.modules and not any(os.environ.get(v) for v in AIRFLOW_ENV):
        return (
            "no Airflow configured (set AIRFLOW_HOME or AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to "
            "the deployment's to record asset events)"
        )
    try:
        from airflow import settings
        from sqlalchemy.engine import make_url
    except Exception as exc:  # noqa: BLE001 - a broken install or config: say so, go on
        return f"Airflow cannot be loaded: {exc}"
    conn = settings.SQL_ALCHEMY_CONN or ""
    if conn.startswith("sqlite"):
        path = make_url(conn).database
        if path and path != ":memory:" and not Path(path).is_file():
            return (
                f"no Airflow metadata DB at {path} (AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}"
                "; point it at the deployment, or run `airflow db migrate` there)"
            )
    if settings.NonScopedSession is None:
        return "Airflow's metadata DB is not configured in this process"
    return None


def _emit(asset_name: str, extra: dict) -> bool:
    try:
        extra = _json_safe(extra)
        why = airflow_unavailable()
        if why:
            log.info("no %s asset event: %s", asset_name, why)
            return False
        event = _register(asset_name, extra)
    except Exception as exc:  # noqa: BLE001 - the change is made; the event is a record of it
        log.warning("could not record the %s asset event: %s: %s", asset_name,
                    type(exc).__name__, exc)  # fmt: skip
        log.debug("the %s asset event failed", asset_name, exc_info=True)
        return False
    if event is None:
        return False
    log.info("recorded %s asset event %s: %s", asset_name, event, extra)
    return True


def _register(asset_name: str, extra: dict) -> int | None:
    """Write one event through Airflow's asset manager; its id, or None (asset unknown)."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    # A session of its own, not the thread's scoped one: the caller (an API route, a listener)
    # may hold that one mid-transaction.
    with create_session(scoped=False) as session:
        assets = session.scalars(select(AssetModel).where(AssetModel.name == asset_name)).all()
        if not assets:
            log.warning(
                "no %s asset event: Airflow does not know the asset (is the two_tower_retrain "
                "DAG deployed and parsed in this Airflow?)", asset_name,
            )  # fmt: skip
            return None
        asset = next((a for a in assets if a.active), assets[0])  # one active asset per name
        event = asset_manager.register_asset_change(asset=asset, extra=extra, session=session)
        if event is None:
            return None
        session.flush()
        return event.id


def _json_safe(value: Any) -> Any:
    """`value` as plain JSON types: numpy scalars to Python, non-finite floats to None, dates
    to ISO text, paths to strings, anything else to its text."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _rounded(value: Any) -> float | None:
    value = _json_safe(value)
    return round(value, _DIGITS) if isinstance(value, float) else value
