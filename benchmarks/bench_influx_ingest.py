"""How many points per second one InfluxDB 1.x node ingests from wattlens, and so how many agents it takes.

Run from the repository root: ``python benchmarks/bench_influx_ingest.py``
(Debian's ``influxdb`` package provides ``influxd``). It

1. starts its own ``influxd`` on free 127.0.0.1 ports with a temp data dir
   (the helpers the integration tests use, tests/fixtures_influx.py);
2. pre-serializes line protocol from the simulated fleet (``--nodes`` x 8 GPUs,
   1 Hz) into batches of ``--batch`` lines, shifting timestamps forward pass by
   pass so that every point is new (no overwrites), all before the clock starts;
3. posts the batches to ``/write`` from ``--writers`` connections for
   ``--duration`` seconds and reports points/s, field values/s, influxd's CPU
   use, and the agents one such node takes at the per-agent rate of
   ``SimulatedFleet(nodes=1, gpus_per_node=8)``.

Prints a Markdown table. The numbers are this machine's: docs/scaling.md
records them with the machine they came from.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from collector.schema import to_line
from collector.sources.simulated import SimulatedFleet
from tests.fixtures_influx import influx_query, influxdb_process

NS = 1_000_000_000


def agent_points_per_s(gpus: int = 8, seconds: int = 600) -> tuple[float, float]:
    """(points/s, field values/s) one agent on a ``gpus``-GPU node writes at 1 Hz, counted from the sim."""
    fleet = SimulatedFleet(nodes=1, gpus_per_node=gpus, seed=1, interval_s=1.0)
    start = 1_750_000_000 * NS
    points = fields = 0
    for k in range(seconds):
        batch = fleet.points_between(start + k * NS, start + (k + 1) * NS)
        points += len(batch)
        fields += sum(len(p.fields) for p in batch)
    return points / seconds, fields / seconds


@dataclass
class Workload:
    batches: list[bytes]
    lines: int
    fields: int
    series: int


def build_workload(nodes: int, batch_lines: int, max_points: int, start_ns: int) -> Workload:
    """Pre-serialized batches: a 60 s template from the sim, repeated with timestamps shifted by 60 s a pass."""
    fleet = SimulatedFleet(nodes=nodes, gpus_per_node=8, seed=1, interval_s=1.0)
    template: list[tuple[str, int, int]] = []  # (line without time, time offset, fields)
    series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for k in range(60):
        for p in fleet.points_between(start_ns + k * NS, start_ns + (k + 1) * NS):
            head = to_line(p).rsplit(" ", 1)[0]
            template.append((head, p.time_ns - start_ns, len(p.fields)))
            series.add((p.measurement, p.tags))
    batches: list[bytes] = []
    current: list[str] = []
    lines = fields = 0
    shift = 0
    while lines < max_points:
        for head, offset, nfields in template:
            current.append(f"{head} {start_ns + shift + offset}")
            fields += nfields
            lines += 1
            if len(current) == batch_lines:
                batches.append("\n".join(current).encode())
                current = []
            if lines >= max_points:
                break
        shift += 60 * NS
    if current:
        batches.append("\n".join(current).encode())
    return Workload(batches, lines, fields, len(series))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Result:
    lines: int
    fields: int
    batches: int
    elapsed_s: float
    errors: list[str]


def post_all(port: int, db: str, batches: list[bytes], writers: int, duration_s: float,
             lines_per_batch: list[int], fields_per_batch: list[int]) -> Result:
    """POST batches from ``writers`` threads until they run out or ``duration_s`` passes."""
    path = "/write?" + urllib.parse.urlencode({"db": db, "precision": "ns"})
    lock = threading.Lock()
    next_index = [0]
    done = {"lines": 0, "fields": 0, "batches": 0}
    errors: list[str] = []
    deadline = time.monotonic() + duration_s

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next_index[0]
                    if i >= len(batches) or errors:
                        return
                    next_index[0] += 1
                conn.request("POST", path, body=batches[i],
                             headers={"Content-Type": "text/plain; charset=utf-8"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 204:
                    with lock:
                        errors.append(f"HTTP {resp.status}: {body[:300].decode(errors='replace')}")
                    return
                with lock:
                    done["lines"] += lines_per_batch[i]
                    done["fields"] += fields_per_batch[i]
                    done["batches"] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, name=f"writer-{n}") for n in range(writers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Result(done["lines"], done["fields"], done["batches"], time.monotonic() - started, errors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of posting (default 30)")
    ap.add_argument("--batch", type=int, default=5000, help="lines per POST (default 5000)")
    ap.add_argument("--writers", type=int, default=4, help="concurrent HTTP connections (default 4)")
    ap.add_argument("--nodes", type=int, default=64,
                    help="simulated nodes of 8 GPUs whose series the workload has (default 64)")
    ap.add_argument("--max-points", type=int, default=8_000_000,
                    help="points to pre-serialize; the run stops early if they run out (default 8M)")
    args = ap.parse_args(argv)
    for name in ("duration", "batch", "writers", "nodes", "max_points"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)!r}")

    per_agent_points, per_agent_fields = agent_points_per_s()
    t0 = time.perf_counter()
    start_ns = (int(time.time()) - 7 * 24 * 3600) * NS  # a week ago: inside the default shard/retention
    work = build_workload(args.nodes, args.batch, args.max_points, start_ns)
    build_s = time.perf_counter() - t0
    lines_per_batch = [b.count(b"\n") + 1 for b in work.batches]
    fields_per_batch = [round(n * work.fields / work.lines) for n in lines_per_batch]
    print(f"pre-serialized {work.lines:,} points in {len(work.batches):,} batches "
          f"({sum(map(len, work.batches)) / 2**20:.0f} MiB) in {build_s:.1f} s", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="wattlens-bench-influx-") as tmp:
        server = influxdb_process(Path(tmp) / "influxdb")
        server.start()
        try:
            assert server.proc is not None
            db = "bench"
            influx_query(server, f'CREATE DATABASE "{db}"')
            load0 = os.getloadavg()[0]
            cpu0 = cpu_seconds(server.proc.pid)
            result = post_all(server.port, db, work.batches, args.writers, args.duration,
                              lines_per_batch, fields_per_batch)
            cpu_s = cpu_seconds(server.proc.pid) - cpu0
            rss = rss_mib(server.proc.pid)
            load1 = os.getloadavg()[0]
            cardinality = influx_query(server, "SHOW SERIES CARDINALITY", db).decode()
        finally:
            server.stop()
    if result.errors:
        print(f"error: InfluxDB refused a batch: {result.errors[0]}", file=sys.stderr)
        return 1
    points_s = result.lines / result.elapsed_s
    fields_s = result.fields / result.elapsed_s
    exhausted = result.batches == len(work.batches)
    version = subprocess.run(["influxd", "version"], capture_output=True, text=True).stdout.strip()
    print(f"\n{version}; {platform.machine()}, {os.cpu_count()} CPUs; batches of {args.batch} lines, "
          f"{args.writers} writers, {work.series} series ({args.nodes} nodes x 8 GPUs)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| posted | {result.lines:,} points, {result.batches:,} batches in {result.elapsed_s:.1f} s"
          f"{' (ran out of pre-serialized points: raise --max-points)' if exhausted else ''} |")
    print(f"| ingest rate | {points_s:,.0f} points/s ({fields_s:,.0f} field values/s) |")
    print(f"| influxd CPU | {cpu_s / result.elapsed_s:.2f} cores; RSS {rss:,.0f} MiB at the end |")
    print(f"| machine load (1-min average) | {load0:.1f} before, {load1:.1f} after: other work shares "
          f"these CPUs when it is above {os.cpu_count()} |")
    print(f"| requests | {result.batches / result.elapsed_s:,.1f} POST/s of {args.batch} lines |")
    print(f"| one agent (8 GPUs, 1 Hz) | {per_agent_points:.1f} points/s ({per_agent_fields:.0f} field values/s) |")
    print(f"| agents per node at this rate | {points_s / per_agent_points:,.0f} |")
    print(f"| agents per node at 50 % headroom | {points_s / per_agent_points / 2:,.0f} |")
    print(f"\n{cardinality.strip()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
