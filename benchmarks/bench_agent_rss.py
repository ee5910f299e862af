"""Agent memory over a long run: RSS of an agent sampling a 1,000-GPU simulated fleet at 1 Hz into InfluxDB.

Run from the repository root: ``python benchmarks/bench_agent_rss.py
[--duration-s 600]``. The agent runs in this process exactly as ``wattlens
collect`` wires it: the simulated fleet (``--nodes`` x ``--gpus``), an
InfluxStore behind the SpoolingSink, and the Prometheus exporter as an
observer (scraped every 5 s, as Prometheus would). InfluxDB is its own
``influxd`` on free loopback ports (tests/fixtures_influx.py).

Every ``--every-s`` seconds it records this process's RSS; after a warm-up
(the first fifth of the run, at least 30 s) it fits a line and reports the
slope in MiB/h: a leak shows as a slope that does not go to zero as the run
gets longer. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from collector.agent import Agent
from collector.exporter import Exporter
from collector.sources.simulated import SimulatedFleet
from collector.spool import SpoolingSink
from collector.store.influx import InfluxStore
from tests.fixtures_influx import influx_query, influxdb_process


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    if len(samples) < 2:
        return float("nan")
    ts = [t for t, _ in samples]
    ys = [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (y - my) for t, y in samples) / den if den else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=600.0, help="run length (default 600)")
    ap.add_argument("--nodes", type=int, default=125, help="simulated nodes (default 125)")
    ap.add_argument("--gpus", type=int, default=8, help="GPUs per node (default 8)")
    ap.add_argument("--interval-s", type=float, default=1.0, help="sampling interval (default 1)")
    ap.add_argument("--every-s", type=float, default=5.0, help="RSS sampling period (default 5)")
    args = ap.parse_args(argv)
    for name in ("duration_s", "nodes", "gpus", "interval_s", "every_s"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)!r}")

    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="wattlens-bench-rss-") as tmp:
        server = influxdb_process(Path(tmp) / "influxdb")
        server.start()
        try:
            influx_query(server, 'CREATE DATABASE "rss"')
            store = InfluxStore(f"influxdb://127.0.0.1:{server.port}/rss")
            spool = SpoolingSink(store, Path(tmp) / "spool", 256 << 20)
            fleet = SimulatedFleet(nodes=args.nodes, gpus_per_node=args.gpus, seed=1,
                                   interval_s=args.interval_s)
            agent = Agent([fleet], spool, args.interval_s)
            exporter = Exporter(agent.stats, spool, port=0)
            agent.observers.append(exporter)
            exporter.start()
            runner = threading.Thread(target=agent.run, name="agent")
            start = time.monotonic()
            runner.start()
            scrape_bytes = 0
            next_scrape = start
            while (now := time.monotonic()) - start < args.duration_s:
                samples.append((now - start, rss_mib()))
                while next_scrape <= now:
                    with urllib.request.urlopen(  # noqa: S310 - our own loopback server
                            exporter.url + "/metrics", timeout=30) as resp:
                        scrape_bytes = len(resp.read())
                    next_scrape += 5.0
                time.sleep(args.every_s)
            agent.stop()
            runner.join(60)
            exporter.stop()
            spool.close()
            assert server.proc is not None
            influx_rss = rss_mib(server.proc.pid)
        finally:
            server.stop()
    warm = max(30.0, args.duration_s / 5)
    steady = [(t, m) for t, m in samples if t >= warm]
    stats = agent.stats
    gpus = args.nodes * args.gpus
    print(f"\nPython {platform.python_version()}; {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{gpus} simulated GPUs at {1 / args.interval_s:g} Hz for {args.duration_s:.0f} s\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| rounds | {stats.rounds:,} ({stats.rounds_missed} missed) |")
    print(f"| points written | {stats.points_written:,} ({stats.points_dropped} dropped, "
          f"{spool.points_spooled} spooled) |")
    print(f"| last round | {stats.last_round_s * 1000:.0f} ms |")
    print(f"| agent RSS at start / after warm-up / end | {samples[0][1]:.0f} / "
          f"{steady[0][1] if steady else float('nan'):.0f} / {samples[-1][1]:.0f} MiB |")
    print(f"| agent RSS max | {max(m for _, m in samples):.0f} MiB |")
    print(f"| agent RSS slope after {warm:.0f} s | {slope_per_hour(steady):+.1f} MiB/h |")
    print(f"| /metrics size | {scrape_bytes / 1024:.0f} KiB |")
    print(f"| influxd RSS at the end | {influx_rss:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
