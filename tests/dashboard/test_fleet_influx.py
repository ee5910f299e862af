"""The Fleet page from a real InfluxDB (rollup policies, reads at once) shows what it shows from
SQLite over the same points: the same cards, power chart and heatmap, read one query after
another or all at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from analytics.context import Settings
from collector.sources.simulated import NS
from dashboard.views.fleet import FleetView, fleet_view
from tests.analytics.simstore import sqlite_and_influx

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
    # the 6 h view and the 6 h before it, and a day-ago power reading
    lite, influx = sqlite_and_influx(tmp_path, influx_url, 14, 8, END)
    a = fleet_view(lite, "6h", "host", Settings())
    b = fleet_view(influx, "6h", "host", Settings())
    influx.concurrent_reads = False  # type: ignore[misc]
    c = fleet_view(influx, "6h", "host", Settings())
    assert len(a.heat) == 8 and a.power.series and a.kpis[1].raw
    assert _shown(b) == _shown(a) == _shown(c)
    influx.close()
