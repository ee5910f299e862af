"""The embedded store at fleet scale: write rate, bytes per GPU-day, report and cold dashboard, vs DuckDB.

Run from the repository root::

    python benchmarks/bench_store.py --gpus 1000 --hours 24 --interval-s 10   # report + dashboard
    python benchmarks/bench_store.py --gpus 1000 --hours 1 --interval-s 1 --duckdb  # reference
    python benchmarks/bench_store.py --year --gpus 8 --interval-s 60          # bounded by retention
    python benchmarks/bench_store.py --store /tmp/fleet.db --interval-s 10 --duckdb --influx
        # measure a store built earlier (same --gpus/--hours), DuckDB and InfluxDB 1.6 alongside
    python benchmarks/bench_store.py --store /tmp/fleet.db --interval-s 10 --duckdb \
        --influx-url influxdb://127.0.0.1:8086/bench --repeat 3
        # the same, reading an InfluxDB database filled earlier (same minutes, rollups written)

Data: the simulated fleet (``--gpus`` / 8 nodes of 8 GPUs) stepped once a
minute, each minute expanded into ``60 / --interval-s`` rows per series
(increments split evenly and kept to the mJ an NVML counter reports, gauges
repeated), written through ``SQLiteStore.write`` in one-minute batches: the
real write path, rollups included. Measured in the same run, on the same data:

- ``aggregate``: one GROUP BY per GPU and 5-minute bucket over the last hour
  (mean of the gauges, sum of energy): tiered, then raw rows only (``tiered=False``),
  then DuckDB over the same rows (``--duckdb``: loaded from a CSV of the raw table);
- ``report``: ``build_report`` + ``render`` over the whole window (`wattlens report`);
- ``dashboard``: the Fleet page's cold load (``fleet_view`` + ``status``), no cache;
  both timed as wall clock and as this process's CPU time (the machine is shared);
- ``--duckdb`` also times DuckDB on the whole window's raw rows: per GPU x 5 min and per
  GPU x 1 h (the shapes the dashboard and the report read), the reference of the ratios;
- ``--influx`` writes the same minutes (at ``--influx-interval-s``) into a fresh InfluxDB 1.6
  (raw policy plus the 1m/5m/1h rollups, backfilled) and times the same report and load there;
  ``--influx-url`` times them on a database filled earlier instead; both also time the same
  database read without its node rollups (``gpu_node``), as one created before them reads;
- ``--repeat N``: the report and the cold load N times each, every run printed, the median kept
  (the InfluxDB variants take turns run by run);
- bytes: the store's pages per tier (``dbstat``), per GPU-day of data.

``--year`` writes a simulated year with the default retention (raw 7 d, 1 min
90 d, 1 h kept) and prints the file size every 30 days: it stops growing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.report import build_report, render
from analytics.timeutil import Window
from collector.schema import INCREMENT_FIELDS, Point
from collector.sources.simulated import SimulatedFleet
from collector.store import AggregateQuery, sqlite_pack
from collector.store.sqlite import SQLiteStore
from collector.store.sqlite_layout import decode

NS = 1_000_000_000
END_NS = 1_795_824_000 * NS  # 2026-11-28T00:00Z
GAUGES = ("power_w", "util_pct", "mem_util_pct", "sm_clock_mhz", "mem_clock_mhz", "temp_c",
          "power_limit_w")


def minutes(gpus: int, start_ns: int, n_minutes: int) -> Iterator[tuple[int, list[Point]]]:
    fleet = SimulatedFleet(nodes=max(1, gpus // 8), gpus_per_node=min(8, gpus), seed=1)
    for m in range(n_minutes):
        t = start_ns + m * 60 * NS
        yield t, fleet.points_between(t, t + 60 * NS)


def expand(t: int, pts: list[Point], interval_s: float) -> list[Point]:
    n = max(1, round(60 / interval_s))
    step = 60 * NS // n
    out: list[Point] = []
    for p in pts:
        fields = tuple((k, round(v / n, 3) if k in INCREMENT_FIELDS and isinstance(v, float)
                        else v) for k, v in p.fields)
        out.extend(Point(p.measurement, p.tags, fields, t + k * step) for k in range(1, n + 1))
    return out


def fill(store: Any, gpus: int, start_ns: int, n_minutes: int, interval_s: float,
         every: Callable[[int], None] | None = None, batch_minutes: int = 1) -> tuple[int, float]:
    """Write ``n_minutes`` through ``store.write``, ``batch_minutes`` minutes per call."""
    rows, write_s = 0, 0.0
    batch: list[Point] = []
    for i, (t, pts) in enumerate(minutes(gpus, start_ns, n_minutes)):
        batch.extend(expand(t, pts, interval_s))
        if (i + 1) % batch_minutes and i + 1 < n_minutes:
            continue
        t0 = time.perf_counter()
        store.write(batch)
        write_s += time.perf_counter() - t0
        rows += len(batch)
        batch = []
        if every is not None:
            every(i)
        if (i + 1) % max(60, batch_minutes) == 0:
            print(f"  {i + 1}/{n_minutes} min, {rows:,} points, {rows / write_s:,.0f} points/s "
                  f"in write()", file=sys.stderr, flush=True)
    return rows, write_s


def tier_bytes(path: Path, measurement: str | None = None) -> dict[str, int]:
    """Bytes of pages per tier (raw, 1m, 1h, series, other), of one measurement or of all."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out: dict[str, int] = {}
    for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
        tier, _, m = name.partition(":")
        if measurement is not None and m != measurement:
            continue
        key = tier if m else "other"
        out[key] = out.get(key, 0) + int(size)
    conn.close()
    return out


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    return timed_cpu(fn, repeat)[0]


