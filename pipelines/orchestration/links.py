"""Absolute URLs of the Two-tower view (the Airflow plugin in `plugin.py`/`views.py`).

Notes, alerts, approvals and extra links point people at a run's reports through these, so the
URL scheme is spelled here once. The base is Airflow's `[api] base_url` (what the API server
serves under), read lazily so importing this module needs no Airflow.
"""

from __future__ import annotations

from urllib.parse import quote

# Where the plugin's FastAPI app is mounted under the API server.
URL_PREFIX = "/two-tower"
# Used when Airflow is not importable or `[api] base_url` is unset (the API server's default).
DEFAULT_BASE_URL = "http://localhost:8080"


def base_url() -> str:
    """Airflow's `[api] base_url` without a trailing slash (`DEFAULT_BASE_URL` when unset)."""
    try:
        from airflow.configuration import conf
    except ImportError:
        return DEFAULT_BASE_URL
    return (conf.get("api", "base_url", fallback="") or DEFAULT_BASE_URL).rstrip("/")


def view_url(path: str = "") -> str:
    """The absolute URL of `path` inside the Two-tower view (`""`: the overview)."""
    return f"{base_url()}{URL_PREFIX}/{path.lstrip('/')}"


def run_url(run_dir_name: str, path: str = "") -> str:
    """The absolute URL of a run's page, or of a file in its run directory.

    Args:
        run_dir_name: the run directory's name under `<artifact_root>/runs/` (for a DAG run,
            `safe_run_id(airflow_run_id)`).
        path: a file relative to the run directory (e.g. `evaluation/report.md`,
            `raw_report/index.html`); empty for the run's page.
    """
    page = f"runs/{quote(run_dir_name, safe='')}/"
    if path:
        page += "files/" + quote(path.lstrip("/"))
    return view_url(page)
