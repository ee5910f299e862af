"""Ground truth of a simulated window: the planted inefficiencies and their true savings, from the physics.

The recommender sees only the stored measurements; this module sees the fleet's layout and the
physics, and says what a perfect recommender would report for the same window (``wattlens simulate
truth``; ``benchmarks/bench_recommendations.py`` scores against it). Savings are per day of IT
energy (kWh; the high-PUE item: facility energy) and, for start windows, kg CO2.

The evidence rule is the operator's: a power cap counts as too high only against another cap the
same class (GPU model, kind, workload, precision) runs at in this fleet, compared at the operator's
λ with cost(λ) = λ·E + (1−λ)·P_max·T per unit of work (P_max: the model's highest limit in the fleet).
Utilisation noise is left out (it averages out); everything else follows the source tick by tick.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from collector.sim.fleet import Group, job_id
from collector.sim.models import GPU_SPECS
from collector.sim.physics import KINDS, locked_clock_point
from collector.sources.simulated import (
    NS,
    SIM_TICK_S,
    SimulatedFleet,
    carbon_intensity,
    job_util,
    rate_at,
)

J_PER_KWH = 3.6e6
FP8_MODELS = ("L4", "L40S", "H100", "H200", "MI300X")
TENSOR_MODELS = ("V100", "A100", "L4", "L40S", "H100", "H200", "MI300X")
# The policy thresholds are analytics.context.Settings' defaults (collector may not import analytics).
IDLE_MIN_S = 900.0
LOW_UTIL_PCT, LOW_UTIL_PEAK_PCT, TARGET_UTIL_PCT = 25.0, 50.0, 70.0
CAP_MIN_GAIN_PCT, CAP_FREE_FRAC, CLOCK_LOCK_MIN_UTIL_PCT, CLOCK_LOCK_AT = 2.0, 0.85, 20.0, 0.8
PUE_THRESHOLD, PUE_TARGET = 1.5, 1.2


@dataclass
class TruthItem:
    """One planted inefficiency: what a recommendation should name, and what fixing it truly saves."""

    kind: str
    what: str
    savings_kwh_per_day: float
    gpus: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    site: str | None = None
    lam: float | None = None  # power caps: the λ this holds at
    savings_kg_co2_per_day: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Acc:
    energy_j: float = 0.0
    work: float = 0.0
    gpu_s: float = 0.0
    peak_w: float = 0.0
    util_s: float = 0.0
    util_peak: float = 0.0
    jobs: set[str] = field(default_factory=set)


def _ticks(start_ns: int, end_ns: int) -> range:
    return range(start_ns // (SIM_TICK_S * NS), (end_ns - 1) // (SIM_TICK_S * NS) + 1)


def _run_group(grp: Group, ticks: range, cap_w: float | None = None, precision: str | None = None,
               clock: float | None = None) -> _Acc:
    """Energy, work and time of one group over the ticks, at its cap and clock lock, or an
    alternative setting (a cap, a precision, or SM clocks locked at share ``clock``)."""
    spec = GPU_SPECS[grp.model]
    n = len(grp.gpu_indices)
    acc = _Acc()
    for k in ticks:
        t_s = k * SIM_TICK_S
        active = grp.active(t_s)
        if active is None:
            continue
        run, rk = active
        job = run.job if precision is None else replace(run.job, precision=precision)
        util = job_util(job, t_s, 0.0)
        if clock is not None:
            op = locked_clock_point(spec, KINDS[job.work], util, clock)
            base = rate_at(spec, job, util, grp.cap_w)
            power, rate = op.power_w, base[2] * op.speed
        else:
            power, _clk, rate = rate_at(spec, job, util, grp.cap_w if cap_w is None else cap_w,
                                        grp.clock_lock)
        acc.energy_j += power * SIM_TICK_S * n
        acc.work += rate * SIM_TICK_S * n
        acc.gpu_s += SIM_TICK_S * n
        acc.peak_w = max(acc.peak_w, power)
        acc.util_s += 100 * util * SIM_TICK_S * n
        acc.util_peak = max(acc.util_peak, 100 * util)
        acc.jobs.add(job_id(run, rk))
    return acc


def _classes(fleet: SimulatedFleet) -> dict[tuple[str, str, str, str], list[Group]]:
    """(model, kind, workload, precision) -> one single-run group per (group, run) of that class."""
    out: dict[tuple[str, str, str, str], list[Group]] = defaultdict(list)
    for grp in fleet.groups:
        for run in grp.runs:
            j = run.job
            out[(grp.model, j.kind, j.workload, j.precision)].append(
                replace(grp, runs=(run,)))
    return out


def _per_day(joules: float, span_s: float) -> float:
    return joules / J_PER_KWH * 86400 / span_s


def power_caps(fleet: SimulatedFleet, ticks: range, span_s: float, lams: Sequence[float]) -> list[TruthItem]:
    """Per class with two or more caps: the caps above the one minimising cost(λ), per λ."""
    classes = _classes(fleet)
    p_max: dict[str, float] = defaultdict(float)
    for grp in fleet.groups:
        p_max[grp.model] = max(p_max[grp.model], grp.cap_w)
    out = []
    for key, groups in sorted(classes.items()):
        caps = sorted({g.cap_w for g in groups})
        if len(caps) < 2:
            continue
        at = {(id(g), c): _run_group(g, ticks, cap_w=c) for g in groups for c in caps}
        per_cap = {}
        for c in caps:
            e = sum(at[(id(g), c)].energy_j for g in groups)
            w = sum(at[(id(g), c)].work for g in groups)
            t = sum(at[(id(g), c)].gpu_s for g in groups)
            per_cap[c] = (e / w, t / w)
        for lam in lams:
            cost = {c: lam * e + (1 - lam) * p_max[key[0]] * t for c, (e, t) in per_cap.items()}
            best = min(caps, key=lambda c: (cost[c], per_cap[c][0], c))
            bad = [g for g in groups if g.cap_w > best and per_cap[g.cap_w][0] > per_cap[best][0]
                   and cost[g.cap_w] > cost[best] * (1 + CAP_MIN_GAIN_PCT / 100)]
            if not bad:
                continue
            saved = 0.0
            for g in bad:
                now, there = at[(id(g), g.cap_w)], at[(id(g), best)]
                saved += now.energy_j - now.work * there.energy_j / there.work
            out.append(TruthItem(
                "power_cap", f"cap {key[2]} ({key[3]}) on {key[0]} at {best:.0f} W", _per_day(saved, span_s),
                gpus=sorted(x for g in bad for x in g.gpus),
                jobs=sorted(j for g in bad for j in at[(id(g), g.cap_w)].jobs), lam=lam))
    return out


def clock_locks(fleet: SimulatedFleet, ticks: range, span_s: float) -> list[TruthItem]:
    """Classes whose caps never bind (peak below 85 % of every cap), busy enough: lock the SM clocks
    of the groups that run at full clocks, at the clock the class's locked groups run at (where the
    fleet has locked some: the recommender measures that lock) else at 80 %."""
    classes = _classes(fleet)
    out = []
    for key, groups in sorted(classes.items()):
        accs = [(g, _run_group(g, ticks)) for g in groups]
        gpu_s = sum(a.gpu_s for _g, a in accs)
        if gpu_s <= 0 or any(a.peak_w >= CAP_FREE_FRAC * g.cap_w for g, a in accs):
            continue
        util = sum(a.util_s for _g, a in accs) / gpu_s
        locks = sorted({g.clock_lock for g, a in accs if g.clock_lock is not None and a.gpu_s > 0})
        accs = [(g, a) for g, a in accs if g.clock_lock is None]  # locked already: healthy
        if util < max(CLOCK_LOCK_MIN_UTIL_PCT, LOW_UTIL_PCT) or not any(a.gpu_s > 0 for _g, a in accs):
            continue
        at = locks[0] if locks else CLOCK_LOCK_AT
        saved = 0.0
        for g, a in accs:
            if a.gpu_s <= 0:
                continue
            locked = _run_group(g, ticks, clock=at)
            saved += a.energy_j - a.work * locked.energy_j / locked.work
        out.append(TruthItem("clock_lock", f"lock SM clocks of {key[2]} on {key[0]} at "
                             f"{at:.0%}", _per_day(saved, span_s),
                             gpus=sorted(x for g, a in accs if a.gpu_s > 0 for x in g.gpus),
                             jobs=sorted(j for _g, a in accs for j in a.jobs)))
    return out


def _precision_items(fleet: SimulatedFleet, ticks: range, span_s: float) -> list[TruthItem]:
    out = []
    by_class: dict[tuple[str, str, str, str], list[Group]] = defaultdict(list)
    for grp in fleet.groups:
        for run in grp.runs:
            j = run.job
            if j.precision in ("fp32", "tf32") and any(m in grp.model for m in TENSOR_MODELS):
                by_class[("mixed_precision", grp.model, j.workload, "bf16")].append(grp)
            elif j.kind in ("infer", "batch") and j.precision in ("bf16", "fp16"):
                to = "fp8" if any(m in grp.model for m in FP8_MODELS) else "int8"
                by_class[("low_precision", grp.model, j.workload, to)].append(grp)
    for (kind, model, workload, to), groups in sorted(by_class.items()):
        saved = 0.0
        jobs: set[str] = set()
        for grp in set(groups):
            for run in grp.runs:
                if (kind == "mixed_precision") != (run.job.precision in ("fp32", "tf32")):
                    continue
                if run.job.workload != workload:
                    continue
                sub = replace(grp, runs=(run,), role="")
                now, then = _run_group(sub, ticks), _run_group(sub, ticks, precision=to)
                if now.work > 0 and then.work > 0:
                    saved += now.energy_j * (1 - (then.energy_j / then.work) / (now.energy_j / now.work))
                    jobs |= now.jobs
        out.append(TruthItem(kind, f"{workload} on {model} in {to}", _per_day(saved, span_s),
                             jobs=sorted(jobs)))
    return out


def _idle_and_util(fleet: SimulatedFleet, ticks: range, span_s: float) -> list[TruthItem]:
    out = []
    idle: dict[str, list[Group]] = defaultdict(list)
    for grp in fleet.groups:
        spec = GPU_SPECS[grp.model]
        if not grp.runs and span_s >= IDLE_MIN_S:
            idle[grp.host].append(grp)
            continue
        if len(grp.runs) != 1:
            continue
        acc = _run_group(grp, ticks)
        if acc.gpu_s <= 0:
            continue
        util = acc.util_s / acc.gpu_s
        n = len(grp.gpu_indices)
        if util < LOW_UTIL_PCT and acc.util_peak < LOW_UTIL_PEAK_PCT and n >= 2:
            freed = n - max(1, math.ceil(n * util / TARGET_UTIL_PCT))
            if freed >= 1:
                out.append(TruthItem("consolidate", f"{grp.runs[0].job.name}: free {freed} GPUs",
                                     _per_day(freed * spec.idle_w * acc.gpu_s / n, span_s),
                                     gpus=list(grp.gpus), jobs=sorted(acc.jobs)))
    for host, groups in sorted(idle.items()):
        gpus = sorted((x for g in groups for x in g.gpus), key=lambda s: (len(s), s))
        joules = sum(GPU_SPECS[g.model].idle_w * len(g.gpu_indices) * span_s for g in groups)
        out.append(TruthItem("idle_gpu", f"{host}: release {len(gpus)} idle GPUs",
                             _per_day(joules, span_s), gpus=gpus))
    return out


def _hourly_carbon(start_s: float, hours: int, seed: int) -> list[tuple[float, float]]:
    first = start_s - start_s % 3600
    return [(first + 3600 * k, carbon_intensity(first + 3600 * k, seed)[0]) for k in range(hours)]


def _mean(hourly: list[tuple[float, float]], start_s: float, duration_s: float) -> float:
    total = 0.0
    for h, g in hourly:
        total += g * max(0.0, min(start_s + duration_s, h + 3600) - max(start_s, h))
    return total / duration_s


def carbon_windows(fleet: SimulatedFleet, ticks: range, span_s: float, end_s: float) -> list[TruthItem]:
    """Deferrable runs: kg CO2 saved per day by starting in the day's lowest-intensity window."""
    out = []
    for grp in fleet.groups:
        for run in grp.runs:
            if not run.job.deferrable:
                continue
            sub = replace(grp, runs=(run,), role="")
            acc = _run_group(sub, ticks)
            if acc.energy_j <= 0:
                continue
            runs_in_window = len(acc.jobs)
            energy_run = acc.energy_j / runs_in_window
            hourly = _hourly_carbon(end_s, 49, fleet.seed)
            usual = end_s - end_s % 86400 + run.offset_s % 86400
            usual += 86400 if usual < end_s else 0
            best = min(_mean(hourly, h, run.duration_s) for h, _ in hourly
                       if h >= end_s - end_s % 3600 and h + run.duration_s <= end_s + 86400)
            pue = fleet.fleet.site_of[grp.host].pue_mean
            kg = energy_run * pue / J_PER_KWH * (_mean(hourly, usual, run.duration_s) - best) / 1000
            out.append(TruthItem("carbon_window", f"start {run.job.workload} at its lowest-carbon "
                                 "window", 0.0, jobs=sorted(acc.jobs),
                                 savings_kg_co2_per_day=kg * 86400 / run.period_s))
    return out


