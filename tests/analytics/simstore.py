"""Build SQLite stores of the simulated fleet for analytics tests, once per session and parameter set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
