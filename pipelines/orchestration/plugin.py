"""The Airflow plugin of the Two-tower view (entry point `two_tower` in pyproject.toml).

- `fastapi_apps`: the view (`views.create_app`) mounted by the API server at `/two-tower`.
- `external_views`: "Two-tower" in the UI's navigation, showing that app inside the UI.
- `global_operator_extra_links`: "Two-tower run report" on every task of the retrain DAG,
  computed by the API server when the UI asks (nothing stored per task): the task's report in
  the run directory (evaluate -> report.md, gate -> gate.md, validate_* -> Data Docs), else the
  run's page.

Auth is Airflow's own (the API server's security dependencies, so the `_token` cookie the UI
sets or a Bearer token): reading needs permission to read runs of the retrain DAG; rolling back
needs permission to edit them (SimpleAuthManager: Viewer reads; User, Op and Admin roll back).

The only module of the package importing Airflow's server side; `pipelines.orchestration`
does not import it.
"""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import Depends

from pipelines.orchestration.links import URL_PREFIX, base_url, run_url
from pipelines.orchestration.params import safe_run_id
from pipelines.orchestration.views import create_app

DAG_ID = "two_tower_retrain"

# Task id -> the report its extra link opens (relative to the run directory).
TASK_REPORTS = {
    "validate_raw": "raw_report/index.html",
    "validate_features": "features_report/index.html",
    "evaluate": "evaluation/report.md",
    "gate": "evaluation/gate.md",
}

can_read_runs = requires_access_dag(
    method="GET", access_entity=DagAccessEntity.RUN, param_dag_id=DAG_ID
)
can_edit_runs = requires_access_dag(
    method="PUT", access_entity=DagAccessEntity.RUN, param_dag_id=DAG_ID
)


def operator_name(user: GetUserDep, _: Annotated[None, Depends(can_edit_runs)]) -> str:
    """The name of a user allowed to edit the retrain DAG's runs (else 401/403)."""
    return user.get_name()


class TwoTowerRunLink(BaseOperatorLink):
    """A retrain task's report in the Two-tower view (empty, so hidden, on other DAGs)."""

    name = "Two-tower run report"

    def get_link(self, operator, *, ti_key) -> str:
        if ti_key.dag_id != DAG_ID:
            return ""
        return run_url(safe_run_id(ti_key.run_id), TASK_REPORTS.get(operator.task_id, ""))


def _view_href() -> str:
    """The view's path as the UI's browser sees it (under `[api] base_url`'s path, if any)."""
    from urllib.parse import urlsplit

    return urlsplit(base_url()).path.rstrip("/") + URL_PREFIX + "/"


class TwoTowerPlugin(AirflowPlugin):
    name = "two_tower"
    fastapi_apps = [
        {
            "name": "Two-tower",
            "app": create_app(reader=can_read_runs, operator=operator_name),
            "url_prefix": URL_PREFIX,
        }
    ]
    external_views = [
        {
            "name": "Two-tower",
            "href": _view_href(),
            "url_route": "two-tower",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    global_operator_extra_links = [TwoTowerRunLink()]
