"""Property: the Fleet power chart, integrated over time, equals the energy in the store (1 %),
whatever the fleet and its sampling interval (1 s, 10 s, 60 s, or 60 s backfill then live)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics import queries
from analytics.timeutil import Window
from collector.schema import point
from collector.store.sqlite import SQLiteStore
from dashboard import views

NS = 1_000_000_000
END = 1_795_824_000 * NS + 37 * NS  # not on a bucket edge: the last bucket is still filling


def write_gpus(store: SQLiteStore, seed: int, nodes: int, gpus: int,
               segments: list[tuple[int, int, int]]) -> None:
    """GPU points for each (start, end, interval) segment: power walks randomly; each point's
    energy is the trapezoid of power since the series' previous point (as a counter reads it)."""
    rng = random.Random(seed)
    series = [(f"node-{n:02d}", str(g), rng.uniform(60, 700)) for n in range(nodes) for g in range(gpus)]
    last = {(h, g): p for h, g, p in series}
    batch = []
    for start, end, step in segments:
        for t in range(start + step * NS, end + 1, step * NS):
            for host, gpu, _base in series:
                prev = last[(host, gpu)]
                now = min(700.0, max(40.0, prev + rng.gauss(0, 25)))
                last[(host, gpu)] = now
                batch.append(point("gpu", {"host": host, "gpu": gpu, "uuid": f"{host}-{gpu}",
                                           "model": "NVIDIA H100 80GB HBM3", "method": "counter"},
                                   {"power_w": now, "energy_j": (prev + now) / 2 * step}, t))
    store.write(batch)


def chart_energy_j(chart: views.PowerChart) -> float:
    """The chart as drawn: each bucket's power over the time it shows (the whole bucket; the
    bucket still filling only as far as its data reaches)."""
    total = 0.0
    for s in chart.series:
        last = len(s.values) - 1
        for i, (v, covered) in enumerate(zip(s.values, s.covered_s, strict=True)):
            if v is not None:
                total += v * (min(chart.bucket_s, covered) if i == last else chart.bucket_s)
    return total


SAMPLING = st.sampled_from([
    ("1h", [1]), ("1h", [10]), ("1h", [60]), ("6h", [10]), ("6h", [60]),
    ("6h", [60, 10]), ("6h", [60, 1]), ("24h", [60, 10]),  # backfill at 60 s, then live
])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sampling=SAMPLING, nodes=st.integers(1, 3), gpus=st.integers(1, 3), seed=st.integers(0, 999))
def test_power_chart_integrates_to_the_stored_energy(sampling: tuple[str, list[int]], nodes: int,
                                                     gpus: int, seed: int) -> None:
    range_key, intervals = sampling
    span = views.range_seconds(range_key)
    start = END - (span + 1800) * NS
    if len(intervals) == 1:
        segments = [(start, END, intervals[0])]
    else:  # the live part is the newest 40 % of the range, at a seam that is on no bucket edge
        seam = END - int(0.4 * span) * NS - 23 * NS
        seam -= (seam - start) % (intervals[0] * NS)
        segments = [(start, seam, intervals[0]), (seam, END, intervals[1])]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "p.db")
        try:
            write_gpus(store, seed, nodes, gpus, segments)
            window = views.window_for(store, range_key)
            chart = views.fleet_power(store, window, "host")
            assert chart.bucket_s >= max(intervals)  # never narrower than the sampling interval
            stored = sum(queries.energy_by(store, chart.window, "gpu", ()).values())
            totals = [sum(v for s in chart.series if (v := s.values[i]) is not None)
                      for i in range(len(chart.series[0].values))]
            # The chart reads each bucket's power samples; the counter's energy is the trapezoid
            # between them. Over the window the two differ by half a sampling interval of the
            # power's change from the first point to the last: an edge term, 1/120 of the
            # fleet's power swing for 60 s samples over an hour, beyond any fixed 1 %.
            edge_j = max(intervals) / 2 * (max(totals) - min(totals))
            assert chart_energy_j(chart) == pytest.approx(stored, rel=0.01, abs=edge_j)
            # No seam and no right-edge dip: every bucket is within the fleet's power range.
            assert max(totals) <= 700.0 * nodes * gpus * 1.02
            assert min(totals) >= 40.0 * nodes * gpus * 0.98
        finally:
            store.close()


def test_the_filling_bucket_and_the_seam_read_the_true_power(tmp_path: Path) -> None:
    """Constant 500 W per GPU, 60 s backfill then 10 s live: every bucket reads 500 W × GPUs,
    including the one holding the last backfilled point and the first live ones, and the newest."""
    store = SQLiteStore(tmp_path / "c.db")
    start = END - 7217 * NS  # points off the minute, so the seam falls inside a bucket
    seam = start + 100 * 60 * NS  # the last backfilled point; live points follow every 10 s
    batch = []
    for a, b, step in ((start, seam, 60), (seam, END, 10)):
        for t in range(a + step * NS, b + 1, step * NS):
            for g in range(4):
                batch.append(point("gpu", {"host": "n", "gpu": str(g), "uuid": str(g), "model": "m",
                                           "method": "counter"}, {"power_w": 500.0,
                                                                  "energy_j": 500.0 * step}, t))
    store.write(batch)
    for range_key in ("1h", "6h"):
        chart = views.fleet_power(store, views.window_for(store, range_key), "host")
        (s,) = chart.series
        values = [v for v in s.values if v is not None]
        assert values and all(abs(v - 2000.0) < 1e-6 for v in values), (range_key, values)
    # The old rule (energy / bucket width) would read 2000 × 110/60 W in the seam bucket.
    w = Window(seam - 3600 * NS, END)
    energy = queries.energy_buckets(store, w, "gpu", 60, ())
    assert max(e for _k, _t, e in energy) / 60 > 2000.0 * 1.3
    store.close()
