"""What can be checked of docker/ without a Docker engine: paths, references, compose shape."""

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
    assert published == ["127.0.0.1:8080:8080"]
    exposed = interpolate(compose, {**env, "AIRFLOW_UI_BIND": "0.0.0.0", "AIRFLOW_UI_PORT": "9"})
    assert exposed["services"]["airflow-apiserver"]["ports"] == ["0.0.0.0:9:8080"]


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