def timed_cpu(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of ``repeat`` runs (CPU: this process, all threads)."""
    best, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return best, cpu


def aggregate_query(start_ns: int, end_ns: int) -> AggregateQuery:
    return AggregateQuery("gpu", (("sum", "energy_j"), *(("mean", g) for g in GAUGES)),
                          start_ns, end_ns, group_by=("host", "gpu"), bucket_s=300)


def raw_gpu_rows(path: Path, start_ns: int, end_ns: int) -> Iterator[list[tuple[Any, ...]]]:
    """The window's raw gpu rows (time, host, gpu, energy_j, gauges), rows and packed minutes
    alike, an hour at a time, values as written."""
    conn = sqlite3.connect(path)
    cols = [c[1] for c in conn.execute('PRAGMA table_info("raw:gpu")')]
    at = [cols.index(f"f:{f}") for f in ("energy_j", *GAUGES)]
    tags = {sid: (host, gpu) for sid, host, gpu in
            conn.execute('SELECT id, "t:host", "t:gpu" FROM "series:gpu"')}
    for lo in range(start_ns, end_ns, 3600 * NS):
        hi = min(end_ns, lo + 3600 * NS)
        rows = conn.execute('SELECT * FROM "raw:gpu" WHERE time_ns >= ? AND time_ns < ?',
                            (lo, hi)).fetchall() + sqlite_pack.load(conn, "gpu", lo, hi)
        yield [(r[0], *tags[r[1]], *(decode(r[i]) for i in at)) for r in rows]  # type: ignore[index]
    conn.close()


def duckdb_reference(path: Path, start_ns: int, end_ns: int, tmp: Path,
                     buckets_s: tuple[int, ...] = (300,)) -> tuple[list[float], int]:
    """The same aggregate (per GPU and bucket) in DuckDB, over the same raw rows (exported
    from the store): the best of three per bucket width, and the rows it read."""
    import duckdb

    csv_path = tmp / "gpu.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_ns", "host", "gpu", "energy_j", *GAUGES])
        n = 0
        for chunk in raw_gpu_rows(path, start_ns, end_ns):
            w.writerows(chunk)
            n += len(chunk)
    db = duckdb.connect(str(tmp / "ref.duckdb"))
    db.execute(f"CREATE TABLE gpu AS SELECT * FROM read_csv_auto('{csv_path}')")
    means = ", ".join(f"avg({g})" for g in GAUGES)
    best = []
    for bucket_s in buckets_s:
        sql = (f"SELECT host, gpu, time_ns // {bucket_s * NS} AS b, sum(energy_j), {means} "
               f"FROM gpu WHERE time_ns >= {start_ns} AND time_ns < {end_ns} GROUP BY 1, 2, 3")
        best.append(timed(lambda sql=sql: db.execute(sql).fetchall()))  # type: ignore[misc]
    db.close()
    return best, n


def run_fleet(args: argparse.Namespace, root: Path) -> None:
    n_min = int(args.hours * 60)
    start = END_NS - n_min * 60 * NS
    if args.store:
        path = Path(args.store)  # built earlier with the same --gpus, --hours, --interval-s
        SQLiteStore(path).close()  # opening upgrades an older layout (timed apart from reads)
    else:
        path = root / "bench.db"
        store = SQLiteStore(path)
        rows, write_s = fill(store, args.gpus, start, n_min, args.interval_s)
        t0 = time.perf_counter()
        while store.pack(max_minutes=600, budget_s=None):  # what the writer's minutely passes would have done
            pass
        print(f"\nwrote {rows:,} points ({args.gpus} GPUs x {args.hours:g} h at "
              f"{args.interval_s:g} s) in {write_s:.0f} s of write(): {rows / write_s:,.0f} "
              f"points/s; packing the rest took {time.perf_counter() - t0:.0f} s")
    sizes = tier_bytes(path)
    gpu_days = args.gpus * args.hours / 24
    print(f"file {sum(sizes.values()) / 1e6:.0f} MB; per tier MB: "
          + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(sizes.items())))
    for what, part in (("gpu measurement", tier_bytes(path, "gpu")), ("all measurements", sizes)):
        per_day_raw = (part.get("raw", 0) + part.get("pk", 0)) / gpu_days
        per_day_roll = sum(v for k, v in part.items() if k in ("1m", "5m", "1h")) / gpu_days
        print(f"bytes per GPU-day at {args.interval_s:g} s, {what}: raw rows and packed minutes "
              f"{per_day_raw / 1e6:.2f} MB + rollups {per_day_roll / 1e6:.2f} MB "
              "(at 1 Hz, written second by second: benchmarks/bench_bytes.py)")
    hour = AggregateQuery("gpu", (("sum", "energy_j"),), END_NS - 3600 * NS, END_NS)
    q = aggregate_query(hour.start_ns, hour.end_ns)
    tiered = SQLiteStore(path)
    raw_only = SQLiteStore(path, tiered=False)
    t_tier = timed(lambda: tiered.query(q))
    t_raw = timed(lambda: raw_only.query(q), repeat=1)
    assert len(tiered.query(q)) == len(raw_only.query(q))
    print(f"aggregate per GPU x 5 min over the last hour: tiered {t_tier:.3f} s, "
          f"raw rows only {t_raw:.3f} s")
    window = Window(start + 1, END_NS + 1)
    ref = None
    if args.duckdb:
        (t5, t60), n = duckdb_reference(path, window.start_ns, window.end_ns, root, (300, 3600))
        ref = t5
        print(f"DuckDB on the window's {n:,} raw gpu rows: per GPU x 5 min {t5:.3f} s, "
              f"per GPU x 1 h {t60:.3f} s (the reference below)")
    sqlite = [("SQLite", SQLiteStore(path))]
    if args.unpacked:  # the same data as rows only (a file written before packing), in turns
        sqlite.append(("SQLite, rows not packed", SQLiteStore(args.unpacked)))
    measure_reads(sqlite, window, args.hours, ref, args.repeat, not args.default_gc)
    with influx_stores(args, root, start) as influx:  # influxd runs while this block does
        if influx:
            measure_reads(influx, window, args.hours, ref, args.repeat,
                          not args.default_gc)


def measure_reads(stores: list[tuple[str, Any]], window: Window, hours: float,
                  ref: float | None, repeat: int = 1, settle_heap: bool = True) -> None:
    """`wattlens report` over the window and the Fleet page's cold load, wall and CPU: the
    median of ``repeat`` runs, each printed with the machine's load average. Several stores
    take turns run by run (A, B, A, B, ...), so a change in the machine's load falls on all."""
    import os
    import statistics

    from analytics.context import Settings
    from dashboard import views

    if settle_heap:  # as `wattlens report` and the dashboard do once they have imported
        from wattlens.runtime import settle

        settle()
    per = (lambda t: f" = {t / ref:.1f} x DuckDB") if ref else (lambda _t: "")
    end = window.end_ns - 1
    for what, make in ((f"report over {hours:g} h",
                        lambda s: lambda: render(build_report(s, window, 0.5))),
                       ("dashboard cold load (24h Fleet page, no cache)",
                        lambda s: lambda: (views.fleet_view(s, "24h", "host", Settings()),
                                           views.status(s, "24h", end)))):
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in stores}
        for _ in range(repeat):
            for name, store in stores:
                if hasattr(store, "forget_tiers"):  # cold: nothing remembered from the last run
                    store.forget_tiers()
                sqlite_pack.forget_decoded()
                runs[name].append(timed_cpu(make(store)))
                if repeat > 1:
                    print(f"  {name}: {what}: {runs[name][-1][0]:.2f} s wall, "
                          f"{runs[name][-1][1]:.2f} s CPU, load average {os.getloadavg()[0]:.1f}",
                          flush=True)
        for name, got in runs.items():
            wall = statistics.median(w for w, _ in got)
            cpu = statistics.median(c for _, c in got)
            print(f"{name}: {what}: {wall:.2f} s wall{per(wall)}, {cpu:.2f} s CPU"
                  f"{f' (median of {repeat})' if repeat > 1 else ''}", flush=True)


