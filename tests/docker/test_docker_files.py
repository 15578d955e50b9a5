"""What can be checked of docker/ without a Docker engine: paths, references, compose shape.

The schema validation of compose.yaml and helm/values.yaml is in test_deploy_schemas.py; the
image's /entrypoint and /healthcheck scripts run for real in test_image_scripts.py.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_copied_path_exists_in_the_repo():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.M)
    assert copies
    for line in copies:
        *sources, _dest = [word for word in line.split() if not word.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), (
                f"docker/Dockerfile copies {source}, missing from the repo"
            )


def _lock_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[=<>\[ ;]", line)[0].lower() for line in lines if line}


def test_image_installs_the_production_lock_only():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*", dockerfile)
    assert "pip install -r /tmp/requirements-prod.lock" in installs, installs
    # The lock is the single authority: no package pinned on the side, no dev lock.
    copied_locks = re.findall(r"^COPY (\S*requirements\S*)", dockerfile, flags=re.M)
    assert copied_locks == ["requirements-prod.lock"], copied_locks
    assert not [i for i in installs if "==" in i], installs
    prod = _lock_names(ROOT / "requirements-prod.lock")
    assert {"apache-airflow", "psycopg2-binary", "asyncpg", "redis", "s3fs", "gcsfs"} <= prod
    assert "apache-airflow-providers-celery" in prod
    assert not prod & {"pytest", "ruff", "selenium", "moto", "import-linter"}, "dev tools"
    # Every runtime pin is the one the tests ran with.
    dev = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for line in (ROOT / "requirements-prod.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pin = line.split("==", 1)
            assert dev.get(name) == pin, f"{name}=={pin} is not what requirements.lock pins"
    assert "TF_USE_LEGACY_KERAS=1" in dockerfile
    assert re.search(r"^USER ", dockerfile, flags=re.M), "the image must not run as root"


def test_image_follows_the_official_entrypoint_and_healthcheck_conventions():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]' in dockerfile
    assert re.search(r"^COPY --chmod=0755 docker/entrypoint.sh /entrypoint$", dockerfile, re.M)
    assert re.search(r"^COPY --chmod=0755 docker/healthcheck.sh /healthcheck$", dockerfile, re.M)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["/healthcheck"\]', dockerfile, re.M)
    # The build runs the healthcheck's import check, so a missing driver fails the build.
    assert "/healthcheck cli" in dockerfile
    assert "import asyncpg, psycopg2, redis, s3fs, gcsfs" in dockerfile
    # GIT_SHA reaches code_version() through TTR_GIT_SHA (an image has no .git).
    runtime = dockerfile[dockerfile.index("AS runtime") :]
    assert re.search(r'^ARG GIT_SHA=""$', runtime, re.M)
    assert 'TTR_GIT_SHA="${GIT_SHA}"' in runtime
    assert "uid 50000" in dockerfile and re.search(r"^ARG AIRFLOW_UID=50000$", dockerfile, re.M)


def compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]


def test_compose_runs_airflow3_with_celery_on_postgres_and_redis():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    commands = {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "airflow-worker": ["airflow", "celery", "worker"],
        "flower": ["airflow", "celery", "flower"],
    }
    for name, command in commands.items():
        assert services[name]["command"] == command, name
    assert {"postgres", "redis", "airflow-init"} <= set(services)
    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )
    assert env["DUMB_INIT_SETSID"] == "0"  # Celery warm shutdown
    assert services["airflow-worker"]["deploy"]["replicas"] == "${AIRFLOW_WORKER_REPLICAS:-2}"
    assert services["flower"]["profiles"] == ["flower"]
    for name in commands:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["airflow-init"]["condition"] == "service_completed_successfully", name
    assert compose["x-airflow-common"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert compose["x-airflow-common"]["build"]["args"] == {"GIT_SHA": "${GIT_SHA:-}"}
    assert "postgres-db:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_compose_runs_as_airflow_uid_and_init_prepares_the_mounts_then_migrates():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert compose["x-airflow-common"]["user"] == "${AIRFLOW_UID:-50000}:0"
    init = compose["services"]["airflow-init"]
    assert init["user"] == "0:0" and init["entrypoint"] == "/bin/bash"
    script = init["command"][1]
    assert init["environment"]["AIRFLOW_UID"] == "${AIRFLOW_UID:-50000}"
    mounts = {
        re.sub(r"^(\$\{[^}]+\}|[^:]+):", "", v).split(":")[0]
        for v in compose["x-airflow-common"]["volumes"]
    }
    assert mounts == {"/opt/app/artifacts", "/opt/airflow/logs", "/opt/app/data", "/opt/app/config"}
    prepared = re.search(r'dirs="([^"]+)"', script)[1].split()
    assert set(prepared) == mounts - {"/opt/app/config"}  # config is mounted read-only
    steps = [line.strip() for line in script.splitlines() if line.strip()]
    order = [i for i, line in enumerate(steps) if re.match(r"(mkdir|chown|exec setpriv)", line)]
    assert [steps[i].split()[0] for i in order] == ["mkdir", "chown", "exec"], steps
    assert 'chown -R "$${AIRFLOW_UID}:0"' in script
    # Migrations run as AIRFLOW_UID, not as root, through the image's entrypoint.
    assert '--reuid="$${AIRFLOW_UID}" --regid=0' in script
    assert script.rstrip().endswith("/entrypoint airflow db migrate")
    # The script as the container's bash gets it (Compose turns $$ into $) is valid bash.
    env = {var: "x" for var in required_variables(compose)}
    resolved = interpolate(compose, env)["services"]["airflow-init"]["command"]
    syntax = subprocess.run(["bash", "-n", "-c", resolved[1]], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    assert 'chown -R "${AIRFLOW_UID}:0" $dirs' in resolved[1]


def test_compose_mounts_data_config_and_a_shared_artifact_root():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    common = compose["x-airflow-common"]
    env = common["environment"]
    assert env["TTR_DATA_ROOT"] == "/opt/app/data"
    assert env["TTR_CONFIG"] == "/opt/app/config/${TTR_CONFIG_FILE:-pipeline.yaml}"
    assert env["TTR_DATA__ARTIFACT_ROOT"] == "${TTR_ARTIFACT_ROOT:-/opt/app/artifacts}"
    assert env["AIRFLOW_CONN_TWO_TOWER_ALERTS"] == "${AIRFLOW_CONN_TWO_TOWER_ALERTS:-}"
    assert "${TTR_CONFIG_DIR:-./config}:/opt/app/config:ro" in common["volumes"]
    assert "artifacts:/opt/app/artifacts" in common["volumes"]
    # Every Airflow service shares the one artifact volume and environment (x-airflow-common).
    for name, svc in compose["services"].items():
        if name.startswith("airflow-") or name == "flower":
            assert svc["volumes"] == common["volumes"], name
    # The mounted config file exists and loads as the pipeline config.
    from pipelines.config.deployment import DeploymentSettings

    settings = DeploymentSettings.from_env(
        {"TTR_CONFIG": str(ROOT / "docker" / "config" / "pipeline.yaml")}
    )
    assert settings.load_config(), "docker/config/pipeline.yaml must load"


def test_compose_limits_every_service_and_gives_the_worker_the_most():
    services = compose_services()
    limits = {}
    for name, svc in services.items():
        if name in ("airflow-init", "airflow-cli"):
            continue
        limits[name] = svc["deploy"]["resources"]["limits"]
        assert {"cpus", "memory"} <= set(limits[name]), name
    worker = limits.pop("airflow-worker")
    assert worker == {
        "cpus": "${AIRFLOW_WORKER_CPUS:-4}",
        "memory": "${AIRFLOW_WORKER_MEMORY:-8G}",
    }
    assert all(float(lim["cpus"]) <= 1 for lim in limits.values()), limits
    assert services["airflow-worker"]["stop_grace_period"] == "10m"


def test_compose_healthchecks_run_the_image_check_for_their_component():
    services = compose_services()
    components = {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery-worker",
        "flower": "flower",
    }
    for name, component in components.items():
        assert services[name]["healthcheck"]["test"] == ["CMD", "/healthcheck", component], name
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# --- Secrets and exposure (issue 13, item 2) --------------------------------------------------
# No Docker Compose on the test machine, so its variable interpolation is reproduced here for
# the forms compose.yaml may use: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error},
# ${VAR?error} and $$ (a literal $).

DOCKER = ROOT / "docker"
INIT_SECRETS = DOCKER / "init-secrets.sh"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|FERNET|TOKEN|PRIVATE|_KEY$", re.I)
REQUIRED = re.compile(r"^\$\{(?P<var>[A-Za-z_]\w*):\?(?P<msg>[^}]+)\}$")
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<var>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(Exception):
    """What Compose reports (and why it refuses to start) for an unset ${VAR:?error}."""


def interpolate(value, env: dict[str, str]):
    """`value` (a parsed compose document or part of it) with variables substituted."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        var, op, arg = m["var"], m["op"], m["arg"]
        have = env.get(var)
        unset = have is None or (have == "" and op is not None and op.startswith(":"))
        if not unset:
            return have
        if op in (":?", "?"):
            raise MissingVariable(f"required variable {var} is missing a value: {arg}")
        return arg if op in (":-", "-") else ""

    return _INTERPOLATION.sub(substitute, value)


