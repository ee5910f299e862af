"""Jobs page view model: one row per job (cost over the best cap, PER, trend) and one job's detail."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import queries, units
from analytics.context import Context
from analytics.frontier import Frontier, best_cap, build_frontiers, max_power_by_model
from analytics.levels import per_trends
from analytics.objective import tradeoff_cost
from analytics.per import PER_UNITS, per, primary_unit
from analytics.timeutil import NS, Window, bucket_for
from collector.store.base import Store
from dashboard.views.common import (
    window_for,
)


def _p_max(ctx: Context) -> dict[str, float]:
    return max_power_by_model(ctx.gpus)


def _frontier_of(fronts: list[Frontier], job: str) -> Frontier | None:
    for f in fronts:
        if any(job in p.jobs for p in f.points):
            return f
    return None


@dataclass(frozen=True)
class JobObjective:
    """A job's cost(η) = η·E + (1−η)·P_max·T (T in GPU-seconds) and its excess over the best cap."""

    cost_j: float | None
    excess_j: float | None
    excess_pct: float | None
    best_cap_w: float | None


def job_objective(j: Any, fronts: list[Frontier], p_max: dict[str, float], lam: float) -> JobObjective:
    """cost(η) of one JobAggregate, and how much less it would cost per unit of work at its class's
    best cap for this η (from the measured frontier)."""
    unit = primary_unit(j.work)
    pm = p_max.get(j.gpu_model) or j.power_limit_w
    if unit is None or not pm or j.gpu_seconds <= 0:
        return JobObjective(None, None, None, None)
    cost = tradeoff_cost(j.energy_j, j.gpu_seconds, pm, lam)
    f = _frontier_of(fronts, j.job)
    best = best_cap(f, lam) if f is not None else None
    work = j.work.get(unit, 0.0)
    if f is None or best is None or work <= 0 or f.unit != unit:
        return JobObjective(cost, None, None, None)
    best_cost = tradeoff_cost(best.energy_j_per_unit * work, best.time_s_per_unit * work,
                              f.p_max_w, lam)
    return JobObjective(cost, cost - best_cost, 100 * (cost / best_cost - 1) if best_cost else None,
                        best.cap_w)


def jobs_rows(ctx: Context, lam: float) -> list[dict[str, Any]]:
    """One table row per job in the window, ranked by excess cost(η) over the best cap (then cost)."""
    fronts = build_frontiers(ctx.jobs, _p_max(ctx))
    p_max = _p_max(ctx)
    trends = {t.job: t for t in per_trends(ctx.jobs, ctx.settings.per_references)}
    running_after = ctx.now_ns - 2 * ctx.bucket_s * NS
    rows = []
    for j in ctx.job_aggs.values():
        unit = primary_unit(j.work)
        value = per(j.work.get(unit), j.energy_j) if unit else None
        obj = job_objective(j, fronts, p_max, lam)
        tr = trends.get(j.job)
        row: dict[str, Any] = {
            "id": j.job, "job": j.job, "kind": j.kind, "precision": j.precision,
            "gpu_model": j.gpu_model.replace("NVIDIA ", ""), "gpus": j.gpus,
            "gpus_text": f"{j.gpus} × {short_model(j.gpu_model)}",
            "kind_text": f"{j.kind} · {j.precision}",
            "hosts": ", ".join(j.hosts) if len(j.hosts) <= 2 else f"{len(j.hosts)} hosts",
            "status": "running" if j.last_ns >= running_after else "finished",
            "energy_kwh": round(j.energy_j / units.J_PER_KWH, 3),
            "runtime_h": round(j.active_s / 3600, 2),
            "power_kw": round(j.mean_power_w / 1000, 2) if j.mean_power_w else None,
            "cap_w": round(j.power_limit_w) if j.power_limit_w else None,
            "work": units.count(j.work.get(unit), unit) if unit else units.DASH,
            "per": units.per(value, PER_UNITS[unit]) if unit else units.DASH,
            "per_value": value,
            # Numbers for the table (sorted and filtered as numbers; the unit has its own column).
            "unit": unit or "",
            "work_m": round(j.work.get(unit, 0.0) / 1e6, 3) if unit else None,
            "per_num": round(value, 2) if value is not None else None,
            "per_trend_pct": round(tr.change_pct, 1) + 0.0 if tr and tr.change_pct is not None else None,
            "cost_mj": round(obj.cost_j / 1e6, 2) if obj.cost_j is not None else None,
            "excess_mj": round(obj.excess_j / 1e6, 2) if obj.excess_j is not None else None,
            "excess_pct": round(obj.excess_pct, 1) if obj.excess_pct is not None else None,
            "best_cap_w": round(obj.best_cap_w) if obj.best_cap_w else None,
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["excess_mj"] is None, -(r["excess_mj"] or 0.0),
                             -(r["cost_mj"] or 0.0), r["job"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def short_model(model: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA A100-SXM4-80GB' -> 'A100' (tables; hover has the full name)."""
    name = model.replace("NVIDIA ", "").strip()
    return re.split(r"[ -]", name)[0] if name else model


@dataclass
class JobDetail:
    """One job over the range: its series, its baseline and the numbers for the cards."""

    job: str
    found: bool
    window: Window
    times_ns: list[int] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)
    rate: list[float | None] = field(default_factory=list)
    per_values: list[float | None] = field(default_factory=list)
    unit: str = "samples"
    baseline: float | None = None
    baseline_source: str = ""
    change_pct: float | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    started_before: bool = False


def job_detail(store: Store, range_key: str, job: str) -> JobDetail:
    """Power, throughput and PER of one job in the range, against its baseline (its first hour,
    or a reference set in the settings)."""
    window = window_for(store, range_key)
    bucket = bucket_for(window, 300)
    buckets = queries.job_buckets(store, window, bucket, job=job)
    if not buckets:
        return JobDetail(job, False, window)
    from analytics.levels import aggregate_jobs

    agg = aggregate_jobs(buckets)[job]
    unit = primary_unit(agg.work) or "samples"
    per_t: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for b in buckets:
        slot = per_t[b.time_ns]
        slot[0] += b.energy_j
        slot[1] += b.work.get(unit, 0.0)
        slot[2] = max(slot[2], b.active_s)
    times = sorted(per_t)
    power: list[float | None] = []
    rate: list[float | None] = []
    pers: list[float | None] = []
    for t in times:
        e, w, active = per_t[t]
        power.append(e / active if active > 0 else None)
        rate.append(w / active if active > 0 else None)
        pers.append(per(w, e))
    trend = next(iter(per_trends(buckets)), None)
    value = per(agg.work.get(unit), agg.energy_j)
    facts = [
        ("Energy", units.energy(agg.energy_j)),
        ("Work", units.count(agg.work.get(unit), unit)),
        ("PER", units.per(value, PER_UNITS[unit])),
        ("Baseline PER", units.per(trend.baseline, PER_UNITS[unit]) if trend else units.DASH),
        ("Mean power", units.power(agg.mean_power_w)),
        ("Run time", units.duration(agg.active_s)),
        ("GPUs", f"{agg.gpus} × {agg.gpu_model.replace('NVIDIA ', '')}"),
        ("Power cap", f"{agg.power_limit_w:.0f} W" if agg.power_limit_w else units.DASH),
        ("Precision", agg.precision),
        ("Hosts", ", ".join(agg.hosts)),
    ]
    return JobDetail(job, True, window, times, power, rate, pers, unit,
                     trend.baseline if trend else None, trend.baseline_source if trend else "",
                     trend.change_pct if trend else None, facts,
                     started_before=agg.first_ns <= window.start_ns + bucket * NS)
