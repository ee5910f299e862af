"""Build SQLite stores of the simulated fleet for analytics tests, once per session and parameter set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from analytics.timeutil import Window
from collector.schema import Point
from collector.sources.simulated import SimulatedFleet
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
# 2026-11-28T00:00Z: a fixed end, so the simulated day (and its 17:00 deferrable run) is the same each run.
END_NS = 1_795_824_000 * NS


@dataclass(frozen=True)
class SimStore:
    """A store holding ``hours`` of the default 4 x 8 simulated fleet up to END_NS, and that window."""

    url: str
    path: Path
    window: Window
    scenario: str = "default"


def build(path: Path, hours: float, step_s: int = 60, end_ns: int = END_NS,
          keep: Callable[[Point], bool] | None = None, nodes: int = 4, gpus: int = 8,
          scenario: str = "default") -> None:
    fleet = SimulatedFleet(nodes=nodes, gpus_per_node=gpus, seed=1, scenario=scenario)
    store = SQLiteStore(path)
    start = end_ns - int(hours * 3600) * NS
    batch: list[Point] = []
    t = start
    while t < end_ns:
        nxt = t + step_s * NS
        batch.extend(p for p in fleet.points_between(t, nxt) if keep is None or keep(p))
        t = nxt
        if len(batch) > 50_000:
            store.write(batch)
            batch = []
    store.write(batch)
    store.close()


def sim_store(factory: pytest.TempPathFactory, hours: float, *, name: str = "sim",
              keep: Callable[[Point], bool] | None = None, scenario: str = "default") -> SimStore:
    """The store for ``hours`` (built on first use in this session under the session's base temp dir)."""
    path = factory.getbasetemp() / f"{name}-{scenario}-{hours:g}h.db"
    if not path.exists():
        tmp = path.with_suffix(".building")
        build(tmp, hours, keep=keep, scenario=scenario)
        tmp.rename(path)
        for extra in ("-wal", "-shm"):
            side = Path(str(tmp) + extra)
            if side.exists():
                side.rename(Path(str(path) + extra))
    # The window ends just after the last point (stamped END_NS) and spans `hours`.
    return SimStore(f"sqlite:///{path}", path, Window(END_NS - int(hours * 3600) * NS + 1, END_NS + 1),
                    scenario)


def sqlite_and_influx(tmp_path: Path, influx_url: str, hours: int, seed: int,
                      end_ns: int) -> tuple[SQLiteStore, Any]:
    """``hours`` of a 2 x 4 fleet at 60 s up to ``end_ns`` in a new SQLite file and in a real
    InfluxDB (raw, 1m, 5m and 1h policies, rollups backfilled): two stores, the same points."""
    from collector.store.influx import InfluxStore

    fleet = SimulatedFleet(nodes=2, gpus_per_node=4, seed=seed)
    start = end_ns - hours * 3600 * NS
    points: list[Point] = []
    for k in range(hours * 60):
        points.extend(fleet.points_between(start + k * 60 * NS, start + (k + 1) * 60 * NS))
    lite = SQLiteStore(tmp_path / "db.sqlite")
    lite.init()
    lite.write(points)
    influx = InfluxStore(influx_url)
    influx.init(raw_retention="30d")
    influx.write(points)
    influx.backfill_rollups(start, end_ns)
    assert set(influx.tier_starts("gpu")) == {60, 300, 3600}
    return lite, influx
