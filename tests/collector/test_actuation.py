"""Power-cap actuation through the fake NVML binding: guards, range checks, audit log, revert, HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from collector.actuation import ActuationRefused, PowerCapActuator
from collector.agent import AgentStats
from collector.exporter import Exporter
from tests.collector.sources.fake_pynvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml

TOKEN = "t0ken-for-tests-only"


def _actuator(tmp_path: Path, *, enabled: bool = True, root: bool = True,
              nvml: FakeNvml | None = None) -> tuple[PowerCapActuator, FakeNvml]:
    nv = nvml or FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-1")])
    act = PowerCapActuator(host="node-a", enabled=enabled, token=TOKEN,
                           audit_path=tmp_path / "audit.jsonl", nvml=nv, is_root=lambda: root)
    return act, nv


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_dry_run_is_the_default_and_changes_nothing_but_is_audited(tmp_path: Path) -> None:
    act, nv = _actuator(tmp_path)
    change = act.apply(0, 450, who="ops")
    assert change.dry_run and change.before_w == 700 and change.after_w == 450
    assert nv.gpus[0].limit_mw == 700_000 and nv.set_limits == []
    assert _audit(tmp_path)[0]["dry_run"] is True


def test_apply_then_revert_restores_the_previous_limit(tmp_path: Path) -> None:
    act, nv = _actuator(tmp_path)
    act.apply(1, 500, who="ops", dry_run=False)
    act.apply(1, 400, who="ops", dry_run=False)
    assert nv.gpus[1].limit_mw == 400_000
    back = act.revert(1, who="ops", dry_run=False)
    assert (back.before_w, back.after_w) == (400, 500)
    act.revert(1, who="ops", dry_run=False)
    assert nv.gpus[1].limit_mw == 700_000
    assert nv.gpus[0].limit_mw == 700_000  # the other GPU was never touched
    with pytest.raises(ActuationRefused, match="no applied change"):
        act.revert(1, who="ops", dry_run=False)
    entries = _audit(tmp_path)
    assert [(e["action"], e["before_w"], e["after_w"]) for e in entries] == [
        ("apply", 700, 500), ("apply", 500, 400), ("revert", 400, 500), ("revert", 500, 700)]
    assert all(e["who"] == "ops" and e["host"] == "node-a" for e in entries)


@pytest.mark.parametrize("watts", [150, 701, 10_000])
def test_limits_outside_the_device_range_are_refused_naming_the_range(
        tmp_path: Path, watts: float) -> None:
    act, nv = _actuator(tmp_path)
    with pytest.raises(ActuationRefused, match=r"outside gpu 0's allowed range 200-700 W"):
        act.apply(0, watts, who="ops", dry_run=False)
    assert nv.set_limits == []


def test_real_change_needs_enabled_and_root(tmp_path: Path) -> None:
    act, nv = _actuator(tmp_path, enabled=False)
    assert act.apply(0, 450, who="ops").dry_run  # dry runs are allowed while disabled
    with pytest.raises(ActuationRefused, match="--enable-actuation"):
        act.apply(0, 450, who="ops", dry_run=False)
    act, nv = _actuator(tmp_path, root=False)
    with pytest.raises(ActuationRefused, match="needs root"):
        act.apply(0, 450, who="ops", dry_run=False)
    assert nv.set_limits == []


def test_enabling_without_a_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WATTLENS_AGENT_TOKEN"):
        PowerCapActuator(host="h", enabled=True, token=None, audit_path=tmp_path / "a",
                         nvml=FakeNvml())


def _post(url: str, body: object, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def test_http_endpoint_checks_token_and_input_then_applies(tmp_path: Path) -> None:
    act, nv = _actuator(tmp_path)
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    exporter.start()
    try:
        url = exporter.url + "/v1/cap"
        status, body = _post(url, {"gpu": 0, "watts": 450}, None)  # a dry run from loopback
        assert status == 200 and body["dry_run"] and (body["before_w"], body["after_w"],
                                                      body["min_w"], body["max_w"]) == (700, 450, 200, 700)
        assert nv.gpus[0].limit_mw == 700_000
        assert _post(url, {"gpu": 0, "watts": 450, "dry_run": False}, None)[0] == 401
        assert _post(url, {"gpu": 0, "watts": 450, "dry_run": False}, "wrong")[0] == 401
        assert _post(url, {"gpu": 0, "watts": 450, "dry_run": False}, TOKEN + "x")[0] == 401
        status, body = _post(url, {"gpu": "0", "watts": 450}, TOKEN)
        assert status == 400 and body["error"].startswith("gpu:")
        status, body = _post(url, {"gpu": 0, "watts": "lots"}, TOKEN)
        assert status == 400 and body["error"].startswith("watts:")
        status, body = _post(url, {"gpu": 0, "watts": 450, "host": 7}, TOKEN)
        assert status == 400 and body["error"].startswith("host:") and "7" in body["error"]
        # one actuator: it answers whatever name the caller knows its node by (the URL chose it)
        status, body = _post(url, {"gpu": 0, "watts": 450, "host": "node-a.example"}, None)
        assert status == 200 and body["host"] == "node-a"
        status, body = _post(url, {"gpu": 0, "watts": 450, "dry_run": False, "who": "ops"}, TOKEN)
        assert status == 200 and body["after_w"] == 450 and not body["dry_run"]
        assert nv.gpus[0].limit_mw == 450_000
        status, body = _post(url + "/revert", {"gpu": 0, "dry_run": False}, TOKEN)
        assert status == 200 and nv.gpus[0].limit_mw == 700_000
        assert TOKEN not in (tmp_path / "audit.jsonl").read_text()
    finally:
        exporter.stop()


def test_cli_refuses_without_flags_or_token_and_explains() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WATTLENS_AGENT_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "wattlens", "cap", "apply"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2 and "--host, --gpu, --watts" in out.stderr
    out = subprocess.run([sys.executable, "-m", "wattlens", "cap", "apply", "--host", "n1",
                          "--gpu", "0", "--watts", "400"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2 and "WATTLENS_AGENT_TOKEN is not set" in out.stderr


def test_cli_dry_run_then_apply_through_a_real_agent_server(tmp_path: Path) -> None:
    act, nv = _actuator(tmp_path)
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    exporter.start()
    env = {**os.environ, "WATTLENS_AGENT_TOKEN": TOKEN}
    base = [sys.executable, "-m", "wattlens", "cap", "apply", "--host", "node-a", "--gpu", "1",
            "--watts", "500", "--agent-url", exporter.url]
    try:
        dry = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert "700 W -> 500 W" in dry.stdout and "dry run" in dry.stdout
        assert nv.gpus[1].limit_mw == 700_000
        real = subprocess.run([*base, "--apply"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert real.returncode == 0 and "APPLIED" in real.stdout
        assert nv.gpus[1].limit_mw == 500_000
        bad = subprocess.run([*base[:-4], "--watts", "9000", "--agent-url", exporter.url],
                             capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 2 and "allowed range 200-700 W" in bad.stderr  # bad input: exit 2
    finally:
        exporter.stop()


def test_cli_dry_run_on_loopback_needs_no_token_and_a_disabled_agent_says_how_to_enable(
        tmp_path: Path) -> None:
    nv = FakeNvml([FakeGpu(), FakeGpu(uuid="GPU-1")])
    act = PowerCapActuator(host="node-a", enabled=False, token=None,
                           audit_path=tmp_path / "audit.jsonl", nvml=nv, is_root=lambda: True)
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    bare = Exporter(AgentStats(), port=0)  # an agent without /v1/cap at all
    exporter.start()
    bare.start()
    env = {k: v for k, v in os.environ.items() if k != "WATTLENS_AGENT_TOKEN"}
    base = [sys.executable, "-m", "wattlens", "cap", "apply", "--host", "127.0.0.1", "--gpu", "1",
            "--watts", "450"]
    try:
        dry = subprocess.run([*base, "--agent-url", exporter.url], capture_output=True, text=True,
                             env=env, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert "power limit 700 W -> 450 W (allowed 200-700 W) [dry run" in dry.stdout
        assert nv.gpus[1].limit_mw == 700_000
        message = ("actuation is not enabled on that agent: start it with --enable-actuation "
                   "(root and a token needed)")
        for url in (exporter.url, bare.url):
            real = subprocess.run([*base, "--agent-url", url, "--apply"], capture_output=True,
                                  text=True, env={**env, "WATTLENS_AGENT_TOKEN": TOKEN}, timeout=60)
            assert real.returncode == 1 and real.stderr.strip() == f"wattlens: error: {message}"
        assert nv.gpus[1].limit_mw == 700_000
        remote = subprocess.run([*base[:5], "--host", "node-b", *base[7:]], capture_output=True,
                                text=True, env=env, timeout=60)
        assert remote.returncode == 2 and "a dry run on another host needs" in remote.stderr
    finally:
        exporter.stop()
        bare.stop()


def test_a_host_without_nvml_answers_503_with_a_clear_message(tmp_path: Path) -> None:
    act, _ = _actuator(tmp_path, nvml=FakeNvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    exporter = Exporter(AgentStats(), port=0)
    act.mount(exporter)
    exporter.start()
    try:
        status, body = _post(exporter.url + "/v1/cap", {"gpu": 0, "watts": 300}, None)
    finally:
        exporter.stop()
    assert status == 503 and body["code"] == "no_nvml"
    assert body["error"].startswith("power limits unavailable on this host:")