@contextlib.contextmanager
def influx_stores(args: argparse.Namespace, root: Path, start: int
                  ) -> Iterator[list[tuple[str, Any]]]:
    """With ``--influx``: a fresh InfluxDB 1.6 holding the same minutes, rollups backfilled;
    with ``--influx-url``: that database, filled earlier. Each also read as a database without
    the node rollups reads (:func:`without_node_rollups`)."""
    from collector.store.influx_v1 import InfluxStore

    if args.influx_url:
        store = InfluxStore(args.influx_url)
        yield [("InfluxDB 1.6", store),
               ("InfluxDB 1.6, GPU rollups only", without_node_rollups(store, args.influx_url))]
        return
    if not args.influx:
        yield []
        return
    from tests.fixtures_influx import influxdb_process

    influxd = influxdb_process(root / "influxdb")
    influxd.start()
    try:
        url = f"influxdb://127.0.0.1:{influxd.port}/bench?timeout_s=1800"
        store = InfluxStore(url)
        store.init(raw_retention="INF")
        n_min = int(args.hours * 60)
        t0 = time.perf_counter()
        rows, _ = fill(store, args.gpus, start, n_min, args.influx_interval_s, batch_minutes=10)
        store.flush_writes()
        t1 = time.perf_counter()
        store.backfill_rollups(start, END_NS + NS)
        print(f"\nInfluxDB 1.6: wrote {rows:,} points at {args.influx_interval_s:g} s in "
              f"{t1 - t0:.0f} s, rollups backfilled in {time.perf_counter() - t1:.0f} s", flush=True)
        yield [("InfluxDB 1.6", store),
               ("InfluxDB 1.6, GPU rollups only", without_node_rollups(store, url))]
    finally:
        influxd.stop()


