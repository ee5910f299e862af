"""The Fleet page from a real InfluxDB (rollup policies, reads at once) shows what it shows from
SQLite over the same points: the same cards, power chart and heatmap, read one query after
another or all at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from analytics.context import Settings
from collector.sources.simulated import NS, SimulatedFleet
from collector.store.influx import InfluxStore
from collector.store.sqlite import SQLiteStore
from dashboard.views.fleet import FleetView, fleet_view

pytestmark = pytest.mark.integration

HOUR = 3600 * NS
END = (time.time_ns() // HOUR - 1) * HOUR


def _shown(view: FleetView) -> tuple[object, ...]:
    kpis = [(k.key, k.value, k.note, None if k.change_pct is None else round(k.change_pct, 6))
            for k in view.kpis]
    series = [(s.name, [None if v is None else round(v, 6) for v in s.values])
              for s in view.power.series]
    heat = [(c.host, c.gpu, c.model, round(c.energy_j, 3),
             None if c.power_w is None else round(c.power_w, 6)) for c in view.heat]
    return view.window, kpis, series, heat


def test_fleet_page_from_influxdb_equals_sqlite(tmp_path: Path, influx_url: str) -> None:
    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=8)
    start = END - 14 * HOUR  # the 6 h view and the 6 h before it, and a day-ago power reading
    points = []
    for k in range(14 * 60):
        points.extend(fleet.points_between(start + k * 60 * NS, start + (k + 1) * 60 * NS))
    lite = SQLiteStore(tmp_path / "db.sqlite")
    lite.init()
    lite.write(points)
    influx = InfluxStore(influx_url)
    influx.init(raw_retention="30d")
    influx.write(points)
    influx.backfill_rollups(start, END)
    a = fleet_view(lite, "6h", "host", Settings())
    b = fleet_view(influx, "6h", "host", Settings())
    influx.concurrent_reads = False  # type: ignore[misc]
    c = fleet_view(influx, "6h", "host", Settings())
    assert len(a.heat) == 8 and a.power.series and a.kpis[1].raw
    assert _shown(b) == _shown(a) == _shown(c)
    influx.close()
