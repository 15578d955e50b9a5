"""The image's /entrypoint and /healthcheck, run for real with this venv's Airflow.

No Docker engine runs here, so the scripts run on the host with the venv first on PATH (in the
image: /opt/venv/bin). The calls are the ones docker/compose.yaml and the official Helm chart
make (its default args and probe commands, quoted from chart 1.22's templates).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.sh"


@pytest.fixture
def image_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TTR_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    return env


def run(args, env, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, **kw)


def test_entrypoint_runs_the_charts_and_composes_command_forms(image_env):
    # Chart args: bash -c "exec airflow <component>" (here with a harmless command).
    out = run([ENTRYPOINT, "bash", "-c", 'echo "$0|$1"', "a", "b c"], image_env)
    assert (out.returncode, out.stdout) == (0, "a|b c\n"), out.stderr
    # Chart worker probe: sh -c "CONNECTION_CHECK_MAX_COUNT=0 exec /entrypoint python -m celery ..."
    probe = f"CONNECTION_CHECK_MAX_COUNT=0 exec {ENTRYPOINT} python -m celery --version"
    out = run(["sh", "-c", probe], image_env)
    assert out.returncode == 0 and out.stdout.startswith("5."), (out.stdout, out.stderr)
    # An executable on PATH runs as given.
    out = run([ENTRYPOINT, "env"], {**image_env, "MARK": "x1"})
    assert "MARK=x1" in out.stdout.splitlines()
    # A bare Airflow subcommand (the official image's `command: version`) runs under airflow.
    out = run([ENTRYPOINT, "version"], image_env)
    assert (out.returncode, out.stdout.strip()) == (0, "3.3.2"), out.stderr
    # No arguments: the CLI's help (the image's CMD is the same).
    out = run([ENTRYPOINT], image_env)
    assert out.returncode == 0 and "two-tower" in out.stdout, out.stderr


def test_entrypoint_exit_status_is_the_commands(image_env):
    out = run([ENTRYPOINT, "bash", "-c", "exit 7"], image_env)
    assert out.returncode == 7


@pytest.mark.parametrize(
    ("cmdline", "check"),
    [
        ("dumb-init -- /entrypoint airflow scheduler", "airflow jobs check --job-type SchedulerJob --local"),
        ("dumb-init -- /entrypoint bash -c exec airflow scheduler", "airflow jobs check --job-type SchedulerJob --local"),
        ("dumb-init -- /entrypoint airflow triggerer", "airflow jobs check --job-type TriggererJob --local"),
        ("dumb-init -- /entrypoint airflow dag-processor", "airflow jobs check --job-type DagProcessorJob --local"),
        ("dumb-init -- /entrypoint airflow api-server", "/api/v2/monitor/health"),
        ("dumb-init -- /entrypoint bash -c exec \\\n airflow celery worker", "inspect ping -d celery@wk-1"),
        ("dumb-init -- /entrypoint airflow celery flower", "http://localhost:5555/"),
        ("dumb-init -- /entrypoint two-tower run --preset small", "import airflow.configuration"),
    ],
)  # fmt: skip
def test_healthcheck_picks_the_check_of_the_containers_component(
    cmdline, check, tmp_path, image_env
):
    proc = tmp_path / "cmdline"
    proc.write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    env = {**image_env, "HEALTHCHECK_DRY_RUN": "1", "HEALTHCHECK_PROC_CMDLINE": str(proc),
           "HOSTNAME": "wk-1"}  # fmt: skip
    out = run([HEALTHCHECK], env)
    assert out.returncode == 0 and check in out.stdout, (out.stdout, out.stderr)


def test_every_component_compose_names_is_one_the_healthcheck_knows(image_env):
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test", [])
        if test[1:2] == ["/healthcheck"]:
            out = run([HEALTHCHECK, *test[2:]], {**image_env, "HEALTHCHECK_DRY_RUN": "1"})
            assert out.returncode == 0, f"{name}: {out.stderr}"
    out = run([HEALTHCHECK, "webserver"], image_env)
    assert out.returncode == 2 and "unknown component webserver" in out.stderr


def test_healthcheck_really_imports_airflow_and_fails_a_dead_api_server(image_env):
    out = run([HEALTHCHECK, "cli"], image_env)
    assert out.returncode == 0, out.stderr
    port = free_port()  # nobody listens on it
    out = run([HEALTHCHECK, "api-server"], {**image_env, "AIRFLOW_API_PORT": str(port)})
    assert out.returncode != 0 and "Connection refused" in out.stderr
    # A broken install fails the check: an `airflow` package that cannot be imported.
    shadow = Path(image_env["AIRFLOW_HOME"]).parent / "shadow" / "airflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('half-installed airflow')\n")
    broken = {**image_env, "PYTHONPATH": str(shadow.parent)}
    out = run([HEALTHCHECK, "cli"], broken, cwd=shadow.parent)
    assert out.returncode != 0 and "half-installed airflow" in out.stderr
