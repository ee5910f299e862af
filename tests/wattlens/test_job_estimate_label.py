"""A `wattlens.job(...)` with no agent, metered by the CPU estimate alone, is labelled estimated everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

JOB = """
import time, wattlens
with wattlens.job("alone", agent_url="{agent}", store_url="{store}") as job:
    assert job.mode == "standalone", job.mode
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        sum(i * i for i in range(20000))
        job.step(samples=8)
"""


def _only_the_cpu_estimate() -> bool:
    from collector.sources.autodetect import autodetect

    found, _lines = autodetect("probe", interval_s=1.0)
    try:
        return [s.name for s in found] == ["cpu-estimate"]
    finally:
        for s in found:
            s.close()


def test_a_standalone_job_on_the_cpu_estimate_is_labelled_estimated(tmp_path: Path) -> None:
    if not _only_the_cpu_estimate():
        pytest.skip("this machine has a real power sensor (RAPL, hwmon or NVML): its jobs are "
                    "measured, not estimated")
    url = f"sqlite:///{tmp_path / 'alone.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WATTLENS_INTERVAL": "0.2"}
    script = JOB.format(agent=f"http://127.0.0.1:{free_port()}", store=url)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    report = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", url,
                             "--format", "json"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    row = next(r for r in data["per"]["job"] if r["name"] == "alone")
    assert row["estimated"] is True and row["energy_j"] > 0
    assert row["estimated_energy_j"] == pytest.approx(row["energy_j"])  # all of it is the model's
    assert row["label"] == "incl. 100% estimated energy"
    assert any("job energy is estimated" in n for n in data["notes"])
    text = subprocess.run([sys.executable, "-m", "wattlens", "report", "--store", url], env=env,
                          capture_output=True, text=True, timeout=120).stdout
    assert any(line.lstrip().startswith("alone") and "estimated" in line for line in text.splitlines())
    # the dashboard says so too, from the same figure
    from analytics import queries
    from analytics.timeutil import Window
    from collector.store.sqlite import SQLiteStore
    from dashboard.views import status

    store = SQLiteStore(tmp_path / "alone.db")
    try:
        now = time.time_ns()
        assert status(store, "24h", now).estimated
        total = queries.estimated_job_energy_j(store, Window(now - 86400 * 10**9, now))
    finally:
        store.close()
    assert total == pytest.approx(sum(r["estimated_energy_j"] for r in data["per"]["job"]))
