"""End to end: `wattlens demo --backfill 2h` serves the dashboard over a store holding every measurement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from collector.store import AggregateQuery, open_store
from tests.servers import free_port


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return int(resp.status), resp.read()


def test_demo_serves_the_dashboard_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "demo", "--backfill", "2h", "--port", str(port),
         "--store", f"sqlite:///{db}", "--interval", "1", "--prometheus-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "dashboard: http://127.0.0.1:" in line:
                break
        assert any(f"http://127.0.0.1:{port}/" in line for line in lines), "".join(lines)
        assert any(f"store sqlite:///{db}" in line for line in lines)  # says where data goes
        assert any("backfilled 2.0 h" in line for line in lines)
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"wattlens" in body
        status, layout = _get(f"http://127.0.0.1:{port}/_dash-layout")
        assert status == 200 and json.loads(layout)
        status, deps = _get(f"http://127.0.0.1:{port}/_dash-dependencies")
        assert status == 200 and len(json.loads(deps)) >= 1
        time.sleep(2.5)  # let the live agent add a few rounds after the backfill
        store = open_store(f"sqlite:///{db}")
        for measurement in ("gpu", "cpu", "job", "facility", "carbon"):
            span = store.time_range(measurement)
            assert span is not None, measurement
            assert span[1] - span[0] >= int(1.9 * 3600 * 1e9), measurement
        span = store.time_range("gpu")
        assert span is not None
        live = store.query(AggregateQuery("gpu", (("count", "power_w"),),
                                          span[1] - 10 * 10**9, span[1] + 1))
        assert (live[0].values["count_power_w"] or 0) >= 32  # live rounds, 32 GPUs each
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped" in out


TOKEN = "demo-test-token-0123456789abcdef"


def _get_with(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _demo_alerts(tmp_path: Path, db: Path, env: dict[str, str]) -> tuple[set[Any], set[Any], list[Any]]:
    """Run the demo over 9 h of history until its alerts have judged it; the alerts firing on
    the Alerts page, those the engine holds, and the page's lanes."""
    from dashboard.views import alert_lanes

    port = free_port()
    # 9 h: longer than a training run's 8 h period, so some at-cap alert has fired and resolved
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "demo", "--backfill", "9h", "--port", str(port),
         "--store", f"sqlite:///{db}", "--prometheus-port", "0", "--auth", "token"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the dashboard serves while the history is judged
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "over the history; evaluated every minute" in line:
                break
        out = "".join(lines)
        assert f"http://127.0.0.1:{port}/" in out, out
        assert "wattlens demo: alerts: 5 rules from" in out
        assert "judging 9.0 h of history in the background" in out
        assert "firing after 108 rounds over the history" in out  # 9 h in 5-minute rounds
        assert f"(spool {tmp_path / 'state' / 'wattlens' / 'demo-spool'})" in out  # as --help says
        assert _get_with(f"http://127.0.0.1:{port}/", None) == 401  # --auth token reached it
        assert _get_with(f"http://127.0.0.1:{port}/", TOKEN) == 200
        store = open_store(f"sqlite:///{db}")
        end = store.time_range("gpu")
        assert end is not None
        lanes = alert_lanes(store, end[1] + 1)
        store.close()
        firing = {(a.rule, a.target) for a in lanes if a.firing}
        state = next((tmp_path / "state" / "wattlens" / "demo-alerts").glob("state-*.json"))
        status = subprocess.run([sys.executable, "-m", "wattlens", "alerts", "status",
                                 "--state-file", str(state)], capture_output=True, text=True,
                                timeout=60, env=env)
        engine_firing = {(row.split()[1], row.split()[2]) for row in status.stdout.splitlines()
                         if row.startswith("firing")}
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + rest
    return firing, engine_firing, lanes


