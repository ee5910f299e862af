"""Points/s through the agent's write path into a real InfluxDB, against the ceiling of its own HTTP client.

Run from the repository root: ``python benchmarks/bench_influx_write.py``
(Debian's ``influxdb`` package provides ``influxd``). It starts its own
``influxd`` on free loopback ports (tests/fixtures_influx.py), builds the
simulated fleet's points (``--nodes`` x 8 GPUs at 1 Hz; every pass shifts
time so no point overwrites another), and alternates, ``--rounds`` times:

- ceiling: the same points pre-serialized (before the clock starts) into
  batches of ``--batch`` lines, posted one after another by the store's own
  HTTP client (``InfluxStore.write_lines``);
- agent path: ``Point`` objects in batches of ``--batch`` handed to
  ``InfluxStore.write`` (serialization included), and the same through the
  ``SpoolingSink`` the agent wraps it in (healthy: it passes writes through).

Prints a Markdown table: points/s (median of the rounds) and the ratio to the
ceiling; the target is a ratio of at least 0.9. With two or more CPUs, influxd
is pinned to one CPU and the benchmark to the others (``--no-pin`` to share),
as agent and database are different machines in production.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from collector.schema import Point
from collector.sources.simulated import SimulatedFleet
from collector.spool import SpoolingSink
from collector.store.influx import InfluxStore, LineEncoder
from tests.fixtures_influx import influx_query, influxdb_process

NS = 1_000_000_000


def template(nodes: int, seconds: int, start_ns: int) -> list[Point]:
    fleet = SimulatedFleet(nodes=nodes, gpus_per_node=8, seed=1, interval_s=1.0)
    pts: list[Point] = []
    for k in range(seconds):
        pts.extend(fleet.points_between(start_ns + k * NS, start_ns + (k + 1) * NS))
    return pts


def shifted(base: list[Point], shift_ns: int) -> list[Point]:
    return [Point(p.measurement, p.tags, p.fields, p.time_ns + shift_ns) for p in base]


def batches_of(points: list[Point], n: int) -> list[list[Point]]:
    return [points[i:i + n] for i in range(0, len(points), n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Timing:
    """Wall time and the CPU this process and influxd spent on one measured run."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.rates: list[float] = []
        self.client_cpu_us: list[float] = []
        self.server_cpu_us: list[float] = []

    def run(self, n_points: int, fn: Callable[[], None]) -> None:
        c0, s0 = time.process_time(), cpu_seconds(self.server_pid)
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
        self.rates.append(n_points / wall)
        self.client_cpu_us.append((time.process_time() - c0) / n_points * 1e6)
        self.server_cpu_us.append((cpu_seconds(self.server_pid) - s0) / n_points * 1e6)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64, help="simulated 8-GPU nodes (default 64)")
    ap.add_argument("--points", type=int, default=300_000,
                    help="points per measurement per round (default 300k)")
    ap.add_argument("--batch", type=int, default=5000, help="points per batch (default 5000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin influxd and this process to separate CPUs")
    ap.add_argument("--url-params", default="",
                    help="extra store URL parameters, e.g. 'max_inflight=1&gzip=on'")
    args = ap.parse_args(argv)
    for name in ("nodes", "points", "batch", "rounds"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name} must be positive, got {getattr(args, name)!r}")

    start_ns = (int(time.time()) - 2 * 24 * 3600) * NS
    base = template(args.nodes, 60, start_ns)
    passes = -(-args.points // len(base))
    # Every measurement of every round writes new points: shift whole minutes forward.
    shift = 0

    def next_points() -> list[Point]:
        nonlocal shift
        out: list[Point] = []
        for _ in range(passes):
            out.extend(shifted(base, shift))
            shift += 60 * NS
        return out[:args.points]

    encoder = LineEncoder()
    with tempfile.TemporaryDirectory(prefix="wattlens-bench-write-") as tmp:
        server = influxdb_process(Path(tmp) / "influxdb")
        cpus = sorted(os.sched_getaffinity(0))
        pinned = not args.no_pin and len(cpus) >= 2
        if pinned:
            # Agent and InfluxDB run on different machines in production: give
            # influxd its own CPU so the agent's serializing does not steal its time.
            server.argv = ["taskset", "-c", str(cpus[-1]), *server.argv]
            os.sched_setaffinity(0, cpus[:-1])
        server.start()
        try:
            influx_query(server, 'CREATE DATABASE "bench"')
            pid = server.proc.pid if server.proc is not None else 0
            results = {k: Timing(pid) for k in ("ceiling", "store", "spool")}
            extra = f"?{args.url_params}" if args.url_params else ""
            store = InfluxStore(f"influxdb://127.0.0.1:{server.port}/bench{extra}")
            spool = SpoolingSink(store, Path(tmp) / "spool", 256 << 20)
            store.write(base)  # create the series first: no round pays for that alone
            for r in range(args.rounds):
                # Rotate the order each round: background work influxd does after
                # one measurement (cache snapshots, compactions) must not always
                # land on the same next one.
                names = ["ceiling", "store", "spool"]
                for name in names[r % 3:] + names[:r % 3]:
                    pts = next_points()
                    if name == "ceiling":
                        bodies = ["\n".join(encoder.line(p) for p in b).encode()
                                  for b in batches_of(pts, args.batch)]

                        def ceiling(bodies: list[bytes] = bodies) -> None:
                            for body in bodies:
                                store.write_lines(body)

                        results[name].run(len(pts), ceiling)
                        continue
                    sink: InfluxStore | SpoolingSink = store if name == "store" else spool
                    batches = batches_of(pts, args.batch)

                    def agent_path(batches: list[list[Point]] = batches,
                                   sink: InfluxStore | SpoolingSink = sink) -> None:
                        for batch in batches:
                            sink.write(batch)
                        if isinstance(sink, SpoolingSink):
                            sink.flush()  # the last batch is on the wire: count it in

                    results[name].run(len(pts), agent_path)
            assert spool.depth_points == 0 and spool.points_rejected == 0
            spool.close()
        finally:
            server.stop()
    version = subprocess.run(["influxd", "version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    ceiling_rate = statistics.median(results["ceiling"].rates)
    print(f"\n{version}; Python {platform.python_version()}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {args.nodes * 8} GPUs' series, {args.points:,} points a "
          f"measurement, batches of {args.batch}, median of {args.rounds} rounds in rotating order; "
          f"{'influxd pinned to its own CPU' if pinned else 'not pinned'}\n")
    print("| path | points/s | ratio to ceiling | client CPU µs/point | influxd CPU µs/point |")
    print("|---|---:|---:|---:|---:|")
    rows = (("ceiling: pre-serialized line protocol, same HTTP client", "ceiling"),
            ("agent path: Points -> InfluxStore.write", "store"),
            ("agent path: Points -> SpoolingSink -> InfluxStore", "spool"))
    for label, key in rows:
        t = results[key]
        rate = statistics.median(t.rates)
        print(f"| {label} | {rate:,.0f} | {rate / ceiling_rate:.2f} | "
              f"{statistics.median(t.client_cpu_us):.1f} | "
              f"{statistics.median(t.server_cpu_us):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
