"""Security probes (issue 13): no default secrets, a loopback-only private `make airflow`,
secrets never logged, malformed Params refused with a ConfigError.

Every probe is recorded in the reliability tally (suite "security"): "handled" when the secure
behaviour holds, "data_lost" when a secret leaks or state is exposed; Param refusals are
"clear_error" (or "crash" when something other than a ConfigError escapes).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psutil
import pytest
from ports import free_port

from pipelines import orchestration as orch
from pipelines.config import DeploymentSettings
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SUITE = "security"


# --- make airflow -------------------------------------------------------------------------------


def make_airflow_recipe(curdir: Path | None = None, **variables: str) -> list[str]:
    """The shell lines `make airflow` would run (its `setup` prerequisite left out)."""
    args = ["make", "-s", "-n", "-o", "setup", "airflow"]
    if curdir is not None:
        args.append(f"CURDIR={curdir}")
    args += [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.replace("\\\n", " ").splitlines()


def test_make_airflow_binds_loopback_with_private_files_and_own_secrets(tally):
    lines = make_airflow_recipe()
    [start] = [line for line in lines if "airflow standalone" in line]
    words = shlex.split(start.replace(";", " ; "))
    env = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w))
    checks = {
        "make_airflow_api_host_loopback": env.get("AIRFLOW__API__HOST") == "127.0.0.1",
        "make_airflow_umask_077": words[:2] == ["umask", "077"],
        "make_airflow_sources_generated_secrets": ". ./.airflow/secrets.env" in start
        and "set -a" in start,
        "make_airflow_generates_secrets_once": any(
            re.fullmatch(
                r"\[ -e \.airflow/secrets\.env \] \|\| bash docker/init-secrets\.sh --local "
                r"\.airflow/secrets\.env",
                line,
            )
            for line in lines
        ),
        "make_airflow_home_private": any("chmod -R go-rwx .airflow" in line for line in lines),
        "make_airflow_no_wildcard_bind": "0.0.0.0" not in "\n".join(lines),
    }
    for case, ok in checks.items():
        tally.record(SUITE, case, "handled" if ok else "data_lost", start)
    assert all(checks.values()), checks
    # Overridable on purpose, for someone who wants the UI on the network.
    exposed = " ".join(make_airflow_recipe(AIRFLOW_BIND="0.0.0.0", AIRFLOW_PORT="9090"))
    assert "AIRFLOW__API__HOST=0.0.0.0 AIRFLOW__API__PORT=9090" in exposed
    # Tasks reach the Execution API, and links the UI, on the port it really serves.
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:9090/execution/" in exposed
    assert "AIRFLOW__API__BASE_URL=http://127.0.0.1:9090" in exposed
    moved = " ".join(make_airflow_recipe(AIRFLOW_PORT="8091"))
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8091/execution/" in moved


def _primary_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _listeners(root: psutil.Process) -> list[tuple[str, int, str]]:
    found = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.append((c.laddr.ip, c.laddr.port, proc.name()))
    return found


@pytest.mark.slow
def test_make_airflow_really_listens_on_loopback_only_and_writes_0600(tmp_path, tally):
    """Runs what `make airflow` runs (from `make -n`), in a scratch directory, for real."""
    (tmp_path / "docker").symlink_to(REPO / "docker")
    (tmp_path / "dags").mkdir()
    port = free_port()
    script = tmp_path / "make-airflow.sh"
    script.write_text("\n".join(make_airflow_recipe(tmp_path, AIRFLOW_PORT=str(port))) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TTR_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        # Airflow's log servers listen on fixed ports (8793/8794); keep parallel runs apart.
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
    )
    log = (tmp_path / "standalone.log").open("w")
    # A permissive umask in the caller: the recipe must tighten it itself.
    proc = subprocess.Popen(
        ["bash", "-c", 'umask 022; exec bash "$0"', str(script)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    home = tmp_path / ".airflow"
    passwords = home / "simple_auth_manager_passwords.json.generated"
    try:
        deadline = time.monotonic() + 150
        api = []
        while time.monotonic() < deadline and proc.poll() is None:
            api = [x for x in _listeners(psutil.Process(proc.pid)) if x[1] == port]
            if api and passwords.exists() and (home / "airflow.db").exists():
                break
            time.sleep(1)
        assert api, (
            f"api-server never listened on {port}:\n{(tmp_path / 'standalone.log').read_text()[-3000:]}"
        )
        loopback_only = {ip for ip, _, _ in api} == {"127.0.0.1"}
        tally.record(
            SUITE,
            "standalone_api_server_loopback_only",
            "handled" if loopback_only else "data_lost",
            str(api),
        )
        assert loopback_only, api
        address = _primary_address()
        if address:
            with socket.socket() as s:
                s.settimeout(2)
                refused = s.connect_ex((address, port)) != 0
            tally.record(
                SUITE,
                "standalone_unreachable_from_network",
                "handled" if refused else "data_lost",
                address,
            )
            assert refused, f"the UI answers on {address}:{port}"
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in [home / "airflow.db", passwords, home / "secrets.env", home / "airflow.cfg"]
            if p.exists()
        }
        assert {"airflow.db", passwords.name, "secrets.env"} <= set(modes), modes
        for name, mode in modes.items():
            tally.record(
                SUITE,
                f"standalone_{name}_0600",
                "handled" if mode == 0o600 else "data_lost",
                oct(mode),
            )
        assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


# --- docker/: the checks of tests/docker, recorded in the tally ---------------------------------


def _docker_checks():
    path = REPO / "tests" / "docker" / "test_docker_files.py"
    spec = importlib.util.spec_from_file_location("docker_file_checks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCKER_PROBES = [
    "test_no_literal_secret_values_in_docker_files",
    "test_every_secret_uses_the_required_variable_form",
    "test_compose_refuses_to_start_without_each_secret",
    "test_ui_is_published_on_loopback_unless_overridden",
    "test_init_secrets_writes_private_distinct_random_values",
    "test_init_secrets_never_overwrites",
    "test_generated_secrets_stay_out_of_git_and_the_image",
]


@pytest.mark.parametrize("probe", DOCKER_PROBES)
def test_docker_secret_probe(probe, tmp_path, tally):
    check = getattr(_docker_checks(), probe)
    try:
        check(tmp_path) if "init_secrets" in probe else check()
    except AssertionError as exc:
        tally.record(SUITE, probe.removeprefix("test_"), "data_lost", str(exc)[:200])
        raise
    tally.record(SUITE, probe.removeprefix("test_"), "handled")


# --- the alerts webhook URL is a secret ----------------------------------------------------------

TOKEN = "T0SECRET/B0SECRET/xoxbSecretToken123"


class _FailingWebhook:
    """A webhook on 127.0.0.1 that answers 500, or hangs up, or speaks garbage."""

    def __init__(self, behaviour: str):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                if behaviour == "500":
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(f"internal error for {self.path}".encode())
                elif behaviour == "garbage":
                    self.wfile.write(f"NOT-HTTP {self.path}\r\n\r\n".encode())
                self.close_connection = True  # "hangup": no response at all

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_port

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "case",
    ["http_500", "hangup", "garbage_status_line", "unreachable_port", "credentials_bad_port"],
)
def test_failed_alert_delivery_never_logs_the_webhook_url(case, caplog, tally):
    server = None
    if case in ("http_500", "hangup", "garbage_status_line"):
        behaviour = {"http_500": "500", "hangup": "hangup", "garbage_status_line": "garbage"}
        server = _FailingWebhook(behaviour[case])
        url = f"http://127.0.0.1:{server.port}/services/{TOKEN}?token=querySecret42"
    elif case == "unreachable_port":
        url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}?token=querySecret42"
    else:  # userinfo with a password and a malformed port: http.client quotes it in the error
        url = f"http://hookuser:pwSecret99@127.0.0.1:notaport/services/{TOKEN}"
    caplog.set_level(logging.DEBUG)
    try:
        delivered = orch.send_alert({"text": "gate rejected"}, url, timeout=5)
    finally:
        if server:
            server.close()
    logged = caplog.text + "\n".join(
        str(r.args) + str(r.exc_info) + str(r.exc_text) for r in caplog.records
    )
    secrets = [
        "T0SECRET",
        "B0SECRET",
        "xoxbSecretToken123",
        "querySecret42",
        "pwSecret99",
        "hookuser",
    ]
    leaked = [s for s in secrets if s in logged]
    tally.record(
        SUITE, f"alert_url_not_logged_{case}", "data_lost" if leaked else "handled", str(leaked)
    )
    assert delivered is False
    assert not leaked, f"{leaked} in the log:\n{caplog.text}"
    failure = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure and "alerts webhook" in failure[0] and "127.0.0.1" in failure[0], failure


def test_delivered_alert_logs_no_url_either(caplog, tally):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.DEBUG)
    try:
        url = f"http://127.0.0.1:{server.server_port}/services/{TOKEN}"
        assert orch.send_alert({"text": "ok"}, url, timeout=5) is True
    finally:
        server.shutdown()
        server.server_close()
    leaked = TOKEN in caplog.text
    tally.record(SUITE, "alert_url_not_logged_delivered", "data_lost" if leaked else "handled")
    assert received and not leaked


# --- malformed Params are ConfigErrors naming the Param and the rule -------------------------------

BAD_PARAMS = {
    "source_nul": ({"source": "landing\x00/x"}, "source", "NUL"),
    "source_newline": ({"source": "landing\n"}, "source", "control characters"),
    "source_over_long": ({"source": "a/" * 600}, "source", "at most 1024"),
    "source_component_over_long": ({"source": "x" * 300}, "source", "255 bytes"),
    "source_int": ({"source": 7}, "source", "must be null or string"),
    "source_list": ({"source": ["landing"]}, "source", "must be null or string"),
    "source_bytes": ({"source": b"landing"}, "source", "must be null or string"),
    "as_of_nul": ({"as_of": "2026-01-01\x00"}, "as_of", "NUL"),
    "as_of_over_long": ({"as_of": "2026-01-01" + "0" * 5000}, "as_of", "at most 1024"),
    "as_of_int": ({"as_of": 1767225600}, "as_of", "must be null or string"),
    "format_nul": ({"format": "auto\x00"}, "format", "NUL"),
    "preset_nul": ({"preset": "small\x00"}, "preset", "NUL"),
    "epochs_str": ({"epochs": "5"}, "epochs", "must be integer"),
    "epochs_bool": ({"epochs": True}, "epochs", "must be integer"),
    "epochs_fraction": ({"epochs": 2.5}, "epochs", "must be integer"),
    "learning_rate_str": ({"learning_rate": "0.1"}, "learning_rate", "must be number"),
    "force_promote_str": ({"force_promote": "yes"}, "force_promote", "must be boolean"),
    "dry_run_int": ({"dry_run": 0}, "dry_run", "must be boolean"),
    "window_days_bool": ({"window_days": True}, "window_days", "must be null or integer"),
    "unknown_key_nul": ({"source\x00": "x"}, "unknown params", "source"),
    "unknown_key_int": ({7: "x"}, "unknown params", "7"),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_malformed_param_is_a_config_error(case, tmp_path, monkeypatch, tally):
    params, name, rule = BAD_PARAMS[case]
    try:
        orch.config_from_params(params, DeploymentSettings(data_root=tmp_path))
    except ConfigError as exc:
        message = str(exc)
        clear = name in message and rule in message
        tally.record(SUITE, f"param_{case}", "clear_error" if clear else "crash", message[:200])
        assert clear, message
    except Exception as exc:  # noqa: BLE001 - anything else is what the probe looks for
        tally.record(SUITE, f"param_{case}", "crash", repr(exc)[:200])
        raise AssertionError(f"{case}: {type(exc).__name__} instead of ConfigError") from exc
    else:
        tally.record(SUITE, f"param_{case}", "silent_accept", repr(params)[:200])
        raise AssertionError(f"{case}: accepted {params!r}")


def test_resolve_source_alone_refuses_nul_and_non_strings(tmp_path):
    for bad in ("a\x00b", 3, ["a"]):
        with pytest.raises(ConfigError, match="param source"):
            orch.resolve_source(bad, root=tmp_path)


def test_well_formed_params_still_pass(tmp_path, monkeypatch):
    (tmp_path / "ml").mkdir()
    cfg = orch.config_from_params(
        {"source": "ml", "epochs": 3.0, "learning_rate": 1, "dry_run": False, "as_of": None},
        DeploymentSettings(data_root=tmp_path),
    )
    assert cfg.data.source == str(tmp_path / "ml") and cfg.train.epochs == 3
    assert cfg.train.learning_rate == 1.0 and cfg.gate.dry_run is False
