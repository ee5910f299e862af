"""How long `wattlens report` takes over a big window, as a ratio to merely reading the raw points.

Run from the repository root::

    python benchmarks/bench_report.py                      # 1,000 GPUs x 24 h at 1 s, SQLite
    python benchmarks/bench_report.py --gpus 1000 --hours 1  # a quicker run
    python benchmarks/bench_report.py --backend both         # also InfluxDB (starts its own influxd)

Data: the simulated fleet (``--gpus`` / 8 nodes of 8 GPUs) is stepped once a
minute, and each minute is expanded into ``60 / --interval-s`` rows per series
(increments split evenly, gauges repeated), written straight into the store
(``executemany`` into SQLite's tables; line protocol to InfluxDB) rather than
through Point objects, so generating 86 M rows does not take hours. Every
series an agent writes is there: gpu, cpu, job, facility, carbon.

Measured in the same run, on the same window:

- ``raw``: reading every row of the measurements the report reads
  (``SELECT *`` over the window, iterated to the end; for InfluxDB chunked
  ``SELECT *`` responses, parsed);
- ``report``: ``build_report`` + ``render``, i.e. `wattlens report`.

Prints a Markdown table; docs/analytics.md records the numbers with the machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.schema import INCREMENT_FIELDS, Point, escape_key, escape_measurement
from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
END_NS = 1_795_824_000 * NS  # 2026-11-28T00:00Z
MEASUREMENTS = ("gpu", "cpu", "job", "facility", "carbon")


def minutes(gpus: int, hours: float, end_ns: int) -> Iterator[tuple[int, list[Point]]]:
    """(minute start ns, the simulated fleet's points for that minute)."""
    fleet = SimulatedFleet(nodes=max(1, gpus // 8), gpus_per_node=min(8, gpus), seed=1)
    start = end_ns - int(hours * 3600) * NS
    for m in range(int(hours * 60)):
        t = start + m * 60 * NS
        yield t, fleet.points_between(t, t + 60 * NS)


def fill_sqlite(path: Path, gpus: int, hours: float, interval_s: float) -> int:
    """Through the store's own write path (rollups included), one minute per batch."""
    from benchmarks.bench_store import fill

    n_min = int(hours * 60)
    rows, _ = fill(SQLiteStore(path), gpus, END_NS - n_min * 60 * NS, n_min, interval_s)
    return rows


def read_raw_sqlite(path: Path, window: Window) -> int:
    conn = sqlite3.connect(path)
    n = 0
    for m in MEASUREMENTS:
        cur = conn.execute(f'SELECT * FROM "raw:{m}" d JOIN "series:{m}" s ON s.id = d.sid '
                           f"WHERE d.time_ns >= ? AND d.time_ns < ?",
                           (window.start_ns, window.end_ns))
        while chunk := cur.fetchmany(50_000):
            n += len(chunk)
    conn.close()
    return n


def fill_influx(store: object, gpus: int, hours: float, interval_s: float) -> int:
    n = max(1, round(60 / interval_s))
    step = int(60 * NS / n)
    rows = 0
    write_lines = store.write_lines  # type: ignore[attr-defined]
    for t, pts in minutes(gpus, hours, END_NS):
        lines: list[str] = []
        for p in pts:
            meas_tags = escape_measurement(p.measurement) + "".join(
                f",{escape_key(k)}={escape_key(v)}" for k, v in p.tags)
            values = ",".join(
                f"{k}={(v / n if k in INCREMENT_FIELDS and isinstance(v, float) else v)!r}"
                for k, v in p.fields if not isinstance(v, str))
            for k in range(1, n + 1):
                lines.append(f"{meas_tags} {values} {t + k * step}")
        for i in range(0, len(lines), 20_000):
            write_lines("\n".join(lines[i:i + 20_000]).encode())
        rows += len(lines)
    return rows


def read_raw_influx(port: int, database: str, rp: str | None, window: Window) -> int:
    n = 0
    source = f'"{database}"."{rp}".' if rp else f'"{database}"..'
    for m in MEASUREMENTS:
        q = (f'SELECT * FROM {source}"{m}" WHERE time >= {window.start_ns} AND time < '
             f"{window.end_ns}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/query", body=urllib.parse.urlencode(
            {"q": q, "db": database, "epoch": "ns", "chunked": "true", "chunk_size": "20000"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        buf = b""
        while chunk := resp.read(1 << 20):
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for line in complete:
                if line.strip():
                    for res in json.loads(line).get("results", []):
                        for s in res.get("series", []):
                            n += len(s["values"])
        if buf.strip():
            for res in json.loads(buf).get("results", []):
                for s in res.get("series", []):
                    n += len(s["values"])
        conn.close()
    return n


def time_report(store: object, window: Window, repeat: int) -> tuple[float, int]:
    best = float("inf")
    recs = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = build_report(store, window, 0.5)  # type: ignore[arg-type]
        render(report)
        best = min(best, time.perf_counter() - t0)
        recs = len(report.recommendations)
    return best, recs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval-s", type=float, default=1.0, help="row spacing (1 s = 1 Hz agents)")
    ap.add_argument("--backend", choices=("sqlite", "influx", "both"), default="sqlite")
    ap.add_argument("--repeat", type=int, default=1, help="report runs; the best counts")
    ap.add_argument("--dir", default=None, help="where to put the data (default: a temp dir)")
    args = ap.parse_args()
    window = Window(END_NS - int(args.hours * 3600) * NS + 1, END_NS + 1)
    results: list[tuple[str, int, int, float, float, float, int, float]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        if args.backend in ("sqlite", "both"):
            path = Path(d) / "bench.db"
            t0 = time.perf_counter()
            rows = fill_sqlite(path, args.gpus, args.hours, args.interval_s)
            gen_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            raw_rows = read_raw_sqlite(path, window)
            raw_s = time.perf_counter() - t0
            report_s, recs = time_report(SQLiteStore(path), window, args.repeat)
            results.append(("SQLite", rows, raw_rows, gen_s, raw_s, report_s, recs,
                            os.path.getsize(path) / 1e9))
        if args.backend in ("influx", "both"):
            from collector.store import open_store
            from tests.fixtures_influx import influx_query, influxdb_process

            server = influxdb_process(Path(d) / "influxdb")
            server.start()
            try:
                influx_query(server, 'CREATE DATABASE "bench"')
                store = open_store(f"influxdb://127.0.0.1:{server.port}/bench?timeout_s=600")
                t0 = time.perf_counter()
                rows = fill_influx(store, args.gpus, args.hours, args.interval_s)
                gen_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                raw_rows = read_raw_influx(server.port, "bench", getattr(store, "rp", None), window)
                raw_s = time.perf_counter() - t0
                report_s, recs = time_report(store, window, args.repeat)
                size_b = sum(f.stat().st_size for f in (Path(d) / "influxdb").rglob("*") if f.is_file())
                results.append(("InfluxDB 1.6", rows, raw_rows, gen_s, raw_s, report_s, recs, size_b / 1e9))
                store.close()
            finally:
                server.stop()
    print(f"\n{args.gpus} GPUs x {args.hours:g} h at {args.interval_s:g} s; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}\n")
    print("| store | rows written | rows read raw | write s | raw read s | report s | report / raw | recs | size GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n_rows, n_raw, write_s, read_s, rep_s, n_recs, size_gb in results:
        print(f"| {name} | {n_rows:,} | {n_raw:,} | {write_s:.1f} | {read_s:.2f} | {rep_s:.2f} | "
              f"{rep_s / read_s:.2f} | {n_recs} | {size_gb:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
