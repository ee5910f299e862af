"""`wattlens report` read through VictoriaMetrics (PromQL) against InfluxDB 1.6 holding the same data.

Run from the repository root (Debian's ``influxdb`` and ``victoria-metrics``)::

    python benchmarks/bench_promql.py                          # 128 GPUs x 24 h, 60 s
    python benchmarks/bench_promql.py --nodes 125 --interval-s 60   # 1,000 GPUs

Data: the simulated fleet (``--nodes`` x ``--gpus``) stepped every
``--interval-s`` over ``--hours``. The same points go to both engines:

- InfluxDB 1.6: the points themselves (line protocol through the influxdb://
  store), as an agent writes them;
- VictoriaMetrics: what Prometheus would have scraped from each agent's
  /metrics at that interval (wattlens' exporter names, cumulative counters),
  imported with timestamps through ``/api/v1/import/prometheus``.

Then ``build_report`` + ``render`` (i.e. `wattlens report`) over the whole
window runs ``--repeat`` times on each, in the same run; the table gives the
median and the ratio, and the GPU energy each one found (they must agree).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.exporter import COUNTERS, GAUGES, LABELS
from collector.schema import Point
from collector.sources.simulated import SimulatedFleet
from collector.store import open_store
from collector.store.base import Store
from tests.fixtures_influx import influx_query, influxdb_process, victoria_metrics_process

NS = 1_000_000_000


def steps(fleet: SimulatedFleet, start_ns: int, hours: float, interval_s: int
          ) -> Iterator[list[Point]]:
    n = int(hours * 3600 // interval_s) + 2  # one interval either side of the window
    for k in range(n):
        t = start_ns + k * interval_s * NS
        yield fleet.points_between(t, t + interval_s * NS)


class Exposition:
    """Turns points into exposition lines with timestamps, as the agent's exporter shows them."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)

    def lines(self, points: list[Point]) -> list[str]:
        out: list[str] = []
        for p in points:
            names = LABELS.get(p.measurement)
            if names is None:
                continue
            tags, fields = p.tag_map, p.field_map
            labels = tuple(tags.get(n, "") for n in names)
            body = ",".join(f'{n}="{v}"' for n, v in zip(names, labels, strict=True))
            ms = p.time_ns // 1_000_000
            for g in GAUGES.get(p.measurement, ()):
                v = fields.get(g.field)
                if isinstance(v, (int, float)):
                    out.append(f"{g.name}{{{body}}} {float(v) * g.scale!r} {ms}")
            for c in COUNTERS.get(p.measurement, ()):
                v = fields.get(c.field)
                if isinstance(v, (int, float)):
                    self.totals[(c.name, labels)] += float(v)
                    out.append(f"{c.name}{{{body}}} {self.totals[(c.name, labels)]!r} {ms}")
        return out


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - loopback server
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310
        resp.read()


def load(args: argparse.Namespace, influx: Store, vm_url: str, start_ns: int) -> int:
    fleet = SimulatedFleet(nodes=args.nodes, gpus_per_node=args.gpus, seed=1)
    expo = Exposition()
    pending: list[str] = []
    count = 0
    t0 = time.perf_counter()
    total = int(args.hours * 3600 // args.interval_s) + 2
    for i, points in enumerate(steps(fleet, start_ns, args.hours, args.interval_s)):
        influx.write(points)
        pending += expo.lines(points)
        count += len(points)
        if len(pending) > 200_000 or i == total - 1:
            post(f"{vm_url}/api/v1/import/prometheus", ("\n".join(pending) + "\n").encode())
            pending = []
        if i % 60 == 0:
            print(f"  loading: {i}/{total} steps, {count} points, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    post(f"{vm_url}/internal/force_flush", b"")
    return count


class Timed:
    """The store, with the time spent in its reads added up (the rest of a report is analytics)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self.read_s = 0.0
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in ("query", "time_range", "tag_values"):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                out = attr(*args, **kwargs)
            finally:
                self.read_s += time.perf_counter() - t
            if name == "query":
                self.rows += len(out)
            return out
        return timed


def timed_report(store: Store, window: Window, repeat: int) -> tuple[float, float, float, int]:
    times = []
    reads = []
    energy = 0.0
    rows = 0
    for _ in range(repeat):
        timed = Timed(store)
        t = time.perf_counter()
        report = build_report(timed, window)  # type: ignore[arg-type]
        render(report)
        times.append(time.perf_counter() - t)
        reads.append(timed.read_s)
        rows = timed.rows
        print(f"  report: {times[-1]:.2f} s, of which store reads {reads[-1]:.2f} s "
              f"({rows} rows)", file=sys.stderr, flush=True)
        energy = float(report.totals["gpu_energy_j"])
    return statistics.median(times), statistics.median(reads), energy, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval-s", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    end_ns = (time.time_ns() // (3600 * NS) - 1) * 3600 * NS
    start_ns = end_ns - int(args.hours * 3600) * NS
    with tempfile.TemporaryDirectory() as tmp:
        influxd = influxdb_process(Path(tmp) / "influxdb")
        vm = victoria_metrics_process(Path(tmp) / "vm")
        influxd.start()
        vm.start()
        try:
            influx_query(influxd, 'CREATE DATABASE "bench"')
            # A day of 1,000 GPUs grouped per GPU takes InfluxDB more than the default 10 s.
            influx = open_store(f"influxdb://127.0.0.1:{influxd.port}/bench?timeout_s=1800")
            t = time.perf_counter()
            points = load(args, influx, vm.url, start_ns - args.interval_s * NS)
            load_s = time.perf_counter() - t
            time.sleep(2)
            # Points are stamped at the end of their interval. Shifting the window by half an
            # interval makes InfluxDB's [start, end) on stamps and PromQL's (start, end] on
            # counters cover the same intervals exactly.
            half = args.interval_s * NS // 2
            window = Window(start_ns + half, end_ns + half)
            vm_store = open_store(f"prometheus://127.0.0.1:{vm.port}")
            vm_s, vm_r, vm_j, vm_n = timed_report(vm_store, window, args.repeat)
            print(f"  VictoriaMetrics: {vm_s:.2f} s, {vm_j / 3.6e6:.2f} kWh", file=sys.stderr,
                  flush=True)
            in_s, in_r, in_j, in_n = timed_report(influx, window, args.repeat)
        finally:
            vm.stop()
            influxd.stop()
    gpus = args.nodes * args.gpus
    print(f"\n{gpus} simulated GPUs x {args.hours:g} h at {args.interval_s} s "
          f"({points} points, loaded in {load_s:.0f} s); {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} CPUs\n")
    print(f"| engine | `wattlens report` (median of {args.repeat}) | of which store reads "
          "| rows read | GPU energy found |")
    print("|---|---|---|---|---|")
    print(f"| InfluxDB 1.6 (InfluxQL) | {in_s:.2f} s | {in_r:.2f} s | {in_n:,} "
          f"| {in_j / 3.6e6:.2f} kWh |")
    print(f"| VictoriaMetrics (PromQL, prometheus://) | {vm_s:.2f} s | {vm_r:.2f} s | {vm_n:,} "
          f"| {vm_j / 3.6e6:.2f} kWh |")
    print(f"\nratio VictoriaMetrics / InfluxDB: report {vm_s / in_s:.2f}, reads {vm_r / in_r:.2f}; "
          f"energy difference {abs(vm_j - in_j) / in_j:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
