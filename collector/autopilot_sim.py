"""The autopilot on the simulated fleet in simulated time: the loop the benchmark and tests run.

Everything is the agent's real path except the clock: the fleet is sampled round by round at
simulated times, the :class:`collector.autopilot_agent.Autopilot` observes each round and sets
limits through :class:`collector.actuation.PowerCapActuator` on the simulated NVML
(:mod:`collector.sim.nvml`), and the physics obeys from the next simulation tick on. A day runs in
seconds.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.actuation import PowerCapActuator
from collector.autopilot import Settings
from collector.autopilot_agent import Autopilot
from collector.schema import Point
from collector.sim.nvml import SimulatedNvml
from collector.sources.base import Tick
from collector.sources.simulated import NS, SimulatedFleet


def sim_actuators(fleet: SimulatedFleet, audit_path: Path, hosts: Sequence[str] | None = None,
                  token: str | None = None, *, enabled: bool = True) -> dict[str, PowerCapActuator]:
    """One actuator per simulated host, each on that host's simulated NVML (``token``: the
    agent's; a fresh random one for a run in simulated time, where nobody else calls; ``enabled``
    False: dry runs only). Simulated GPUs have no privilege to guard, so no root is needed."""
    token = token or (secrets.token_hex(24) if enabled else None)
    names = sorted({g.host for g in fleet.groups}) if hosts is None else list(hosts)
    return {h: PowerCapActuator(host=h, enabled=enabled, token=token, audit_path=audit_path,
                                nvml=SimulatedNvml(fleet, h), is_root=lambda: True) for h in names}


@dataclass
class SimRun:
    """What a simulated-time run produced: every round's points (the autopilot's included)."""

    points: list[Point] = field(default_factory=list)

    def of(self, measurement: str) -> list[Point]:
        return [p for p in self.points if p.measurement == measurement]


def run_autopilot(fleet: SimulatedFleet, start_ns: int, end_ns: int, interval_s: float, *,
                  state_dir: Path, settings: Settings | None = None, rules: Sequence[str] = (),
                  enabled: bool = True, keep: Callable[[Point], bool] | None = None,
                  on_round: Callable[[int, Autopilot], Any] | None = None) -> tuple[SimRun, Autopilot]:
    """Sample ``fleet`` every ``interval_s`` simulated seconds over [start, end) with the autopilot
    observing (``enabled=False``: the same run without it), then close it (limits restored)."""
    pilot = Autopilot(sim_actuators(fleet, state_dir / "cap-audit.jsonl"),
                      originals=state_dir / "autopilot-originals.json", settings=settings,
                      rules=rules, kill_file=state_dir / "autopilot.stop")
    pilot.recover()
    run = SimRun()
    step = int(interval_s * NS)
    fleet.sample(Tick(start_ns, start_ns / NS))  # prime: the next round covers one interval
    t = start_ns + step
    while t <= end_ns:
        points = fleet.sample(Tick(t, t / NS))
        if enabled:
            pilot(points)
            points = points + pilot.sample(Tick(t, t / NS))
        run.points.extend(p for p in points if keep is None or keep(p))
        if on_round is not None:
            on_round(t, pilot)
        t += step
    pilot.close()
    return run, pilot