def high_pue(fleet: SimulatedFleet, start_ns: int, end_ns: int) -> list[TruthItem]:
    """Sites whose PUE is above the threshold: facility energy above IT × the target PUE."""
    sites = {s.name: s for s in fleet.fleet.site_of.values() if s.pue_mean >= PUE_THRESHOLD}
    if not sites:
        return []
    it: dict[str, float] = defaultdict(float)
    fac: dict[str, float] = defaultdict(float)
    t = start_ns
    while t < end_ns:
        nxt = min(end_ns, t + 3600 * NS)
        for p in fleet.points_between(t, nxt):
            name = p.tag("site") or ""
            if p.measurement == "facility" and name in sites:
                it[name] += float(p.field("it_energy_j") or 0)
                fac[name] += float(p.field("facility_energy_j") or 0)
        t = nxt
    span_s = (end_ns - start_ns) / NS
    return [TruthItem("high_pue", f"{name}: PUE {fac[name] / it[name]:.2f}",
                      _per_day(fac[name] - PUE_TARGET * it[name], span_s), site=name)
            for name in sorted(sites) if it[name] > 0]


def truth(fleet: SimulatedFleet, start_ns: int, end_ns: int,
          lams: Iterable[float] = (0.3, 0.5, 0.8)) -> dict[str, Any]:
    """Every planted inefficiency of the window [start, end), and the healthy GPUs and jobs."""
    ticks = _ticks(start_ns, end_ns)
    span_s = (end_ns - start_ns) / NS
    items = (power_caps(fleet, ticks, span_s, list(lams)) + _precision_items(fleet, ticks, span_s)
             + _idle_and_util(fleet, ticks, span_s) + clock_locks(fleet, ticks, span_s)
             + carbon_windows(fleet, ticks, span_s, end_ns / NS) + high_pue(fleet, start_ns, end_ns))
    flagged_gpus = {g for i in items for g in i.gpus}
    flagged_jobs = {j for i in items for j in i.jobs}
    healthy_gpus: set[str] = set()
    healthy_jobs: set[str] = set()
    for grp in fleet.groups:
        if grp.role != "control":
            continue
        healthy_gpus |= set(grp.gpus) - flagged_gpus
        healthy_jobs |= _run_group(grp, ticks).jobs - flagged_jobs
    return {"scenario": fleet.scenario, "seed": fleet.seed, "start_ns": start_ns, "end_ns": end_ns,
            "hours": span_s / 3600, "items": [i.to_dict() for i in items],
            "healthy_gpus": sorted(healthy_gpus), "healthy_jobs": sorted(healthy_jobs)}


