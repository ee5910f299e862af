"""`wattlens collect --autopilot` as a real process: enabling, and limits back after SIGKILL + restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from collector.sources.simulated import SimulatedFleet

TOKEN = "autopilot-test-token-0123456789"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wattlens", "collect", "--source", "sim", "--nodes", "4",
            "--gpus", "4", "--scenario", "autopilot", "--store", f"sqlite:///{tmp}/db.sqlite",
            "--spool-dir", str(tmp / "spool"), "--audit-log", str(tmp / "audit.jsonl"),
            "--ingest-socket", "off", "--prometheus-port", str(_port()),
            "--autopilot-kill-file", str(tmp / "stop"), "--interval", "0.2", *extra]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[BinaryIO]:
    """The agent's stderr, in a file (a pipe nobody reads would fill and stall it)."""
    with (tmp_path / "agent.log").open("wb") as fh:
        yield fh


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTLENS_")}
    return {**env, "WATTLENS_AGENT_TOKEN": TOKEN}


def test_autopilot_needs_actuation_enabled(tmp_path: Path) -> None:
    out = subprocess.run([*_args(tmp_path, "--autopilot", "--duration", "1")], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--autopilot" in out.stderr and "--enable-actuation" in out.stderr
    bad = subprocess.run([*_args(tmp_path, "--autopilot", "--enable-actuation",
                                 "--max-slowdown", "80")], env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "--max-slowdown" in bad.stderr and "80" in bad.stderr


def test_limits_come_back_after_sigkill_and_a_restart(tmp_path: Path, log: BinaryIO) -> None:
    state = tmp_path / "sim-gpu-state.json"
    originals = tmp_path / "autopilot-originals.json"
    proc = subprocess.Popen(_args(tmp_path, "--autopilot", "--enable-actuation", "--autopilot-jobs",
                                  "ap-*", "--autopilot-hold", "0.6", "--autopilot-settle", "0"),
                            env=_env(), stdout=subprocess.DEVNULL,
                            stderr=log)
    try:
        deadline = time.monotonic() + 90
        lowered: dict[str, float] = {}
        while time.monotonic() < deadline and not lowered:
            time.sleep(0.2)
            if state.exists() and originals.exists():
                caps = json.loads(state.read_text())["caps"]
                lowered = {k: v[-1][1] for k, v in caps.items() if v[-1][1] < 700 and v[-1][1] != 400}
        assert lowered, "the autopilot changed no limit in 90 s"
        proc.send_signal(signal.SIGKILL)  # mid-exploration: no chance to restore anything
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    kept = json.loads(originals.read_text())["gpus"]
    assert {f"{e['host']}/{e['gpu']}" for e in kept} >= set(lowered)
    fleet = SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot", cap_state=state)
    assert any(fleet.current_cap(*k.split("/")[:1], int(k.split("/")[1])) < 700 for k in lowered)

    # the next start, even without --autopilot, restores every original limit first
    again = subprocess.run(_args(tmp_path, "--enable-actuation", "--duration", "0.5"), env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "restor" in again.stderr
    fleet = SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot", cap_state=state)
    assert all(fleet.current_cap(g.host, i) == g.cap_w for g in fleet.groups for i in g.gpu_indices)
    assert not originals.exists()
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    restores = [a for a in audit if a["who"] == "autopilot:restore"]
    assert {f"{a['host']}/{a['gpu']}" for a in restores} >= set(lowered)
    assert all(a["detail"]["reason"] == "recover after an unclean stop" for a in restores)


def _wait_lowered(proc: subprocess.Popen[bytes], state: Path, originals: Path) -> dict[str, float]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if state.exists() and originals.exists():
            caps = json.loads(state.read_text())["caps"]
            lowered = {k: v[-1][1] for k, v in caps.items() if v[-1][1] not in (400, 700)}
            if lowered:
                return lowered
    raise AssertionError("the autopilot changed no limit in 90 s")


def _all_original(state: Path) -> bool:
    fleet = SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot", cap_state=state)
    return all(fleet.current_cap(g.host, i) == g.cap_w for g in fleet.groups for i in g.gpu_indices)


def test_sigusr1_restores_everything_and_sigterm_exits_clean(tmp_path: Path,
                                                             log: BinaryIO) -> None:
    state = tmp_path / "sim-gpu-state.json"
    originals = tmp_path / "autopilot-originals.json"
    proc = subprocess.Popen(_args(tmp_path, "--autopilot", "--enable-actuation", "--autopilot-jobs",
                                  "ap-*", "--autopilot-hold", "0.6", "--autopilot-settle", "0"),
                            env=_env(), stdout=subprocess.DEVNULL,
                            stderr=log)
    try:
        _wait_lowered(proc, state, originals)
        proc.send_signal(signal.SIGUSR1)  # the kill switch
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (originals.exists() or not _all_original(state)):
            time.sleep(0.2)
        assert _all_original(state) and not originals.exists()
        time.sleep(2)  # it stays off: nothing lowered again
        assert _all_original(state) and not originals.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert "kill switch" in (tmp_path / "agent.log").read_text()


def test_sigterm_mid_exploration_restores_every_limit(tmp_path: Path) -> None:
    state = tmp_path / "sim-gpu-state.json"
    originals = tmp_path / "autopilot-originals.json"
    proc = subprocess.Popen(_args(tmp_path, "--autopilot", "--enable-actuation", "--autopilot-jobs",
                                  "ap-*", "--autopilot-hold", "0.6", "--autopilot-settle", "0"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_lowered(proc, state, originals)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert _all_original(state) and not originals.exists()
