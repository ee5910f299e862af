"""The report from a real InfluxDB (rollup policies, reads at once) equals the report from
SQLite over the same points, and the same report read one query after another."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from analytics.context import Settings
from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.sources.simulated import NS
from tests.analytics.simstore import sqlite_and_influx

pytestmark = pytest.mark.integration

HOUR = 3600 * NS
END = (time.time_ns() // HOUR - 1) * HOUR  # inside the raw policy, rollups settled


def test_influxdb_report_equals_sqlite_and_sequential_reads(tmp_path: Path, influx_url: str) -> None:
    lite, influx = sqlite_and_influx(tmp_path, influx_url, 6, 3, END)
    # `--since 5h --until latest`: the edges come from raw and the 1m/5m tiers, the rest hourly.
    window = Window(END - 5 * HOUR + 1, END + 1)
    settings = Settings()
    a = build_report(lite, window, 0.5, settings)
    b = build_report(influx, window, 0.5, settings)
    influx.concurrent_reads = False  # type: ignore[misc]
    c = build_report(influx, window, 0.5, settings)
    assert a.totals["gpu_energy_j"] > 0 and a.totals["jobs"] > 0
    # Floats to 1e-9: the two stores add the same numbers in another order (the last bit moves).
    for key, value in a.totals.items():
        got = b.totals[key]
        for k, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            other = got[k] if k is not None else got
            if isinstance(v, float):
                assert other == pytest.approx(v, rel=1e-9, abs=1e-9), (key, k)
            else:
                assert other == v, (key, k)
    assert [(r.kind, r.target) for r in b.recommendations] == [
        (r.kind, r.target) for r in a.recommendations]
    assert a.recommendations and render(b) == render(a) == render(c)
    influx.close()
