"""docker/compose.yaml and docker/helm/values.yaml: their published schemas, and what the image needs.

No Docker engine or Kubernetes cluster runs here. The compose file is validated against the
Compose Specification's JSON schema (compose-spec/compose-spec, schema/compose-spec.json) and
the values against the official Airflow chart's values.schema.json, both Apache-2.0, with
`jsonschema` (in the lock). The schema files are not part of this repo: they are read from
$TTR_DEPLOY_SCHEMAS (default: ../shared/schemas beside the checkout) and those tests skip when
a file is absent. The checks of what our image needs from the chart run always.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from test_docker_files import compose_doc, interpolate, required_variables

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(os.environ.get("TTR_DEPLOY_SCHEMAS", ROOT.parent / "shared" / "schemas"))
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.json"
CHART_SCHEMA = SCHEMAS / "airflow-chart-1.22.0.values.schema.json"
VALUES = ROOT / "docker" / "helm" / "values.yaml"


def validator(path: Path):
    if not path.is_file():
        pytest.skip(f"{path.name} is not available here (set TTR_DEPLOY_SCHEMAS)")
    import jsonschema

    schema = json.loads(path.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def errors(validator, doc) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def resolved_compose(**env: str) -> dict:
    """The compose file as Compose sees it: variables substituted (secrets set, defaults used)."""
    compose = compose_doc()
    return interpolate(compose, {**{var: "x" * 32 for var in required_variables(compose)}, **env})


# --- against the published schemas ----------------------------------------------------------


def test_compose_file_is_valid_compose_spec():
    spec = validator(COMPOSE_SCHEMA)
    assert errors(spec, resolved_compose()) == []
    assert errors(spec, resolved_compose(TTR_ARTIFACT_ROOT="s3://bucket/tt")) == []
    # The schema does catch mistakes of the kind one makes here.
    broken = resolved_compose()
    broken["services"]["airflow-worker"]["deploy"]["resources"]["limit"] = {"cpus": "1"}
    broken["services"]["redis"]["healthcheck"]["intervall"] = "10s"
    found = errors(spec, broken)
    assert len(found) == 2 and any("limit" in e for e in found), found


def test_helm_values_are_valid_for_the_official_chart():
    chart = validator(CHART_SCHEMA)
    assert errors(chart, values()) == []
    broken = values()
    broken["executor"] = "CeleryExecutr"
    broken["secret"].append({"envName": "AIRFLOW_CONN_X"})  # no secretName
    assert len(errors(chart, broken)) == 2


# --- what the image needs from the chart (always run) ----------------------------------------


def lock_pins(path: Path) -> dict[str, str]:
    pairs = (line.split("==", 1) for line in path.read_text().splitlines() if "==" in line)
    return {name.strip().lower(): pin.split()[0] for name, pin in pairs if not name.startswith("#")}


def image_env() -> dict[str, str]:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    return dict(re.findall(r"^\s+(AIRFLOW__[A-Z_]+)=(\S+?)\s*\\?$", dockerfile, flags=re.M))


def test_values_run_our_image_with_celery_and_the_locked_airflow():
    v = values()
    pins = lock_pins(ROOT / "requirements-prod.lock")
    assert v["executor"] == "CeleryExecutor"
    assert v["airflowVersion"] == pins["apache-airflow"]
    assert "apache-airflow-providers-celery" in pins
    assert v["images"]["airflow"]["repository"].endswith("/two-tower-retrain")
    assert v["images"]["useDefaultImageForMigration"] is False
    assert (v["uid"], v["gid"]) == (50000, 0)  # the image's user (docker/Dockerfile)
    # DAGs are baked into the image at the image's dags folder.
    dags_folder = image_env()["AIRFLOW__CORE__DAGS_FOLDER"]
    assert v["dags"]["mountPath"] == v["config"]["core"]["dags_folder"] == dags_folder
    assert not v["dags"]["gitSync"]["enabled"] and not v["dags"]["persistence"]["enabled"]
    workers = v["workers"]["celery"]
    assert workers["replicas"] >= 2
    assert {"cpu", "memory"} <= set(workers["resources"]["limits"])


def test_values_keep_the_charts_commands_and_probes_which_our_entrypoint_runs():
    """The chart's default args (`bash -c "exec airflow ..."`) and probes (`/entrypoint airflow
    jobs check ...`, `/entrypoint python -m celery ... inspect ping`) run as they are:
    tests/docker/test_image_scripts.py runs those forms through docker/entrypoint.sh."""
    v = values()
    for component in ("scheduler", "triggerer", "dagProcessor", "apiServer", "workers"):
        section = v.get(component, {})
        for sub in (section, section.get("celery", {})):
            assert sub.get("command") is None and sub.get("args") is None, component
            for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
                command = sub.get(probe, {}).get("command")
                assert command is None or command[0] in ("/entrypoint", "/healthcheck")


def test_values_need_nothing_the_image_lacks():
    v = values()
    pins = lock_pins(ROOT / "requirements-prod.lock")
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    # No FAB provider in the image: the simple auth manager, and no `airflow users create` job.
    assert "apache-airflow-providers-fab" not in pins
    assert v["config"]["core"]["auth_manager"].endswith("simple_auth_manager.SimpleAuthManager")
    assert v["createUserJob"]["enabled"] is False
    assert v["apiServer"]["replicas"] == 1  # simple auth manager passwords are per pod
    # No /clean-logs script in the image: every log groomer sidecar is off.
    assert "/clean-logs" not in dockerfile
    for component in ("scheduler", "triggerer", "dagProcessor"):
        assert v[component]["logGroomerSidecar"]["enabled"] is False, component
    assert v["workers"]["celery"]["logGroomerSidecar"]["enabled"] is False


def test_values_hold_no_secret_and_take_each_from_a_kubernetes_secret():
    v = values()
    for inline in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert v.get(inline) is None, f"{inline}: use {inline}SecretName"
    assert v["fernetKeySecretName"] and v["jwtSecretName"] and v["apiSecretKeySecretName"]
    assert v["data"]["metadataSecretName"] and "metadataConnection" not in v["data"]
    assert v["postgresql"]["enabled"] is False  # an external PostgreSQL, URL in the secret
    assert v["redis"]["enabled"] is True
    assert "extraSecrets" not in v, "secrets created by the chart would sit in this file"
    secret_env = {s["envName"]: s for s in v["secret"]}
    assert secret_env["AIRFLOW_CONN_TWO_TOWER_ALERTS"]["secretName"] == "two-tower-alerts"
    plain = {e["name"]: e["value"] for e in v["env"]}
    assert not set(plain) & set(secret_env)
    assert not [n for n in plain if re.search(r"SECRET|PASSWORD|TOKEN|_KEY$|^AIRFLOW_CONN_", n)]


def test_values_share_the_artifact_root_and_mount_data_and_config(tmp_path):
    v = values()
    env = {e["name"]: e["value"] for e in v["env"]}
    mounts = {m["mountPath"]: m["name"] for m in v["volumeMounts"]}
    volumes = {vol["name"]: vol for vol in v["volumes"]}
    # Top-level volumes/env reach every Airflow container: all workers see the same root.
    root = env["TTR_DATA__ARTIFACT_ROOT"]
    assert re.match(r"(s3|gs)://", root) or root in mounts, root
    assert env["TTR_DATA_ROOT"] in mounts
    if "://" in root:  # tasks stage run directories locally: a per-pod scratch volume
        assert "emptyDir" in volumes[mounts[env["TTR_STAGING_DIR"]]]
    assert "persistentVolumeClaim" in volumes[mounts[env["TTR_DATA_ROOT"]]]
    config_dir, config_file = os.path.split(env["TTR_CONFIG"])
    config_map = volumes[mounts[config_dir]]["configMap"]["name"]
    data = yaml.safe_load(v["extraConfigMaps"][config_map]["data"])
    from pipelines.config.loading import load_config

    (tmp_path / config_file).write_text(data[config_file])
    load_config(tmp_path / config_file, env={})
