"""Writes the note of every finished `two_tower_retrain` run (Airflow listener + plugin).

A task cannot set its own DAG run's note (the task SDK has no such call), so the note is set
where the run's end is decided: Airflow calls `on_dag_run_success` / `on_dag_run_failed` in the
scheduler (in `airflow dags test`, in its loop; in the API server when a person marks a run)
with the DagRun still attached to the session that records the new state. The note goes into
that same session and commits with the state change: no second connection, so nothing waits on
SQLite's single writer lock. Any failure is logged and swallowed: a note must never stop the
scheduler.

The plugin is registered by the entry point `two_tower_notes` (pyproject.toml).
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from airflow.utils.state import TaskInstanceState
from sqlalchemy.orm import object_session

from pipelines.artifacts import ArtifactRoot
from pipelines.layout import RunLayout
from pipelines.orchestration.notes import run_note
from pipelines.orchestration.params import safe_run_id

log = logging.getLogger(__name__)

DAG_ID = "two_tower_retrain"


def _artifact_root() -> str:
    """The deployment's artifact root, as the DAG's tasks see it (the trigger form cannot
    change it)."""
    from pipelines.config import DeploymentSettings

    return DeploymentSettings.from_env().load_config().data.artifact_root


def run_reports(artifact_root: str, run_id: str) -> RunLayout:
    """The local layout of the run's reports: in place on a local root, pulled into this
    process's reader copy from a URL root (`pipelines.artifacts`); possibly missing."""
    root = ArtifactRoot(artifact_root, role="read")
    return root.run_reports(run_id) or root.run_layout(run_id)


def write_note(dag_run, state: str, msg: str | None = None) -> str | None:
    """Set the note of `dag_run` to `run_note` of its run directory, uncommitted, in the
    session that will commit its new state; returns the note (None when the run is not ours or
    a person wrote its note already).

    That session is the one `dag_run` is attached to (scheduler, API server). `airflow dags
    test` hands over a detached DagRun and merges it into its thread's scoped session after the
    listeners ran: the note goes on that session's copy of the run (merging leaves the note
    alone: it was never loaded on the detached one).
    """
    from airflow.models.dagrun import DagRun
    from airflow.settings import Session

    if dag_run.dag_id != DAG_ID:
        return None
    session = object_session(dag_run)
    run = dag_run
    if session is None:
        session = Session()
        run = session.get(DagRun, dag_run.id)
    with session.no_autoflush:  # flushing stays the caller's, at its commit
        existing = run.dag_run_note
        if existing is not None and existing.user_id:
            log.info("run %s has a note by %s: left as written", run.run_id, existing.user_id)
            return None
        failed = (
            [ti.task_id for ti in run.get_task_instances(
                state=[TaskInstanceState.FAILED], session=session)]
            if state == "failed" else []
        )  # fmt: skip
        layout = run_reports(_artifact_root(), safe_run_id(run.run_id))
        run_type = getattr(run.run_type, "value", run.run_type)
        note = run_note(
            layout.run_dir, state, failed_tasks=sorted(failed), run_type=run_type,
            triggered_by=run.triggering_user_name if run_type == "manual" else None,
            message=msg,
        )  # fmt: skip
        run.note = note
    log.info("run note of %s: %s", run.run_id, note.splitlines()[0])
    return note


class RunNotesListener:
    """Airflow dag-run listener: notes the outcome of each finished `two_tower_retrain` run."""

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str):
        self._note(dag_run, "success", msg)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str):
        self._note(dag_run, "failed", msg)

    @staticmethod
    def _note(dag_run, state: str, msg: str) -> None:
        try:
            write_note(dag_run, state, msg)
        except Exception:  # noqa: BLE001 - never let a note break the scheduler
            log.exception("run note of %s not written", getattr(dag_run, "run_id", dag_run))


class RunNotesPlugin(AirflowPlugin):
    """Registers `RunNotesListener` (entry point `two_tower_notes`)."""

    name = "two_tower_notes"
    listeners = [RunNotesListener()]