def compose_doc() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def secret_settings(compose: dict):
    """(where, name, value) of every environment entry holding a secret or a URL with one."""
    envs = [("x-airflow-common", compose["x-airflow-common"].get("environment", {}))]
    envs += [(name, svc.get("environment", {})) for name, svc in compose["services"].items()]
    for where, env in envs:
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for name, value in items:
            if SECRET_NAME.search(name) or re.match(r"[\w+.-]+://[^:/@]+:.+@", str(value)):
                yield where, name, str(value)


def required_variables(compose: dict) -> set[str]:
    text = yaml.safe_dump(compose)
    return {m["var"] for m in _INTERPOLATION.finditer(text) if m["op"] in (":?", "?")}


def run_init_secrets(*args, umask: int = 0o022) -> subprocess.CompletedProcess:
    # A permissive umask in the caller: the script must still produce an owner-only file.
    return subprocess.run(
        ["bash", "-c", f'umask {umask:03o}; exec bash "$0" "$@"', str(INIT_SECRETS), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


def test_no_literal_secret_values_in_docker_files():
    for path in sorted(p for p in DOCKER.rglob("*") if p.is_file() and p.name != ".env"):
        text = path.read_text()
        for literal in ("change-me", "two-tower-dev", "airflow:airflow@", "PASSWORD: airflow"):
            assert literal not in text, f"{path.name} ships a default secret ({literal!r})"
        # A Dockerfile must not bake a secret into an ENV/ARG of the image.
        for line in re.findall(r"^(?:ENV|ARG)\s+(.+)$", text, flags=re.M):
            assert not SECRET_NAME.search(line.split("=")[0]), f"{path.name}: {line}"
    # Every secret in compose comes from outside: substitute sentinels, each must show up.
    compose = compose_doc()
    sentinels = {var: f"sentinel-{var}" for var in required_variables(compose)}
    resolved = interpolate(compose, sentinels)
    for where, name, value in secret_settings(resolved):
        assert any(s in value for s in sentinels.values()), f"{where}.{name}={value!r}"


def test_every_secret_uses_the_required_variable_form():
    compose = compose_doc()
    checked = set()
    for where, name, value in secret_settings(compose):
        if "://" in value:  # a DB URL: its password part must be a required variable
            password = re.match(r"^[\w+]+://[^:/@]+:(?P<pw>.+)@[^@]+$", value)
            assert password and REQUIRED.match(password["pw"]), f"{where}.{name}={value!r}"
        else:
            assert REQUIRED.match(value), f"{where}.{name} must be ${{VAR:?...}}, is {value!r}"
        checked.add(name)
    assert {
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "POSTGRES_PASSWORD",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    } <= checked
    for m in _INTERPOLATION.finditer(yaml.safe_dump(compose)):
        if m["op"] in (":?", "?"):
            assert "init-secrets.sh" in m["arg"], f"${{{m['var']}}}: say how to set it"


def test_compose_refuses_to_start_without_each_secret():
    compose = compose_doc()
    required = required_variables(compose)
    assert {
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "POSTGRES_PASSWORD",
    } <= required
    full = {var: "x" * 32 for var in required}
    interpolate(compose, full)
    for var in required:
        for env in ({k: v for k, v in full.items() if k != var}, {**full, var: ""}):
            try:
                interpolate(compose, env)
            except MissingVariable as exc:
                assert var in str(exc) and "init-secrets.sh" in str(exc)
            else:
                raise AssertionError(f"compose would start without {var}")


def test_ui_is_published_on_loopback_unless_overridden():
    compose = compose_doc()
    env = {var: "x" for var in required_variables(compose)}
    published = []
    for name, svc in interpolate(compose, env)["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.count(":") == 2, (
                f"{name}: publish as HOST_IP:HOST_PORT:CONTAINER_PORT, not {port!r}"
            )
            assert port.split(":")[0] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published.append(port)
    assert sorted(published) == ["127.0.0.1:5555:5555", "127.0.0.1:8080:8080"]
    exposed = interpolate(compose, {**env, "AIRFLOW_UI_BIND": "0.0.0.0", "AIRFLOW_UI_PORT": "9"})
    assert exposed["services"]["airflow-apiserver"]["ports"] == ["0.0.0.0:9:8080"]
    assert exposed["services"]["flower"]["ports"] == ["0.0.0.0:5555:5555"]


def test_init_secrets_writes_private_distinct_random_values(tmp_path):
    from cryptography.fernet import Fernet

    made = []
    for name in ("a/.env", "b/.env"):
        result = run_init_secrets(str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        made.append(read_env_file(path))
    first, second = made
    compose = compose_doc()
    assert set(first) == set(second) == required_variables(compose)
    for var in first:
        assert first[var] != second[var], f"{var} is the same in two installs"
        assert len(first[var]) >= 32, var
    assert len(set(first.values())) == len(first), "one value reused for two secrets"
    Fernet(first["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid Fernet key
    assert re.fullmatch(r"[0-9a-f]+", first["POSTGRES_PASSWORD"])  # safe inside the DB URL
    resolved = interpolate(compose, first)  # the generated file is all compose needs
    conn = resolved["x-airflow-common"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert f":{first['POSTGRES_PASSWORD']}@" in conn
    assert (
        resolved["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == first["POSTGRES_PASSWORD"]
    )
    # Nothing secret on the terminal.
    for value in first.values():
        assert value not in run_init_secrets(str(tmp_path / "c.env")).stdout


def test_init_secrets_local_mode_has_no_postgres_password(tmp_path):
    result = run_init_secrets("--local", str(tmp_path / "secrets.env"))
    assert result.returncode == 0, result.stderr
    assert set(read_env_file(tmp_path / "secrets.env")) == {
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
    }


def test_init_secrets_never_overwrites(tmp_path):
    existing = tmp_path / ".env"
    existing.write_text("AIRFLOW__CORE__FERNET_KEY=in-use\n")
    result = run_init_secrets(str(existing))
    assert result.returncode == 1
    assert "already exists" in result.stderr and "not overwriting" in result.stderr
    assert existing.read_text() == "AIRFLOW__CORE__FERNET_KEY=in-use\n"
    # Nor through a symlink (dangling or not), and no temporary file is left behind.
    link = tmp_path / "link.env"
    link.symlink_to(tmp_path / "elsewhere.env")
    assert run_init_secrets(str(link)).returncode == 1
    assert not (tmp_path / "elsewhere.env").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "link.env"]


def test_generated_secrets_stay_out_of_git_and_the_image():
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert "**/.env" in ignored and ".airflow" in ignored
