"""GPU health over a fleet: a row per GPU from one read of the whole window, the series of only
the GPUs the charts draw, and the mean of all of them from the store, each checked against the
samples written."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from analytics.health import HOT_C, gpu_health
from analytics.timeutil import Window
from collector.schema import point
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
T0 = 1_795_737_600 * NS
STEP_S = 60
N = 120  # two hours a minute apart
A100 = "NVIDIA A100-SXM4-80GB"


def _temp(i: int, k: int) -> float:
    """GPU i at minute k: 50 + i degrees, 2 more every third minute; GPU 5 once at 91 degrees."""
    return 91.0 if (i, k) == (5, 40) else 50.0 + i + 2.0 * (k % 3 == 0)


def _fleet(path: Path) -> tuple[SQLiteStore, dict[str, list[dict[str, float]]]]:
    store = SQLiteStore(path)
    pts, samples = [], {}
    for i in range(6):
        host, gpu = f"h{i // 2}", str(i % 2)
        rows = samples.setdefault(f"{host}/gpu{gpu}", [])
        for k in range(1, N + 1):
            f = {"temp_c": _temp(i, k), "power_w": 100.0 + 10 * i, "power_limit_w": 400.0,
                 "util_pct": 90.0, "sm_clock_mhz": 1400.0 - 10 * i,
                 "throttle_power": 1.0 if i == 3 and k % 4 == 0 else 0.0, "throttle_thermal": 0.0}
            rows.append(f)
            pts.append(point("gpu", {"host": host, "gpu": gpu, "model": A100, "method": "counter"},
                             {**f, "energy_j": f["power_w"] * STEP_S}, T0 + k * STEP_S * NS))
    store.write(pts)
    return store, samples


def test_rows_from_the_samples_series_of_the_drawn_gpus_and_the_mean_of_all(tmp_path: Path) -> None:
    store, samples = _fleet(tmp_path / "h.db")
    window = Window(T0, T0 + (N + 1) * STEP_S * NS)
    v = gpu_health(store, window, lines=2)
    by_name = {g.name: g for g in v.gpus}
    assert set(by_name) == set(samples)
    for name, rows in samples.items():
        g = by_name[name]
        assert g.temp_c == pytest.approx(statistics.fmean(r["temp_c"] for r in rows))
        assert g.temp_peak_c == max(r["temp_c"] for r in rows)  # the hottest sample, not a mean
        assert g.sm_clock_mhz == pytest.approx(statistics.fmean(r["sm_clock_mhz"] for r in rows))
        assert g.throttle_share == pytest.approx(statistics.fmean(r["throttle_power"] for r in rows))
    # Flagged first: GPU 5 was hot once (91 °C >= 83), GPU 3 throttled a quarter of the time.
    assert by_name["h2/gpu1"].temp_peak_c is not None and by_name["h2/gpu1"].temp_peak_c >= HOT_C
    assert [g.name for g in v.gpus][:2] == ["h1/gpu1", "h2/gpu1"]
    assert all(g.flags for g in v.gpus[:2]) and not any(g.flags for g in v.gpus[2:])
    # Series for the two drawn GPUs only; the mean line of all six from the store, per bucket.
    assert set(v.series) == {"h1/gpu1", "h2/gpu1"}
    assert len(v.mean_times_ns) == len(v.times_ns["h1/gpu1"]) > 1
    width = v.mean_times_ns[1] - v.mean_times_ns[0]
    for t, got in zip(v.mean_times_ns, v.mean_series["temp_c"], strict=True):
        ks = [k for k in range(1, N + 1) if t <= T0 + k * STEP_S * NS < t + width]
        want = statistics.fmean(_temp(i, k) for i in range(6) for k in ks)
        assert got == pytest.approx(want)
    assert v.mean_series["power_pct"][0] == pytest.approx(100 * statistics.fmean(
        100.0 + 10 * i for i in range(6)) / 400.0)
    store.close()


def test_a_fleet_within_the_lines_draws_every_gpu_and_no_mean(tmp_path: Path) -> None:
    store, samples = _fleet(tmp_path / "h.db")
    v = gpu_health(store, Window(T0, T0 + (N + 1) * STEP_S * NS), lines=16)
    assert set(v.series) == set(samples) and v.mean_times_ns == [] and v.mean_series == {}
    store.close()