def best_static_cap(fleet: SimulatedFleet, grp: Group, start_ns: int, end_ns: int,
                    max_slowdown: float, lam: float = 1.0, step_w: float = 1.0) -> dict[str, float]:
    """The autopilot's oracle: the one limit for ``grp`` over [start, end) with the lowest cost
    λ·E + (1−λ)·P_max·T per unit of work among those that slow it by at most ``max_slowdown``
    (the physics, no noise), every ``step_w`` W from the model's minimum to the group's limit."""
    ticks = _ticks(start_ns, end_ns)
    spec = GPU_SPECS[grp.model]
    base = _run_group(grp, ticks)
    if base.work <= 0:
        return {"cap_w": grp.cap_w, "saved_frac": 0.0, "slowdown": 0.0}
    best = (lam * base.energy_j / base.work + (1 - lam) * spec.tdp_w * base.gpu_s / base.work,
            grp.cap_w, base)
    cap = spec.min_cap_w
    while cap < grp.cap_w:
        acc = _run_group(grp, ticks, cap_w=cap)
        if acc.work > 0 and 1 - acc.work / base.work <= max_slowdown:
            cost = lam * acc.energy_j / acc.work + (1 - lam) * spec.tdp_w * acc.gpu_s / acc.work
            best = min(best, (cost, cap, acc), key=lambda b: (b[0], -b[1]))
        cap += step_w
    acc = best[2]
    return {"cap_w": best[1],
            "saved_frac": 1 - (acc.energy_j / acc.work) / (base.energy_j / base.work),
            "slowdown": 1 - acc.work / base.work}
