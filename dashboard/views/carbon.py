"""Carbon page view model: intensity history and forecast, low-carbon windows, emissions by job and node."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon, units
from analytics.context import Context
from analytics.embodied import parse_overrides
from analytics.recommend import Recommendation, recommend_from
from analytics.sci import fleet_sci
from analytics.timeutil import Window
from dashboard.views.common import (
    HOUR_NS,
)


@dataclass
class CarbonView:
    """Grid intensity history and forecast, suggested windows, and emissions by job and node."""

    window: Window
    source: str | None
    message: str | None
    hist: list[tuple[int, float, float | None]]
    forecast: list[tuple[int, float]]
    windows: list[dict[str, Any]]
    shade: list[tuple[int, int, str]]
    by_job: list[tuple[str, float]]
    by_node: list[tuple[str, float]]
    total_g: float | None
    mean_g_per_kwh: float | None
    renewable_pct: float | None
    grid_basis: str
    deferrable: list[str]
    recs: list[Recommendation]
    sci: dict[str, Any] = field(default_factory=dict)  # analytics.sci.fleet_sci, as in the report


UNATTRIBUTED_JOB = "no job (idle GPUs, CPUs, other IT, overhead)"
UNATTRIBUTED_NODE = "no node (other IT, facility overhead)"


def _with_remainder(items: list[tuple[str, float]], total_g: float,
                    label: str) -> list[tuple[str, float]]:
    """``items`` plus, when they fall short of the headline by more than 0.1 %, a row for the
    rest, so that by-job and by-node emissions reconcile with the total on the page."""
    rest = total_g - sum(g for _, g in items)
    return [*items, (label, rest)] if rest > 0.001 * total_g else list(items)


def carbon_view(ctx: Context, lam: float = 0.5) -> CarbonView:
    """Carbon over the window from one analytics Context; emissions include the facility overhead
    (each hour's PUE), like the report's totals."""
    series = ctx.carbon
    now = ctx.now_ns
    hist: list[tuple[int, float, float | None]] = []
    fc: list[tuple[int, float]] = []
    windows: list[dict[str, Any]] = []
    shade: list[tuple[int, int, str]] = []
    if series is not None and series.hourly:
        hist = [(h, v.g_per_kwh, v.renewable_pct) for h, v in sorted(series.hourly.items())
                if ctx.window.start_ns - HOUR_NS < h < ctx.window.end_ns]
    if series is not None:
        try:
            fc = carbon.forecast(series, now, 86400)
        except carbon.CarbonDataMissing:
            fc = []
    if fc:
        mean_fc = sum(g for _, g in fc) / len(fc)
        for hours in (2, 4, 8):
            got = carbon.best_window(fc, hours * 3600, earliest_ns=now)
            if got is None:
                continue
            start, mean = got
            windows.append({"hours": hours, "start_ns": start, "end_ns": start + hours * HOUR_NS,
                            "mean_g_per_kwh": mean,
                            "vs_mean_pct": units.change_pct(mean, mean_fc)})
        w4 = next((w for w in windows if w["hours"] == 4), None)
        if w4 is not None:
            shade.append((w4["start_ns"], w4["end_ns"], "best 4 h"))
    by_job_h: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for b in ctx.jobs:
        by_job_h[b.job][b.time_ns] += b.energy_j * (ctx.pue_at(b.time_ns) or 1.0)
    by_node_h: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for g in ctx.gpus:
        by_node_h[g.host][g.time_ns] += g.energy_j * (ctx.pue_at(g.time_ns) or 1.0)
    for (host, _method), t, e in ctx.cpu:
        by_node_h[host][t] += e * (ctx.pue_at(t) or 1.0)
    by_job = [(name, em.g_co2) for name, hours in by_job_h.items()
              if (em := carbon.emissions(hours, series)).g_co2 is not None]
    by_node = [(name, em.g_co2) for name, hours in by_node_h.items()
               if (em := carbon.emissions(hours, series)).g_co2 is not None]
    total = carbon.emissions(ctx.grid_by_hour, series)
    if total.g_co2 is not None:  # the bars add up to the headline: the rest is named, not hidden
        by_job = _with_remainder(by_job, total.g_co2, UNATTRIBUTED_JOB)
        by_node = _with_remainder(by_node, total.g_co2, UNATTRIBUTED_NODE)
    deferrable = sorted(j.job for j in ctx.job_aggs.values() if j.deferrable)
    recs = [r for r in recommend_from(ctx, lam).items if r.kind == "carbon_window"]
    return CarbonView(ctx.window, series.describe() if series else None,
                      total.message or ctx.carbon_message, hist, fc, windows, shade,
                      by_job, by_node, total.g_co2, total.mean_g_per_kwh, total.renewable_pct,
                      ctx.grid_basis, deferrable, recs,
                      fleet_sci(ctx, total.g_co2, parse_overrides(ctx.settings.embodied), ctx.settings.sci_unit))
