"""Recommendations with evidence and estimated savings (kWh, kg CO2, cost per day), deduplicated and ranked."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from analytics.clock_lock import clock_lock
from analytics.context import NS, Context, Settings, load_context
from analytics.frontier import (
    Frontier,
    base_workload,
    best_cap,
    break_even_lambda,
    build_frontiers,
    max_power_by_model,
    point_cost,
)
from analytics.levels import JobAggregate
from analytics.objective import check_lambda
from analytics.per import PER_UNITS, UNIT_SINGULAR, per, primary_unit
from analytics.queries import GpuBucket, JobBucket
from analytics.recommendation import (
    J_PER_KWH,
    Recommendation,
    _by_hour,
    _slug,
    _window_evidence,
    _worth,
    value_energy,
)
from analytics.start_windows import carbon_windows
from analytics.targets import (
    _flat,
    _idle_w,
    _job_gpus,
)
from analytics.timeutil import Window
from collector.store.base import Store

# GPU families with tensor cores (Volta and later), and those with FP8 (Ada, Hopper, Blackwell)
# or only INT8 tensor math (Turing, Ampere) for inference.
_TENSOR = re.compile(r"\b(V100|T4|A100|A10G?|A16|A2|A30|A40|A800|L4|L20|L40S?|H100|H200|H800|H20|"
                     r"GH200|B100|B200|GB200|RTX)\b", re.IGNORECASE)
_FP8 = re.compile(r"\b(L4|L20|L40S?|H100|H200|H800|H20|GH200|B100|B200|GB200|RTX 40\d0|RTX 6000 Ada)\b",
                  re.IGNORECASE)
HIGH_PRECISION = ("fp32", "tf32")
MIXED = ("bf16", "fp16")
LOW = ("fp8", "int8", "int4")
INFER_KINDS = ("infer", "batch")


# --- the recommenders ---------------------------------------------------------------------------
def idle_gpus(ctx: Context) -> list[Recommendation]:
    """GPUs below the idle threshold for at least idle_min_s at a stretch, drawing power."""
    st = ctx.settings
    series: dict[tuple[str, str], list[GpuBucket]] = defaultdict(list)
    for g in ctx.gpus:
        series[(g.host, g.gpu)].append(g)
    # One missing bucket does not break a stretch (an agent sampling more slowly than the bucket).
    max_gap = 2 * ctx.bucket_s * NS

    def span_s(run: list[GpuBucket]) -> float:  # the time its points cover, at most the window
        covered = sum(c if (c := b.covered_s) is not None else ctx.bucket_s for b in run)
        return min(covered, ctx.window.seconds)

    by_host: dict[str, dict[str, Any]] = {}
    for (host, gpu), buckets in sorted(series.items()):
        buckets.sort(key=lambda b: b.time_ns)
        runs: list[list[GpuBucket]] = []
        cur: list[GpuBucket] = []
        for b in buckets:
            idle = b.util_max_pct is not None and b.util_max_pct < st.idle_util_pct and b.count > 0
            if idle and cur and b.time_ns - cur[-1].time_ns <= max_gap:
                cur.append(b)
            elif idle:
                if cur:
                    runs.append(cur)
                cur = [b]
            else:
                if cur:
                    runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        long_runs = [r for r in runs if span_s(r) >= st.idle_min_s]
        energy = sum(b.energy_j for r in long_runs for b in r)
        if energy <= 0:
            continue
        idle_s = sum(span_s(r) for r in long_runs)
        h = by_host.setdefault(host, {"gpus": [], "energy": [], "idle_s": {}, "model": buckets[0].model,
                                      "longest_s": 0})
        h["gpus"].append(gpu)
        h["energy"].extend((b.time_ns, b.energy_j) for r in long_runs for b in r)
        h["idle_s"][gpu] = idle_s
        h["longest_s"] = max(h["longest_s"], max(span_s(r) for r in long_runs))
    out = []
    for host, h in sorted(by_host.items()):
        s = value_energy(ctx, _by_hour(h["energy"]))
        if not _worth(ctx, s):
            continue
        idle_j = sum(e for _t, e in h["energy"])
        idle_s = sum(h["idle_s"].values())
        gpus = sorted(h["gpus"], key=lambda x: (len(x), x))
        names = ", ".join(gpus)
        out.append(Recommendation(
            id=f"idle_gpu:{_slug(host)}", kind="idle_gpu", target=f"{host} GPU {names}",
            title=f"{host}: GPU {names} idle but drawing power",
            detail=(f"{len(gpus)} {h['model']} GPU(s) on {host} stayed below "
                    f"{st.idle_util_pct:g}% utilisation for {idle_s / 3600:.1f} GPU-hours in stretches of "
                    f"at least {st.idle_min_s / 60:.0f} min (longest {h['longest_s'] / 3600:.1f} h), drawing "
                    f"{idle_j / idle_s:.0f} W each on average. Give them work, or release them so the "
                    f"node can be drained and powered down."),
            evidence={**_window_evidence(ctx), "series": f"gpu.util_pct (max per bucket), gpu.energy_j "
                      f"where host={host}, gpu in [{names}]",
                      "idle_gpu_hours": {g: h["idle_s"][g] / 3600 for g in gpus},
                      "idle_energy_kwh": idle_j / J_PER_KWH, "mean_idle_power_w": idle_j / idle_s},
            savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
            savings_cost_per_day=s.cost_per_day,
            estimate_method=("the energy these GPUs drew while idle, per day (an upper bound: all of "
                             f"it is saved only if they are powered off); {s.note}"),
            action={"type": "release_gpus", "host": host, "gpus": gpus},
            currency=ctx.settings.tariff.currency, gpus=tuple(f"{host}/{g}" for g in gpus)))
    return out


def _class_buckets(ctx: Context, f: Frontier) -> list[JobBucket]:
    return [b for b in ctx.jobs if b.gpu_model == f.gpu_model and b.kind == f.kind
            and b.precision == f.precision and b.workload_class == f.workload
            and b.power_limit_w is not None]


def power_caps(ctx: Context, frontiers: list[Frontier], lam: float) -> list[Recommendation]:
    """Per class: lower the cap of GPUs running above the cap that minimises cost(λ); where the
    cap never binds, lock SM clocks instead."""
    st = ctx.settings
    out = []
    idle_w = _idle_w(ctx)
    for f in frontiers:
        best = best_cap(f, lam)
        if best is None:
            continue
        buckets = _class_buckets(ctx, f)
        if all(p.peak_power_w < st.cap_free_frac * p.cap_w for p in f.points):
            rec = clock_lock(ctx, f, buckets, idle_w)
            if rec is not None:
                out.append(rec)
            continue
        above = [p for p in f.points if p.cap_w > best.cap_w
                 and point_cost(f, p, lam) > point_cost(f, best, lam) * (1 + st.cap_min_gain_pct / 100)
                 and p.energy_j_per_unit > best.energy_j_per_unit]
        if not above:
            continue
        saved: list[tuple[int, float]] = []
        for p in above:
            frac = 1 - best.energy_j_per_unit / p.energy_j_per_unit
            saved.extend((b.time_ns, b.energy_j * frac) for b in buckets
                         if round(b.power_limit_w or 0.0) == p.cap_w)
        s = value_energy(ctx, _by_hour(saved))
        if not _worth(ctx, s):
            continue
        hosts = sorted({h for p in above for h in p.hosts})
        gpus: dict[str, list[str]] = {}
        for p in above:
            for h, gs in _job_gpus(ctx, p.jobs, f.gpu_model, p.cap_w).items():
                gpus[h] = sorted(set(gpus.get(h, [])) | set(gs), key=lambda x: (len(x), x))
        slow = max(best.time_s_per_unit / p.time_s_per_unit - 1 for p in above)
        lam_be = [x for p in above if (x := break_even_lambda(p, best, f.p_max_w)) is not None]
        caps = ", ".join(f"{p.cap_w:.0f} W" for p in above)
        unit = UNIT_SINGULAR.get(f.unit, f.unit)
        out.append(Recommendation(
            id=f"power_cap:{_slug(f.key)}", kind="power_cap", target=f.label,
            title=f"Cap {f.workload} on {f.gpu_model} at {best.cap_w:.0f} W (now {caps})",
            detail=(f"At trade-off weight η={lam:g} the cost η·E + (1−η)·P_max·T per {unit} (P_max {f.p_max_w:.0f} W) "
                    f"is lowest at {best.cap_w:.0f} W on the measured frontier: "
                    f"{best.energy_j_per_unit:.4g} J per {unit} vs "
                    + ", ".join(f"{p.energy_j_per_unit:.4g} J at {p.cap_w:.0f} W" for p in above)
                    + f"; each {unit} takes up to {100 * slow:.0f}% longer"
                    + (f". A lower cap pays off for η ≥ {min(lam_be):.2f}." if lam_be else ".")),
            evidence={**_window_evidence(ctx), "series": f"job.energy_j, job.{f.unit}, job.active_s, "
                      f"job.power_limit_w for {f.label}",
                      "frontier": [p.to_dict() for p in f.points], "best_cap_w": best.cap_w,
                      "lambda": lam, "p_max_w": f.p_max_w,
                      "break_even_lambda": min(lam_be) if lam_be else None},
            savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
            savings_cost_per_day=s.cost_per_day,
            estimate_method=("measured: the energy those jobs used at their cap × (1 − energy per unit "
                             f"at {best.cap_w:.0f} W / energy per unit at their cap), both measured in this "
                             f"fleet on the same class; {s.note}"),
            action={"type": "power_cap", "gpu_model": f.gpu_model, "watts": best.cap_w,
                    "hosts": hosts, "gpus": gpus, "from_watts": [p.cap_w for p in above]},
            currency=st.tariff.currency, gpus=_flat(gpus),
            jobs=tuple(sorted({j for p in above for j in p.jobs}))))
    return out


def consolidate(ctx: Context) -> list[Recommendation]:
    """Multi-GPU jobs at low mean and peak utilisation: run them on fewer GPUs."""
    st = ctx.settings
    idle_w = _idle_w(ctx)
    out = []
    for j in sorted(ctx.job_aggs.values(), key=lambda j: j.job):
        if (j.util_pct is None or j.util_pct >= st.low_util_pct or j.active_s < st.min_evidence_s
                or (j.util_max_pct or 0.0) >= st.low_util_peak_pct or j.gpus < 2):
            continue
        need = max(1, math.ceil(j.gpus * j.util_pct / st.consolidate_target_util_pct))
        freed = j.gpus - need
        if freed < 1:
            continue
        if j.gpu_model not in idle_w:
            continue  # no idle figure for this model: nothing to estimate the saving from
        idle, idle_src = idle_w[j.gpu_model]
        buckets = ctx.job_buckets_of(j.job)
        s = value_energy(ctx, _by_hour((b.time_ns, freed * idle * b.active_s) for b in buckets))
        if not _worth(ctx, s):
            continue
        gpus = _job_gpus(ctx, [j.job], j.gpu_model)
        out.append(Recommendation(
            id=f"consolidate:{_slug(j.job)}", kind="consolidate", target=j.job,
            title=f"Consolidate {j.job}: {j.gpus} GPUs at {j.util_pct:.0f}% utilisation",
            detail=(f"{j.job} averaged {j.util_pct:.0f}% utilisation (peak {j.util_max_pct or 0:.0f}%) on "
                    f"{j.gpus} {j.gpu_model} GPUs; {need} would carry it at ≤ "
                    f"{st.consolidate_target_util_pct:.0f}%, freeing {freed}."),
            evidence={**_window_evidence(ctx), "series": f"job.util_pct, job.gpus where job={j.job}",
                      "util_mean_pct": j.util_pct, "util_peak_pct": j.util_max_pct,
                      "gpus": j.gpus, "gpus_needed": need, "idle_power_w": idle},
            savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
            savings_cost_per_day=s.cost_per_day,
            estimate_method=(f"estimate: the freed GPUs' idle draw ({idle:.0f} W each: {idle_src}) "
                             f"over the job's run time; the work's own dynamic energy is "
                             f"assumed unchanged; {s.note}"),
            action={"type": "consolidate", "job": j.job, "hosts": list(j.hosts), "gpus_now": j.gpus,
                    "gpus_needed": need},
            currency=st.tariff.currency, measured=False, gpus=_flat(gpus), jobs=(j.job,)))
    return out


def _group_by_workload(aggs: Iterable[JobAggregate]) -> dict[tuple[str, str, str, str], list[JobAggregate]]:
    """(gpu_model, kind, base workload, precision) -> jobs with work."""
    out: dict[tuple[str, str, str, str], list[JobAggregate]] = defaultdict(list)
    for j in aggs:
        if j.energy_j > 0 and primary_unit(j.work):
            out[(j.gpu_model, j.kind, base_workload(j.workload or j.job), j.precision)].append(j)
    return out


def _class_per(jobs: list[JobAggregate], unit: str) -> float | None:
    return per(sum(j.work.get(unit, 0.0) for j in jobs), sum(j.energy_j for j in jobs))


def precision(ctx: Context) -> list[Recommendation]:
    """FP32 on tensor-core GPUs -> mixed precision; bf16/fp16 inference on FP8/INT8 hardware -> a hint.
    The gain is measured where the fleet runs the same workload in both precisions."""
    st = ctx.settings
    groups = _group_by_workload(ctx.job_aggs.values())
    out = []
    for (model, kind, workload, prec), jobs in sorted(groups.items()):
        unit = primary_unit({u: sum(j.work.get(u, 0.0) for j in jobs) for u in PER_UNITS}) or "samples"
        if prec in HIGH_PRECISION and _TENSOR.search(model):
            kind_name, to, assumed = "mixed_precision", "bf16", st.mixed_precision_assumed_gain
            twins = [(p, js) for (m, k, w, p), js in groups.items()
                     if m == model and w == workload and p in MIXED]
        elif kind in INFER_KINDS and prec not in LOW and (_FP8.search(model) or _TENSOR.search(model)):
            kind_name, assumed = "low_precision", st.low_precision_assumed_gain
            to = "fp8" if _FP8.search(model) else "int8"
            twins = [(p, js) for (m, k, w, p), js in groups.items()
                     if m == model and w == workload and p in LOW]
        else:
            continue
        base = _class_per(jobs, unit)
        if base is None:
            continue
        gain, measured, twin_note = assumed, False, ""
        if twins:
            twin_prec, twin_jobs = sorted(twins, key=lambda t: t[0])[0]
            # Compare at the same power limit where the twin ran at one: the cap changes PER too.
            limits = {round(j.power_limit_w) for j in jobs if j.power_limit_w is not None}
            same_cap = [t for t in twin_jobs if t.power_limit_w is not None
                        and round(t.power_limit_w) in limits]
            twin_jobs = same_cap or twin_jobs
            twin_per = _class_per(twin_jobs, unit)
            if twin_per is not None and twin_per > base:
                gain, measured, to = twin_per / base, True, twin_prec
                twin_note = (f"{twin_prec} runs of {workload} on {model} measured {twin_per:.4g} "
                             f"{PER_UNITS[unit]} vs {base:.4g} in {prec} ({len(twin_jobs)} vs "
                             f"{len(jobs)} jobs{', at the same power limit' if same_cap else ''})")
        frac = 1 - 1 / gain
        buckets = [b for j in jobs for b in ctx.job_buckets_of(j.job)]
        s = value_energy(ctx, _by_hour((b.time_ns, b.energy_j * frac) for b in buckets))
        if not _worth(ctx, s):
            continue
        names = tuple(sorted(j.job for j in jobs))
        hosts = sorted({h for j in jobs for h in j.hosts})
        target = f"{workload} ({kind}, {prec}) on {model}"
        if kind_name == "mixed_precision":
            title = f"Train {workload} in mixed precision ({to}) on {model}"
            why = (f"{len(jobs)} {prec} job(s) of {workload} run on {model}, whose tensor cores do "
                   f"{to} far faster than {prec}.")
        else:
            title = f"Try {to} inference for {workload} on {model}"
            why = (f"{len(jobs)} {prec} inference job(s) of {workload} run on {model}, which supports "
                   f"{to}; validate output quality first.")
        method = (f"measured: {twin_note}; saving = their energy × (1 − 1/{gain:.2f})" if measured else
                  f"estimate, not measured in this fleet: assumes {to} raises work per joule "
                  f"{gain:.2f}× (no {to} run of this workload on {model} to compare); saving = their "
                  f"energy × (1 − 1/{gain:.2f})")
        out.append(Recommendation(
            id=f"{kind_name}:{_slug(target)}", kind=kind_name, target=target, title=title,
            detail=f"{why} Expected work per joule: {gain:.2f}× ({'measured' if measured else 'assumed'}).",
            evidence={**_window_evidence(ctx), "series": f"job.energy_j, job.{unit} for "
                      f"{len(names)} job(s) of {workload}", "per": base, "per_unit": PER_UNITS[unit],
                      "gain": gain, "jobs": list(names)},
            savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
            savings_cost_per_day=s.cost_per_day, estimate_method=f"{method}; {s.note}",
            action={"type": kind_name, "precision": to, "jobs": list(names), "hosts": hosts},
            currency=st.tariff.currency, measured=measured, jobs=names,
            gpus=_flat(_job_gpus(ctx, names, model))))
    return out


def high_pue(ctx: Context) -> list[Recommendation]:
    """A facility whose PUE stays above the threshold: the cooling and power-distribution overhead."""
    st = ctx.settings
    by_site: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    hours: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for b in ctx.facility:
        if b.it_energy_j and b.facility_energy_j:
            it, fac = b.it_energy_j, b.facility_energy_j
        elif b.it_power_w and b.facility_power_w:
            it, fac = b.it_power_w * 3600, b.facility_power_w * 3600
        else:
            continue
        by_site[b.site][0] += it
        by_site[b.site][1] += fac
        hours[b.site].append((b.time_ns, max(0.0, fac - it * st.pue_target)))
    out = []
    for site, (it, fac) in sorted(by_site.items()):
        if it <= 0 or fac / it < st.pue_threshold:
            continue
        pue = fac / it
        s = value_energy(ctx, _by_hour(hours[site]), at_meter=True)
        out.append(Recommendation(
            id=f"high_pue:{_slug(site)}", kind="high_pue", target=site,
            title=f"{site}: PUE {pue:.2f} (target {st.pue_target:.2f})",
            detail=(f"Site {site} used {fac / J_PER_KWH:.0f} kWh at the meter for {it / J_PER_KWH:.0f} kWh "
                    f"of IT load (PUE {pue:.2f}). Raising supply air temperature, containment and "
                    f"free cooling are the usual levers."),
            evidence={**_window_evidence(ctx), "series": f"facility.facility_energy_j / facility.it_energy_j "
                      f"where site={site}", "pue": pue, "pue_threshold": st.pue_threshold},
            savings_kwh_per_day=s.kwh_per_day, savings_kg_co2_per_day=s.kg_co2_per_day,
            savings_cost_per_day=s.cost_per_day,
            estimate_method=(f"estimate, if the target PUE were reached: facility energy above IT energy "
                             f"× {st.pue_target:.2f}, "
                             f"per hour; {s.note}"),
            action={"type": "facility", "site": site, "pue": pue, "target_pue": st.pue_target},
            currency=st.tariff.currency, measured=False))
    return out


def rank(recs: Iterable[Recommendation]) -> list[Recommendation]:
    """Deduplicate by id (the larger saving wins) and rank by kg CO2, then kWh, then cost per day; ties by id."""
    best: dict[str, Recommendation] = {}
    for r in recs:
        old = best.get(r.id)
        if old is None or _key(r) < _key(old):
            best[r.id] = r
    return sorted(best.values(), key=_key)


def _key(r: Recommendation) -> tuple[float, float, float, str]:
    return (-(r.savings_kg_co2_per_day or 0.0), -r.savings_kwh_per_day, -r.savings_cost_per_day, r.id)


@dataclass
class RecommendationSet:
    """The ranked recommendations plus messages about what could not be assessed."""

    items: list[Recommendation]
    messages: list[str] = field(default_factory=list)
    frontiers: list[Frontier] = field(default_factory=list)


def recommend_from(ctx: Context, lam: float = 0.5) -> RecommendationSet:
    """Every recommender over one Context, ranked; messages say what was not assessed and why."""
    lam = check_lambda(lam, unit_interval=True)
    fronts = build_frontiers(ctx.jobs, max_power_by_model(ctx.gpus))
    recs: list[Recommendation] = []
    recs += idle_gpus(ctx)
    recs += power_caps(ctx, fronts, lam)
    recs += consolidate(ctx)
    recs += precision(ctx)
    windows, message = carbon_windows(ctx)
    recs += windows
    recs += high_pue(ctx)
    messages = [m for m in (message,) if m]
    if ctx.carbon is None and ctx.carbon_message:
        messages.append(f"kg CO2 savings unknown: {ctx.carbon_message}")
    return RecommendationSet(rank(recs), messages, fronts)


def recommendations(store: Store, window: Window, *, lam: float = 0.5,
                    settings: Settings | None = None) -> list[Recommendation]:
    """Ranked, deduplicated recommendations for the window at the operator's trade-off weight η (0 time .. 1 energy)."""
    check_lambda(lam, unit_interval=True)
    return recommend_from(load_context(store, window, settings), lam).items


__all__ = ["Recommendation", "Settings", "recommend_from", "recommendations", "value_energy"]
