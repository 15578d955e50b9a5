"""What can be checked of docker/ without a Docker engine: paths, references, compose shape."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_copied_path_exists_in_the_repo():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.M)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), (
                f"docker/Dockerfile copies {source}, missing from the repo"
            )


def test_image_installs_the_lock_and_the_project():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "pip install -r /tmp/requirements.lock" in dockerfile
    assert "TF_USE_LEGACY_KERAS=1" in dockerfile
    assert re.search(r"^USER ", dockerfile, flags=re.M), "the image must not run as root"


def test_compose_runs_airflow3_on_postgres():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    for name in (
        "postgres",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    ):
        assert name in services, name
    assert services["airflow-apiserver"]["command"] == ["airflow", "api-server"]
    assert services["airflow-dag-processor"]["command"] == ["airflow", "dag-processor"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert compose["x-airflow-common"]["build"]["dockerfile"] == "docker/Dockerfile"