def test_demo_runs_the_default_alert_rules_and_passes_auth_to_the_dashboard(tmp_path: Path) -> None:
    from tests.analytics.alerts.helpers import IDLE_GPUS

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_STATE_HOME": str(tmp_path / "state"),
           "WATTLENS_DASHBOARD_TOKEN": TOKEN}
    db = tmp_path / "demo.db"
    firing, engine_firing, lanes = _demo_alerts(tmp_path, db, env)
    # the two idle A100s fire at the first evaluation of the history, and stay firing
    assert {t for r, t in firing if r == "idle-gpu-waste"} == IDLE_GPUS
    assert any(len(a.spans) >= 2 or not a.firing for a in lanes)  # something also resolved
    assert engine_firing == firing  # the page shows what the engine holds
    # The README's advice: delete the store between runs. The next demo, on a fresh store with
    # the last one's alert state still on disk, shows every firing alert again.
    for leftover in tmp_path.glob("demo.db*"):  # with its -wal and -shm
        leftover.unlink()
    again, engine_again, _ = _demo_alerts(tmp_path, db, env)
    assert engine_again == again and {t for r, t in again if r == "idle-gpu-waste"} == IDLE_GPUS


def test_demo_on_a_busy_port_fails_before_any_work(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        db = tmp_path / "demo.db"
        res = subprocess.run(
            [sys.executable, "-m", "wattlens", "demo", "--port", str(port), "--store",
             f"sqlite:///{db}", "--prometheus-port", "0"],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"wattlens: error: --port: cannot serve on 127.0.0.1:{port}: Address already in use; "
        f"choose another port with --port"]
    assert res.stdout == "" and not db.exists()  # no store opened, nothing backfilled


def test_demo_autopilot_tunes_the_simulated_gpus_and_restores_them_on_stop(tmp_path: Path) -> None:
    """`wattlens demo --autopilot`: no root, token or --enable-actuation (the GPUs are simulated);
    its changes reach the store (the Autopilot page), its files stay apart from a real agent's,
    and every limit is back at its original when the demo stops."""
    from analytics.queries import autopilot_events
    from analytics.timeutil import Window

    db = tmp_path / "demo.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("WATTLENS_AGENT_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattlens", "demo", "--backfill", "0", "--port", str(free_port()),
         "--store", f"sqlite:///{db}", "--interval", "0.5", "--prometheus-port", "0",
         "--rules", "none", "--autopilot", "--autopilot-hold", "2", "--autopilot-settle", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    home = tmp_path / "state" / "wattlens" / "demo-autopilot"
    changes: list[Any] = []
    originals: dict[tuple[str, int], float] = {}
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
        out = "".join(lines)
        assert "autopilot tuning the simulated GPUs of jobs matching '*'" in out, out
        assert str(home / "cap-audit.jsonl") in out
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not changes:
            time.sleep(1)
            store = open_store(f"sqlite:///{db}")
            changes = [e for e in autopilot_events(store, Window(0, time.time_ns()))
                       if e[1].get("event") == "change"]
            store.close()
        assert changes, "the demo's autopilot changed no limit in 90 s"
        kept = json.loads((home / "autopilot-originals.json").read_text())["gpus"]
        originals = {(g["host"], g["gpu"]): g["original_w"] for g in kept}  # what to restore
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "power cap apply" not in rest  # each change is in the audit log, not on the console
    audit = [json.loads(line) for line in (home / "cap-audit.jsonl").read_text().splitlines()]
    last: dict[tuple[str, int], Any] = {}
    for entry in audit:
        if entry["action"] == "apply" and not entry.get("dry_run"):
            last[(entry["host"], entry["gpu"])] = entry
    lowered = [e for e in audit if e["action"] == "apply" and e["after_w"] < e["before_w"]]
    assert lowered and originals and set(originals) <= set(last)
    assert {k: last[k]["after_w"] for k in originals} == originals  # each GPU's last change
    assert not (home / "autopilot-originals.json").exists()  # all restored, nothing left to recover
