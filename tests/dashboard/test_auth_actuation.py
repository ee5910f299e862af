"""Security: loopback by default, a token when reachable from elsewhere; actuation only with the agent's token."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from collector.actuation import CapEndpoint, PowerCapActuator
from collector.agent import AgentStats
from collector.autopilot_sim import sim_actuators
from collector.errors import ConfigError
from collector.exporter import Exporter
from collector.sim.nvml import SimulatedNvml
from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore
from dashboard import actuation
from dashboard.app import create_app
from dashboard.auth import is_loopback, token_matches
from dashboard.server import DashboardServer
from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml
from tests.servers import free_port
from wattlens.commands.dashboard import resolve_auth

TOKEN = "dash-token-for-tests-0123456789"
AGENT_TOKEN = "agent-token-for-tests-0123456789"


def _get(url: str, auth: str | None = None, data: bytes | None = None) -> tuple[int, Message, bytes]:
    """(status, headers, body); header names are case-insensitive, as in HTTP."""
    req = urllib.request.Request(url, data=data, headers={"Authorization": auth} if auth else {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status), resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers, exc.read()


@pytest.mark.parametrize(("bind", "mode", "env", "expect"), [
    ("127.0.0.1", "auto", {}, None),
    ("::1", "auto", {}, None),
    ("127.0.0.1", "auto", {"WATTLENS_DASHBOARD_TOKEN": TOKEN}, TOKEN),
    ("0.0.0.0", "auto", {"WATTLENS_DASHBOARD_TOKEN": TOKEN}, TOKEN),
    ("10.1.2.3", "token", {"WATTLENS_DASHBOARD_TOKEN": TOKEN}, TOKEN),
    ("127.0.0.1", "none", {"WATTLENS_DASHBOARD_TOKEN": TOKEN}, None),
])
def test_auth_resolution_allows_safe_combinations(bind: str, mode: str, env: dict[str, str],
                                                  expect: str | None) -> None:
    assert resolve_auth(bind, mode, env) == expect


@pytest.mark.parametrize(("bind", "mode", "env", "message"), [
    ("0.0.0.0", "auto", {}, "--dashboard-bind 0.0.0.0: the dashboard would be reachable"),
    ("192.168.1.5", "auto", {}, "--dashboard-bind 192.168.1.5"),
    ("0.0.0.0", "none", {"WATTLENS_DASHBOARD_TOKEN": TOKEN}, "--auth none is only allowed"),
    ("127.0.0.1", "token", {}, "--auth token: WATTLENS_DASHBOARD_TOKEN is not set"),
    ("0.0.0.0", "auto", {"WATTLENS_DASHBOARD_TOKEN": "short"}, "at least 16 characters, got 5"),
    ("127.0.0.1", "basic", {}, "--auth: expected one of auto, token, none, got 'basic'"),
])
def test_auth_resolution_refuses_unsafe_ones_with_a_named_reason(bind: str, mode: str, env: dict[str, str],
                                                                  message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        resolve_auth(bind, mode, env)
    assert "short" not in str(err.value) or "got 5" in str(err.value)  # a token is never echoed


def test_loopback_and_header_parsing() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.9.9.9") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.org")
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert token_matches(basic, TOKEN) and token_matches(f"Bearer {TOKEN}", TOKEN)
    assert not token_matches(f"Bearer {TOKEN}x", TOKEN) and not token_matches("Basic !!!", TOKEN)
    assert not token_matches(None, TOKEN) and not token_matches(f"Token {TOKEN}", TOKEN)


def test_every_route_needs_the_token_when_it_is_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    server = DashboardServer(create_app(store, auth_token=TOKEN), "127.0.0.1", 0)
    server.start()
    try:
        base = server.url
        status, headers, _ = _get(base)
        assert status == 401 and headers["WWW-Authenticate"].startswith('Basic realm="wattlens"')
        for path in ("_dash-layout", "_dash-dependencies", "assets/wattlens.css"):
            assert _get(base + path)[0] == 401, path
        body = json.dumps({"output": "page.children", "outputs": {"id": "page", "property": "children"},
                           "inputs": [{"id": "url", "property": "pathname", "value": "/"}],
                           "changedPropIds": ["url.pathname"],
                           "state": [{"id": "lam", "property": "data", "value": 0.5},
                                     {"id": "url", "property": "search", "value": ""}]}).encode()
        assert _get(base + "_dash-update-component", data=body)[0] == 401
        assert _get(base, f"Bearer {TOKEN}x")[0] == 401
        basic = "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()
        assert _get(base, basic)[0] == 200
        assert _get(base + "_dash-layout", f"Bearer {TOKEN}")[0] == 200
        assert _get(base + "_dash-update-component", f"Bearer {TOKEN}", body)[0] == 200
    finally:
        server.stop()
        store.close()
    assert any("refused GET / from 127.0.0.1" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text


def test_cli_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    out = subprocess.run([sys.executable, "-m", "wattlens", "dashboard", "--store",
                          str(tmp_path / "x.db"), "--dashboard-bind", "0.0.0.0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, "one line"
    assert "--dashboard-bind 0.0.0.0" in out.stderr and "WATTLENS_DASHBOARD_TOKEN" in out.stderr
    assert not (tmp_path / "x.db").exists(), "refused before opening anything"


def test_cli_serves_with_the_token_and_never_logs_it(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")},
           "WATTLENS_DASHBOARD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "wattlens", "dashboard", "--store",
                             str(tmp_path / "x.db"), "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and "dashboard: http://127.0.0.1" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the dashboard exited"
        assert _get(f"http://127.0.0.1:{port}/")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/", f"Bearer {TOKEN}")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert TOKEN not in out and "refused GET /" in out


def test_actuation_needs_the_agent_token_on_the_command_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    out = subprocess.run([sys.executable, "-m", "wattlens", "dashboard", "--store",
                          str(tmp_path / "x.db"), "--enable-actuation"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "WATTLENS_AGENT_TOKEN is not set" in out.stderr


def test_plan_reads_power_cap_actions_only() -> None:
    action = {"type": "power_cap", "gpu_model": "NVIDIA H100 80GB HBM3", "watts": 500.0,
              "hosts": ["node-00"], "gpus": {"node-00": ["0", "1"], "node-04": ["2"]}}
    steps = actuation.plan(action)
    assert [(s.host, s.gpu, s.watts) for s in steps] == [("node-00", 0, 500.0), ("node-00", 1, 500.0),
                                                         ("node-04", 2, 500.0)]
    assert "3 GPU(s) to 500 W" in actuation.describe(steps)
    assert actuation.plan({"type": "consolidate", "job": "x"}) == []
    assert actuation.plan({"type": "power_cap", "watts": "lots", "gpus": {"a": ["0"]}}) == []
    assert actuation.plan(None) == []


@pytest.fixture
def agent(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real agent HTTP server with the power-cap actuator over a fake NVML (8 GPUs)."""
    nv = FakeNvml([FakeGpu(uuid=f"GPU-{i}") for i in range(8)])
    act = PowerCapActuator(host="node-00", enabled=True, token=AGENT_TOKEN,
                           audit_path=tmp_path / "audit.jsonl", nvml=nv, is_root=lambda: True)
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    exporter.start()
    yield exporter, nv, tmp_path / "audit.jsonl"
    exporter.stop()


