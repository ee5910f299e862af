"""`wattlens cap` against a real `wattlens collect --source sim` agent, both as subprocesses.

The agent's /v1/cap speaks for every simulated host through the simulated NVML, the same
actuators the autopilot uses: a dry run needs no token on loopback, a real change needs
--enable-actuation and the token, and the simulated GPU obeys the new limit from then on.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import open_store
from collector.store.base import AggregateQuery

TOKEN = "cap-sim-test-token-0123456789"
SERIES = re.compile(r'^(wattlens_gpu_power(?:_limit)?_watts)\{gpu="(\d+)",host="([^"]+)"[^}]*\} (\S+)$')


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    return {**env, "WATTLENS_AGENT_TOKEN": token} if token else env


class Agent:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = _port()
        self.store = f"sqlite:///{tmp}/db.sqlite"
        self.audit = tmp / "audit.jsonl"
        self.log = (tmp / "agent.log").open("wb")  # a pipe nobody reads would fill and stall it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "2",
             "--gpus", "4", "--store", self.store, "--spool-dir", str(tmp / "spool"),
             "--audit-log", str(self.audit), "--ingest-socket", "off",
             "--autopilot-kill-file", str(tmp / "stop"),
             "--prometheus-port", str(self.port), "--interval", "0.5", *extra],
            env=_env(TOKEN), stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while not self.gpus():
            assert self.proc.poll() is None, (tmp / "agent.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the agent served no GPU metrics in 60 s"
            time.sleep(0.3)

    def gpus(self) -> dict[tuple[str, int], dict[str, float]]:
        """(host, gpu) -> {"power": W, "limit": W}, from the agent's /metrics."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[tuple[str, int], dict[str, float]] = {}
        for line in text.splitlines():
            m = SERIES.match(line)
            if m:
                key = "limit" if m.group(1).endswith("limit_watts") else "power"
                out.setdefault((m.group(3), int(m.group(2))), {})[key] = float(m.group(4))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.log.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path, "--enable-actuation")
    yield a
    a.stop()


def _cap(agent: Agent, host: str, gpu: int, watts: float, *extra: str,
         token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattlens", "cap", "apply", "--host", host,
                           "--gpu", str(gpu), "--watts", f"{watts:g}", "--agent-url", agent.url,
                           *extra], env=_env(token), capture_output=True, text=True, timeout=60)


def _audit(agent: Agent) -> list[dict[str, object]]:
    if not agent.audit.exists():
        return []
    return [json.loads(x) for x in agent.audit.read_text().splitlines()]