def without_node_rollups(store: Any, url: str) -> Any:
    """The same database read as one created before the node rollups (their fallback path);
    checks first that both answer the by-node power chart's read alike."""
    from collector.store.influx_rollups import NODE_ROLLUPS
    from collector.store.influx_v1 import InfluxStore

    class GpuRollupsOnly(InfluxStore):
        def tier_starts(self, measurement: str) -> dict[int, int]:
            return {} if measurement in NODE_ROLLUPS else super().tier_starts(measurement)

    other = GpuRollupsOnly(url)
    q = AggregateQuery("gpu", (("sum", "energy_j"), ("mean", "power_w")),
                       END_NS - 24 * 3600 * NS + 1, END_NS + 1, group_by=("host",), bucket_s=300)
    a, b = store.query(q), other.query(q)
    assert [(r.time_ns, r.tags) for r in a] == [(r.time_ns, r.tags) for r in b]
    worst = max((abs(x.values[k] - y.values[k]) / max(abs(y.values[k]), 1e-9)
                 for x, y in zip(a, b, strict=True) for k in x.values
                 if x.values[k] is not None and y.values[k] is not None), default=0.0)
    print(f"by-node 5-minute chart read: {len(a):,} rows, node rollup vs GPU rollups: largest "
          f"relative difference {worst:.1e}", flush=True)
    assert worst < 1e-9
    return other


def run_year(args: argparse.Namespace, root: Path) -> None:
    path = root / "year.db"
    store = SQLiteStore(path, purge_every_s=0)
    days = int(args.days)
    start = END_NS - days * 86400 * NS

    def every(i: int) -> None:
        if i % (30 * 1440) == 30 * 1440 - 1:
            size = path.stat().st_size + Path(f"{path}-wal").stat().st_size
            print(f"day {(i + 1) // 1440:4d}: file {size / 1e6:7.1f} MB, raw rows "
                  f"{store.count('gpu'):,}, 1m rows {store.count('gpu', '1m'):,}, "
                  f"1h rows {store.count('gpu', '1h'):,}", flush=True)

    rows, _ = fill(store, args.gpus, start, days * 1440, args.interval_s, every,
                   batch_minutes=1440)
    sizes = tier_bytes(path)
    print(f"{days} days of {args.gpus} GPUs at {args.interval_s:g} s: {rows:,} points written, "
          f"file {sum(sizes.values()) / 1e6:.1f} MB; per tier MB: "
          + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(sizes.items())))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--duckdb", action="store_true", help="also time DuckDB on the aggregate")
    ap.add_argument("--year", action="store_true", help="a simulated year, bounded by retention")
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--store", default=None, help="measure this SQLite file instead of building one")
    ap.add_argument("--influx", action="store_true", help="also measure InfluxDB 1.6 (influxd)")
    ap.add_argument("--influx-interval-s", type=float, default=60.0)
    ap.add_argument("--influx-url", default=None,
                    help="measure this InfluxDB 1.x database (filled earlier) instead of --influx")
    ap.add_argument("--unpacked", default=None,
                    help="a file with the same data never packed, timed in turns (reference)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of the report and the cold load")
    ap.add_argument("--default-gc", action="store_true",
                    help="CPython's default collector thresholds, not the ones every wattlens "
                         "command runs with (wattlens/runtime.py): the reference for that tuning")
    args = ap.parse_args()
    if not args.default_gc:
        from wattlens.runtime import tune_gc

        tune_gc()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        if args.year:
            run_year(args, Path(d))
        else:
            run_fleet(args, Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
