"""Trade-off page view model: frontier classes, the selected class's caps and the job ranking at a weight η."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analytics import units
from analytics.context import Context
from analytics.frontier import Frontier, best_cap, build_frontiers, point_cost
from analytics.per import UNIT_SINGULAR
from dashboard.figures import CapPoint
from dashboard.views.jobs import _p_max, jobs_rows


@dataclass
class Tradeoff:
    """The trade-off page for one η: frontier classes, the selected one's caps, and the ranking."""

    lam: float
    classes: list[tuple[str, str]]  # (key, label), classes with at least two caps first
    selected: str | None
    points: list[CapPoint]
    unit: str
    p_max_w: float
    best_cap_w: float | None
    summary: str
    rows: list[dict[str, Any]]


def tradeoff(ctx: Context, lam: float, selected: str | None) -> Tradeoff:
    """Rank jobs by cost(η) and show the frontier of the selected class with the cap that minimises it."""
    fronts = build_frontiers(ctx.jobs, _p_max(ctx))
    fronts.sort(key=lambda f: (-(len(f.points) >= 2), -sum(p.energy_j for p in f.points), f.key))
    classes = [(f.key, f"{f.label} · {len(f.points)} cap{'s' if len(f.points) != 1 else ''}")
               for f in fronts]
    rows = jobs_rows(ctx, lam)
    f = next((x for x in fronts if x.key == selected), fronts[0] if fronts else None)
    if f is None:
        return Tradeoff(lam, classes, None, [], "samples", 0.0, None,
                        "No job ran at a known power cap with reported work in this range.", rows)
    best = best_cap(f, lam)
    on_front = {p.cap_w for p in f.frontier}
    points = [CapPoint(p.cap_w, p.time_s_per_unit, p.energy_j_per_unit, p.cap_w in on_front,
                       point_cost(f, p, lam), len(p.jobs)) for p in f.points]
    return Tradeoff(lam, classes, f.key, points, f.unit, f.p_max_w,
                    best.cap_w if best else None, _tradeoff_summary(f, lam), rows)


def _tradeoff_summary(f: Frontier, lam: float) -> str:
    best = best_cap(f, lam)
    if best is None:
        return "No cap of this class is on the frontier."
    unit = UNIT_SINGULAR.get(f.unit, f.unit)
    top = max(f.points, key=lambda p: p.cap_w)
    text = f"At η = {lam:.2f} the best cap for {f.workload} on {f.gpu_model} is {best.cap_w:.0f} W"
    if top.cap_w != best.cap_w:
        de = 100 * (best.energy_j_per_unit / top.energy_j_per_unit - 1)
        dt = 100 * (best.time_s_per_unit / top.time_s_per_unit - 1)
        text += (f": {units.signed_pct(de)} energy and {units.signed_pct(dt)} time per {unit} "
                 f"against {top.cap_w:.0f} W")
    else:
        text += ", the highest cap measured: at this η, time matters more than the energy a lower cap saves"
    return text + "."
