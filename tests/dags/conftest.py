"""One real Airflow deployment (API server, scheduler, DAG processor) shared by the UI and REST
tests of a session: starting one costs about a minute."""

from __future__ import annotations

import shutil

import pytest
from airflow_support import AirflowStack


@pytest.fixture(scope="session")
def airflow_stack(small_world, tmp_path_factory):
    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("Debian's chromium and chromium-driver are required (make test installs them)")
    stack = AirflowStack(tmp_path_factory.mktemp("airflow-stack"), small_world)
    try:
        yield stack
    finally:
        stack.close()