def test_apply_goes_through_the_agent_with_its_token_and_is_audited(agent, caplog) -> None:  # type: ignore[no-untyped-def]
    exporter, nv, audit = agent
    client = actuation.AgentClient(exporter.url, AGENT_TOKEN)
    steps = actuation.plan({"type": "power_cap", "watts": 500, "gpus": {"node-00": ["0", "3"]}})
    results = client.apply(steps, who="dashboard")
    assert all(r.ok for r in results) and "700" in results[0].message and "500" in results[0].message
    assert nv.gpus[0].limit_mw == 500_000 and nv.gpus[3].limit_mw == 500_000
    assert nv.gpus[1].limit_mw == 700_000
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [(x["gpu"], x["after_w"], x["dry_run"]) for x in lines] == [(0, 500, False), (3, 500, False)]
    assert all(x["who"].startswith("dashboard@") for x in lines)
    assert AGENT_TOKEN not in caplog.text and AGENT_TOKEN not in audit.read_text()


def test_a_wrong_token_or_range_is_reported_per_gpu_and_changes_nothing(agent) -> None:  # type: ignore[no-untyped-def]
    exporter, nv, _audit = agent
    bad = actuation.AgentClient(exporter.url, "not-the-agent-token")
    (r,) = bad.apply([actuation.CapStep("node-00", 0, 500)], who="dashboard")
    assert not r.ok and r.message.startswith("refused (401)")
    good = actuation.AgentClient(exporter.url, AGENT_TOKEN)
    (r,) = good.apply([actuation.CapStep("node-00", 0, 90)], who="dashboard")
    assert not r.ok and "outside gpu 0's allowed range" in r.message
    assert nv.gpus[0].limit_mw == 700_000
    (r,) = actuation.AgentClient(f"http://127.0.0.1:{free_port()}", AGENT_TOKEN).apply(
        [actuation.CapStep("node-00", 0, 500)], who="dashboard")
    assert not r.ok and "cannot reach the agent" in r.message
    with pytest.raises(ValueError, match="WATTLENS_AGENT_TOKEN"):
        actuation.AgentClient(exporter.url, "")


def test_apply_names_the_host_so_a_simulated_agent_of_several_nodes_caps_the_right_one(
        tmp_path: Path) -> None:
    fleet = SimulatedFleet(nodes=2, gpus_per_node=2, seed=3)
    acts = sim_actuators(fleet, tmp_path / "audit.jsonl", token=AGENT_TOKEN)
    exporter = Exporter(AgentStats(), port=0)
    CapEndpoint(acts, any_name=False).mount(exporter)
    exporter.start()
    try:
        nvml = {h: SimulatedNvml(fleet, h) for h in acts}
        before = {h: n.nvmlDeviceGetPowerManagementLimit(n.nvmlDeviceGetHandleByIndex(1))
                  for h, n in nvml.items()}
        lo_mw = nvml["node-01"].nvmlDeviceGetPowerManagementLimitConstraints(
            nvml["node-01"].nvmlDeviceGetHandleByIndex(1))[0]
        watts = lo_mw / 1000 + 10
        (r,) = actuation.AgentClient(exporter.url, AGENT_TOKEN).apply(
            [actuation.CapStep("node-01", 1, watts)], who="dashboard")
        assert r.ok, r.message
        after = {h: n.nvmlDeviceGetPowerManagementLimit(n.nvmlDeviceGetHandleByIndex(1))
                 for h, n in nvml.items()}
        assert after == {"node-00": before["node-00"], "node-01": round(watts * 1000)}
    finally:
        exporter.stop()
