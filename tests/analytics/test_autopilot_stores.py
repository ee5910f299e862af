"""analytics.autopilot reads the same timeline and savings from SQLite and from a real InfluxDB."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from analytics.autopilot import summary
from analytics.timeutil import Window
from collector.autopilot_sim import run_autopilot
from collector.sources.simulated import NS, SimulatedFleet
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore

# yesterday's midnight (the scenario's training runs start at midnight), inside InfluxDB's retention
DAY0 = (int(time.time()) // 86400 - 1) * 86400 * NS


def test_sqlite_and_influxdb_agree(tmp_path: Path, influx_url: str) -> None:
    logging.getLogger("wattlens").setLevel(logging.ERROR)
    run, _ = run_autopilot(SimulatedFleet(nodes=4, gpus_per_node=4, scenario="autopilot"), DAY0,
                           DAY0 + 1800 * NS, 10, state_dir=tmp_path, rules=["ap-*"],
                           keep=lambda p: p.measurement == "autopilot")
    window = Window(DAY0, DAY0 + 1800 * NS)
    lite = SQLiteStore(tmp_path / "db.sqlite")
    lite.init()
    lite.write(run.points)
    influx = InfluxStore(influx_url)
    influx.init()
    influx.write(run.points)
    a, b = summary(lite, window), summary(influx, window)
    assert a["timeline"] and len(a["groups"]) == 4
    assert [(s["time_ns"], s["host"], s["reason"], s["cap_w"]) for s in a["timeline"]] == [
        (s["time_ns"], s["host"], s["reason"], s["cap_w"]) for s in b["timeline"]]
    assert a["saved_j"] == pytest.approx(b["saved_j"], rel=1e-9)
    assert a["saved_pct"] == pytest.approx(b["saved_pct"], rel=1e-9)
    assert [s["after"] for s in a["timeline"]] == pytest.approx([s["after"] for s in b["timeline"]])
    lite.close()
    influx.close()
