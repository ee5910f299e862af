"""The scripts the images run, run here: entrypoint (*_FILE secrets), HEALTHCHECK, secrets, the agent's install."""

from __future__ import annotations

import http.server
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def load(name: str) -> ModuleType:
    # docker/ is not a package (and `import docker` would find docker-py): load by path.
    spec = importlib.util.spec_from_file_location(f"wattlens_docker_{name}", DOCKER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = load("healthcheck")
init_secrets = load("init_secrets")


# --- entrypoint.sh ---------------------------------------------------------------------------


@pytest.fixture
def fake_wattlens(tmp_path: Path) -> Path:
    """A `wattlens` on PATH that prints its argv and the WATTLENS_* environment it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "wattlens"
    fake.write_text('#!/bin/sh\necho "argv: $*"\nenv | grep "^WATTLENS_" | sort\n')
    fake.chmod(0o755)
    return bin_dir


def entrypoint(bin_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    return subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), *args], env=full,
                          capture_output=True, text=True, timeout=30)


def test_entrypoint_is_posix_sh() -> None:
    assert subprocess.run(["sh", "-n", str(DOCKER / "entrypoint.sh")]).returncode == 0
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK), "the image runs it directly"


def test_entrypoint_turns_secret_files_into_env_and_execs_wattlens(fake_wattlens: Path,
                                                                   tmp_path: Path) -> None:
    token = tmp_path / "influx_token"
    token.write_text("s3cret-influx-token\n")
    proc = entrypoint(fake_wattlens, {"WATTLENS_INFLUX_TOKEN_FILE": str(token),
                                      "WATTLENS_STORE": "influxdb2://influxdb:8086/w?org=w"},
                      "collect", "--once")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "argv: collect --once"
    assert "WATTLENS_INFLUX_TOKEN=s3cret-influx-token" in lines
    assert not any(line.startswith("WATTLENS_INFLUX_TOKEN_FILE=") for line in lines)
    assert "s3cret" not in proc.stderr


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "is not a readable file"),
    ("empty", "is empty"),
    ("both", "both WATTLENS_AGENT_TOKEN and WATTLENS_AGENT_TOKEN_FILE are set"),
])
def test_entrypoint_refuses_a_bad_secret_file(fake_wattlens: Path, tmp_path: Path, setup: str,
                                              message: str) -> None:
    path = tmp_path / "agent_token"
    env = {"WATTLENS_AGENT_TOKEN_FILE": str(path)}
    if setup == "empty":
        path.write_text("")
    if setup == "both":
        path.write_text("from-file-token")
        env["WATTLENS_AGENT_TOKEN"] = "from-env-token"
    proc = entrypoint(fake_wattlens, env, "collect")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "argv:" not in proc.stdout, "wattlens must not start"
    assert "from-env-token" not in proc.stderr and "from-file-token" not in proc.stderr


# --- healthcheck.py --------------------------------------------------------------------------


@pytest.fixture
def metrics_server() -> Iterator[str]:
    """A loopback server answering /metrics 200 only with the bearer token `t0ken`, 500 on /broken."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/broken":
                code = 500
            elif self.headers.get("Authorization") == "Bearer t0ken":
                code = 200
            else:
                code = 401
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_healthcheck_healthy_with_token_from_env_or_file(metrics_server: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = metrics_server + "/metrics"
    assert healthcheck.main([url], {"WATTLENS_AGENT_TOKEN": "t0ken"}) == 0
    token_file = tmp_path / "agent_token"
    token_file.write_text("t0ken\n")
    assert healthcheck.main([], {"WATTLENS_HEALTHCHECK_URL": url,
                                 "WATTLENS_AGENT_TOKEN_FILE": str(token_file)}) == 0
    assert "t0ken" not in capsys.readouterr().out


def test_healthcheck_unhealthy_cases(metrics_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main([metrics_server + "/metrics"], {}) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert healthcheck.main([metrics_server + "/broken"], {"WATTLENS_AGENT_TOKEN": "t0ken"}) == 1
    assert "HTTP 500" in capsys.readouterr().err
    assert healthcheck.main([f"http://127.0.0.1:{free_port()}/metrics"], {}) == 1
    assert "unreachable" in capsys.readouterr().err
    assert healthcheck.main(["file:///etc/passwd"], {}) == 1
    assert "must be http(s)" in capsys.readouterr().err
    assert healthcheck.main([metrics_server], {"WATTLENS_AGENT_TOKEN_FILE": "/nonexistent/t"}) == 1
    assert "cannot read WATTLENS_AGENT_TOKEN_FILE" in capsys.readouterr().err


# --- init_secrets.py -------------------------------------------------------------------------


def test_init_secrets_generates_keeps_and_takes_from_env(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    first = init_secrets.ensure(directory, {"GRAFANA_ADMIN_PASSWORD": "a-password-of-20-chars"})
    assert first == {"influx_token": "generated", "influx_admin_password": "generated",
                     "agent_token": "generated", "grafana_admin_password": "from env"}
    values = {p.name: p.read_text() for p in directory.iterdir()}
    assert set(values) == set(init_secrets.SECRETS)
    assert values["grafana_admin_password"] == "a-password-of-20-chars"
    assert len(set(values.values())) == 4 and all(len(v) >= 32 for k, v in values.items()
                                                  if k != "grafana_admin_password")
    for p in directory.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o444
    # A restart keeps what is there, even when the environment now says otherwise.
    second = init_secrets.ensure(directory, {"WATTLENS_INFLUX_TOKEN": "another-token-of-32-characters!!"})
    assert set(second.values()) == {"kept"}
    assert {p.name: p.read_text() for p in directory.iterdir()} == values


def test_init_secrets_rejects_a_short_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_AGENT_TOKEN", "short")
    assert init_secrets.main([str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "WATTLENS_AGENT_TOKEN: must be at least 16 characters, got 5" in err
    assert "short" not in err
    assert init_secrets.main([]) == 2


# --- the agent image's install, in a venv ----------------------------------------------------


@pytest.mark.slow
def test_agent_install_recipe_runs_the_agent_without_dash(tmp_path: Path) -> None:
    """Dockerfile.agent's recipe in a clean venv: requirements-agent.txt, then `pip install --no-deps`.

    The source is copied first (as the image's COPY does), so the build never
    writes into the working tree. Needs the package index, like the image build.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("wattlens", "collector", "analytics", "dashboard"):
        shutil.copytree(ROOT / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for step in ([*pip, "-r", str(DOCKER / "requirements-agent.txt")], [*pip, "--no-deps", str(src)]):
        proc = subprocess.run(step, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(step)}:\n{proc.stdout}{proc.stderr}"
    python = str(venv / "bin" / "python")
    missing = subprocess.run(
        [python, "-c", "import importlib.util as u; "
                       "print(' '.join(m for m in ('dash', 'plotly', 'torch') if u.find_spec(m)))"],
        capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0 and missing.stdout.strip() == "", f"in the agent venv: {missing.stdout}"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "WATTLENS_SOURCE": "sim",
           "WATTLENS_NODES": "1", "WATTLENS_GPUS": "2"}
    proc = subprocess.run([str(venv / "bin" / "wattlens"), "collect", "--once", "--interval", "0.1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gpu" in proc.stdout and "power_w" in proc.stdout
    exporter = subprocess.run([python, "-c", "import collector.exporter, collector.spool, "
                                             "collector.store.influx, influxdb_client, pynvml"],
                              capture_output=True, text=True, timeout=60)
    assert exporter.returncode == 0, exporter.stderr
