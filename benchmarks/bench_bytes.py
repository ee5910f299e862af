"""Bytes per GPU-day at 1 Hz in the embedded store, written second by second.

Run from the repository root::

    python benchmarks/bench_bytes.py --gpus 64 --hours 24            # the simulator's 1 Hz
    python benchmarks/bench_bytes.py --gpus 64 --hours 24 --jitter   # every reading moves

The simulated fleet is stepped once a second (``points_between(t, t + 1 s)``):
increments are the exact integral of that second, gauges the state at its end.
The simulator's state changes every 10 s tick, so within a tick its gauges repeat.
Real boards' readings move every second; ``--jitter`` makes every GPU reading move:
power by up to ±2 % (kept to the mW NVML reports), the energy increment with it
(the mJ of that power over the second), and utilisation and memory utilisation by
up to ±2 points. Packed blocks are delta-coded and compressed, so their size follows
how much the readings move: ``--jitter`` is the harder case.

Points go through ``SQLiteStore.write`` one simulated minute a call, and the store's
retention pass (which packs every raw minute older than five minutes) runs every
simulated hour, as the agent's store runs it every minute of the wall clock. At the
end, the file's pages in use (``page_count - freelist_count``) and each table's pages
(``dbstat``) are divided by GPU-days. The reference in the same run: the same points
in a store that never packs (the layout before packing).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_store import END_NS, NS, tier_bytes
from collector.schema import Point
from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore


def jitter(p: Point, rnd: random.Random) -> Point:
    if p.measurement != "gpu":
        return p
    f = dict(p.fields)
    power = f.get("power_w")
    if isinstance(power, float):
        power = round(power * (1 + 0.02 * rnd.uniform(-1, 1)), 3)
        f["power_w"] = power
        f["energy_j"] = power  # one second at that power
    for k in ("util_pct", "mem_util_pct"):
        v = f.get(k)
        if isinstance(v, float):
            f[k] = round(min(100.0, max(0.0, v + rnd.uniform(-2, 2))), 2)
    return replace(p, fields=tuple(f.items()))


def used_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """Pages in use, and bytes per table kind (raw, pk, 1m, 5m, 1h, other)."""
    kinds = tier_bytes(path)  # checkpoints the WAL first
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    used = (conn.execute("PRAGMA page_count").fetchone()[0]
            - conn.execute("PRAGMA freelist_count").fetchone()[0]) * page
    conn.close()
    return used, kinds


def run(args: argparse.Namespace, root: Path) -> None:
    fleet = SimulatedFleet(nodes=max(1, args.gpus // 8), gpus_per_node=min(8, args.gpus), seed=1)
    rnd = random.Random(1)
    seconds = int(args.hours * 3600)
    start = END_NS - seconds * NS
    packed = SQLiteStore(root / "packed.db", purge_every_s=10**9)
    plain = SQLiteStore(root / "plain.db", purge_every_s=10**9)
    points, write_s, pack_s = 0, {"packed": 0.0, "plain": 0.0}, 0.0
    for minute in range(seconds // 60):
        batch: list[Point] = []
        for s in range(60):
            t = start + (minute * 60 + s) * NS
            pts = fleet.points_between(t, t + NS)
            batch += [jitter(p, rnd) for p in pts] if args.jitter else pts
        for name, store in (("packed", packed), ("plain", plain)):
            t0 = time.perf_counter()
            store.write(batch)
            write_s[name] += time.perf_counter() - t0
        points += len(batch)
        if (minute + 1) % 60 == 0:
            t0 = time.perf_counter()
            packed.purge()
            pack_s += time.perf_counter() - t0
            print(f"  {(minute + 1) // 60}/{seconds // 3600} h, {points:,} points",
                  file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    while packed.pack(budget_s=None):  # what the passes left (each stops after 2 s)
        pass
    pack_s += time.perf_counter() - t0
    gpu_days = args.gpus * seconds / 86400
    print(f"\n{points:,} points ({args.gpus} GPUs x {args.hours:g} h at 1 s"
          f"{', jittered' if args.jitter else ''}); write() {points / write_s['packed']:,.0f} "
          f"points/s with packing ({pack_s:.0f} s of it packing), "
          f"{points / write_s['plain']:,.0f} without\n")
    print("| store | MB per GPU-day, whole file | raw rows | packed minutes | rollups | other |")
    print("|---|---|---|---|---|---|")
    result = {}
    for name in ("packed", "plain"):
        used, kinds = used_bytes(root / f"{name}.db")
        result[name] = used
        roll = sum(v for k, v in kinds.items() if k in ("1m", "5m", "1h"))
        other = used - kinds.get("raw", 0) - kinds.get("pk", 0) - roll
        print(f"| {name} | **{used / gpu_days / 1e6:.2f}** | {kinds.get('raw', 0) / gpu_days / 1e6:.2f}"
              f" | {kinds.get('pk', 0) / gpu_days / 1e6:.2f} | {roll / gpu_days / 1e6:.2f} | "
              f"{other / gpu_days / 1e6:.2f} |")
    print(f"\npacked / never packed: {result['packed'] / result['plain']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=64)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--jitter", action="store_true", help="every GPU reading moves each second")
    ap.add_argument("--dir", default=None, help="keep the two files here")
    args = ap.parse_args()
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        run(args, Path(args.dir))
    else:
        with tempfile.TemporaryDirectory() as d:
            run(args, Path(d))


if __name__ == "__main__":
    main()
