"""End to end: `wattlens demo --backfill 2h` serves the dashboard over a store holding every measurement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
