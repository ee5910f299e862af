"""The report's bucket follows the window (analytics.context.bucket_for_window), and a day read in
hourly buckets gives the figures the same day gives in 5-minute buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytics.context import Settings, bucket_for_window, load_context
from analytics.timeutil import Window
from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore
from tests.dashboard.conftest import write_fleet

NS = 1_000_000_000
HOUR = 3600 * NS
T0 = 1_795_000_000 * NS // HOUR * HOUR


def test_five_minutes_under_a_day_hourly_from_a_day_on() -> None:
    assert bucket_for_window(Window(T0, T0 + 24 * HOUR - NS)) == 300
    assert bucket_for_window(Window(T0, T0 + 24 * HOUR)) == 3600
    assert bucket_for_window(Window(T0, T0 + 90 * 24 * HOUR)) == 3600


def test_a_day_in_hourly_buckets_has_the_figures_of_five_minute_buckets(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "day.db")
    write_fleet(store, SimulatedFleet(nodes=2, gpus_per_node=2, seed=4), T0, T0 + 25 * HOUR, 60)
    window = Window(T0 + 7 * 60 * NS + 1, T0 + 24 * HOUR + 7 * 60 * NS + 1)  # not hour-aligned
    hourly = load_context(store, window)
    fine = load_context(store, window, Settings(bucket_s=300))
    assert hourly.bucket_s == 3600 and fine.bucket_s == 300
    assert len(fine.gpus) > 10 * len(hourly.gpus) > 0
    a, b = hourly.headline(), fine.headline()
    assert a.gpu_energy_j > 0
    for name in ("gpu_energy_j", "cpu_energy_j", "it_energy_j", "grid_energy_j"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9), name
    # Coverage is points x ΣE/ΣP per bucket: an estimate whose rounding depends on the bucket
    # (seconds in a day), never on which tier answered.
    assert hourly.span_s == pytest.approx(fine.span_s, rel=1e-3)
    assert set(hourly.job_aggs) == set(fine.job_aggs)
    for job, agg in hourly.job_aggs.items():
        assert agg.energy_j == pytest.approx(fine.job_aggs[job].energy_j, rel=1e-9), job
    store.close()
