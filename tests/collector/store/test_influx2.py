"""The influxdb2:// write path (influxdb-client's batching WriteApi) against a real VictoriaMetrics."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from collector.schema import Point, point
from collector.sources.simulated import SimulatedFleet
from collector.spool import SpoolingSink
from collector.store.influx import Influx2Store
from tests.fixtures_influx import victoria_metrics_process
from tests.servers import ServerProcess, wait_until

pytestmark = pytest.mark.integration

NS = 1_000_000_000
MS = 1_000_000
HOSTILE = ["x' OR '1'='1", 'a"b', "back\\slash", "空格 name"]


def _export(vm: ServerProcess, match: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                     dict[int, float]]:
    """Series from /api/v1/export: (name, labels) -> {timestamp_ms: value}."""
    # Make rows still buffered in memory searchable now, instead of within seconds.
    urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=30).close()
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
    for line in text.splitlines():
        item = json.loads(line)
        labels = dict(item["metric"])
        name = labels.pop("__name__")
        key = (name, tuple(sorted(labels.items())))
        out.setdefault(key, {}).update(zip(item["timestamps"], item["values"], strict=True))
    return out


def _expected(points: list[Point]) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                           dict[int, float]]:
    """What VictoriaMetrics makes of line protocol: measurement_field series, ms timestamps."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = {}
    for p in points:
        for f, v in p.fields:
            assert isinstance(v, float)
            out.setdefault((f"{p.measurement}_{f}", p.tags), {})[p.time_ns // MS] = v
    return out


def _wait_for(vm: ServerProcess, match: str, want: dict[tuple[str, tuple[tuple[str, str], ...]],
                                                        dict[int, float]]) -> None:
    def arrived() -> bool:
        got = _export(vm, match)
        return all(len(got.get(k, {})) >= len(v) for k, v in want.items())

    wait_until(arrived, 60, "points in VictoriaMetrics")
    got = _export(vm, match)
    for key, series in want.items():
        assert got[key] == pytest.approx(series), key


def _sim(start_ns: int, seconds: int) -> list[Point]:
    fleet = SimulatedFleet(nodes=1, gpus_per_node=4, seed=5)
    pts: list[Point] = []
    for k in range(seconds):
        pts.extend(p for p in fleet.points_between(start_ns + k * NS, start_ns + (k + 1) * NS)
                   if p.measurement in ("gpu", "job"))
    return pts


def test_points_arrive_intact_through_the_batching_write_api(
        victoria_metrics: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTLENS_INFLUX_TOKEN", "not-checked-by-victoria-metrics")
    t0 = (time.time_ns() // NS - 600) * NS
    pts = _sim(t0, 30)
    pts += [point("job", {"job": name, "host": "hostile"},
                  {"samples": float(i + 1), "energy_j": 2.5}, t0 + i * NS)
            for i, name in enumerate(HOSTILE)]
    store = Influx2Store(f"influxdb2://127.0.0.1:{victoria_metrics.port}/wattlens"
                         f"?org=acme&batch_size=500&flush_interval_ms=200")
    for k in range(0, len(pts), 37):  # many small writes, batched by the WriteApi
        store.write(pts[k:k + 37])
    store.close()  # flushes what the WriteApi still holds
    assert store.take_failed() == []
    _wait_for(victoria_metrics, '{__name__=~"gpu_.*|job_.*"}', _expected(pts))


def test_failed_batches_are_spooled_and_replayed(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is down when the agent writes: the WriteApi's failures reach the spool, which
    replays them synchronously once the server is up."""
    monkeypatch.delenv("WATTLENS_INFLUX_TOKEN", raising=False)
    vm = victoria_metrics_process(tmp_path / "vm")  # not started yet: its port refuses
    store = Influx2Store(f"influxdb2://127.0.0.1:{vm.port}/wattlens"
                         f"?org=acme&flush_interval_ms=100&timeout_s=2")
    sink = SpoolingSink(store, tmp_path / "spool", 1 << 20, retry_initial_s=0.2, retry_max_s=0.5)
    t0 = (time.time_ns() // NS - 300) * NS
    pts = [point("gpu", {"host": "h", "gpu": str(g)}, {"power_w": 100.0 + k, "energy_j": 1.0},
                 t0 + k * NS) for k in range(20) for g in range(2)]
    for k in range(0, len(pts), 8):
        sink.write(pts[k:k + 8])
    wait_until(lambda: sink.flush(0.1) is False and sink.depth_points == len(pts), 30,
               "failed batches in the spool")
    assert sink.write_errors >= 1
    vm.start()
    try:
        assert sink.flush(60), "spool did not drain"
        _wait_for(vm, '{__name__=~"gpu_.*"}', _expected(pts))
        assert sink.depth_points == 0 and sink.points_replayed == len(pts)
        assert sink.points_rejected == 0 and sink.points_dropped == 0
    finally:
        sink.close()
        vm.stop()
