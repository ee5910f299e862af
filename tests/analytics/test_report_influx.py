"""The report from a real InfluxDB (rollup policies, reads at once) equals the report from
SQLite over the same points, and the same report read one query after another."""

from __future__ import annotations

import time

import pytest

from analytics.context import Settings
from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.sources.simulated import NS, SimulatedFleet
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore

pytestmark = pytest.mark.integration

HOUR = 3600 * NS
END = (time.time_ns() // HOUR - 1) * HOUR  # inside the raw policy, rollups settled


def test_influxdb_report_equals_sqlite_and_sequential_reads(tmp_path, influx_url: str) -> None:  # type: ignore[no-untyped-def]
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=3)
    start = END - 6 * HOUR
    points = []
    for k in range(6 * 60):
        points.extend(fleet.points_between(start + k * 60 * NS, start + (k + 1) * 60 * NS))
    lite = SQLiteStore(tmp_path / "db.sqlite")
    lite.init()
    lite.write(points)
    influx = InfluxStore(influx_url)
    influx.init(raw_retention="30d")
    influx.write(points)
    influx.backfill_rollups(start, END)
    assert set(influx.tier_starts("gpu")) == {60, 300, 3600}
    # `--since 5h --until latest`: the edges come from raw and the 1m/5m tiers, the rest hourly.
    window = Window(END - 5 * HOUR + 1, END + 1)
    settings = Settings()
    a = build_report(lite, window, 0.5, settings)
    b = build_report(influx, window, 0.5, settings)
    influx.concurrent_reads = False  # type: ignore[misc]
    c = build_report(influx, window, 0.5, settings)
    assert a.totals["gpu_energy_j"] > 0 and a.totals["jobs"] > 0
    for key, value in a.totals.items():
        if isinstance(value, float):
            assert b.totals[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        else:
            assert b.totals[key] == value, key
    assert [(r.kind, r.target) for r in b.recommendations] == [
        (r.kind, r.target) for r in a.recommendations]
    assert a.recommendations and render(b) == render(a) == render(c)
    influx.close()