def test_cap_a_simulated_gpu_end_to_end(agent: Agent) -> None:
    gpus = agent.gpus()
    (host, gpu), before = max(gpus.items(), key=lambda kv: kv[1]["power"] / kv[1]["limit"])

    # dry run, no token, on loopback: the plan, nothing changed
    plan = _cap(agent, host, gpu, 1)
    assert plan.returncode == 2 and "watts: 1 W is outside" in plan.stderr  # range shown
    dry = _cap(agent, host, gpu, before["limit"] - 1)
    assert dry.returncode == 0, dry.stderr
    m = re.search(rf"{host} gpu {gpu}: power limit (\S+) W -> (\S+) W \(allowed (\S+)-(\S+) W\) "
                  r"\[dry run, nothing changed\]", dry.stdout)
    assert m, dry.stdout
    assert float(m.group(1)) == before["limit"]
    min_w, max_w = float(m.group(3)), float(m.group(4))
    assert min_w < before["limit"] <= max_w

    # a limit the load must feel: below what the GPU draws now, inside [min, max]
    new = max(min_w, round(before["power"] * 0.7))
    assert new < before["power"], f"{host} gpu {gpu} draws {before['power']} W: too idle to test"

    # no token: refused before asking; a wrong token: refused by the agent
    refused = _cap(agent, host, gpu, new, "--apply")
    assert refused.returncode == 2 and "WATTLENS_AGENT_TOKEN is not set" in refused.stderr
    wrong = _cap(agent, host, gpu, new, "--apply", token="not-the-agents-token-000000")
    assert wrong.returncode != 0 and "401" in wrong.stderr

    # out of range, with the token: NVML's refusal, naming the field and the value
    for bad in (max_w + 100, min_w / 2):
        out = _cap(agent, host, gpu, bad, "--apply", token=TOKEN)
        assert out.returncode == 2
        assert f"watts: {bad:g} W is outside gpu {gpu}'s allowed range {min_w:g}-{max_w:g} W" \
            in out.stderr, out.stderr
    assert agent.gpus()[(host, gpu)]["limit"] == before["limit"]
    assert not [e for e in _audit(agent) if not e["dry_run"]]

    applied = _cap(agent, host, gpu, new, "--apply", token=TOKEN)
    assert applied.returncode == 0, applied.stderr
    assert f"{host} gpu {gpu}: power limit {before['limit']:g} W -> {new:g} W" in applied.stdout
    assert "[APPLIED]" in applied.stdout

    # the next points carry it (the simulation moves in 10 s ticks: the change holds from the next)
    deadline = time.monotonic() + 40
    while (now := agent.gpus()[(host, gpu)])["limit"] != new:
        assert time.monotonic() < deadline, f"limit still {now['limit']} W after 40 s"
        time.sleep(0.3)
    seen_ns = time.time_ns()
    assert now["power"] <= new + 1e-6
    time.sleep(1.5)  # a few more rounds
    back = subprocess.run([sys.executable, "-m", "wattlens", "cap", "revert", "--host", host,
                           "--gpu", str(gpu), "--agent-url", agent.url, "--apply"],
                          env=_env(TOKEN), capture_output=True, text=True, timeout=60)
    revert_ns = time.time_ns()
    assert back.returncode == 0, back.stderr
    assert f"power limit {new:g} W -> {before['limit']:g} W" in back.stdout
    agent.stop()
    state = json.loads((agent.audit.parent / "sim-gpu-state.json").read_text())["caps"]
    assert state[f"{host}/{gpu}"][-1][1] == before["limit"]  # the simulated GPU has it back
    assert agent.proc.returncode == 0

    store = open_store(agent.store)
    try:
        aggs = (("max", "power_limit_w"), ("min", "power_limit_w"), ("max", "power_w"),
                ("count", "power_w"))
        after = store.query(AggregateQuery("gpu", aggs, seen_ns, revert_ns,
                                           where={"host": host, "gpu": str(gpu)}))
    finally:
        store.close()
    got = after[0].values
    assert (got["count_power_w"] or 0) >= 2
    assert got["max_power_limit_w"] == got["min_power_limit_w"] == new
    assert (got["max_power_w"] or 0) <= new + 1e-6

    audit = [e for e in _audit(agent) if not e["dry_run"]]
    assert [(e["action"], e["host"], e["gpu"], e["before_w"], e["after_w"]) for e in audit] == [
        ("apply", host, gpu, before["limit"], new), ("revert", host, gpu, new, before["limit"])]
    log = (agent.audit.parent / "agent.log").read_text()
    assert TOKEN not in log and "APPLIED" in log


def test_unknown_host_and_disabled_agent(tmp_path: Path) -> None:
    agent = Agent(tmp_path)  # no --enable-actuation
    try:
        (host, gpu), cur = next(iter(agent.gpus().items()))
        dry = _cap(agent, host, gpu, cur["limit"])
        assert dry.returncode == 0 and "[dry run, nothing changed]" in dry.stdout, dry.stderr
        off = _cap(agent, host, gpu, cur["limit"], "--apply", token=TOKEN)
        assert off.returncode != 0 and "actuation is not enabled on that agent" in off.stderr
        nowhere = _cap(agent, "node-99", 0, 300)
        assert nowhere.returncode == 2
        assert "host: 'node-99' is not a host of this agent" in nowhere.stderr
        assert "node-00" in nowhere.stderr
        # a caller that names no host (an older client) on an agent with several: told to name one
        req = urllib.request.Request(agent.url + "/v1/cap", data=b'{"gpu": 0, "watts": 300}',
                                     method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400
        assert json.loads(err.value.read())["error"].startswith("host: required; it answers for node-00")
    finally:
        agent.stop()
