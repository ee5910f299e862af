"""Software Carbon Intensity (GSF SCI, ISO/IEC 21031:2024): SCI = (E·I + M) per R, per job and for the fleet."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analytics import carbon, embodied
from analytics.context import Context

UNITS = ("tokens", "samples", "steps")  # R: the job's functional unit, the first it reports
J_PER_KWH = carbon.J_PER_KWH


def sci(operational_g: float, embodied_g: float, r: float) -> float | None:
    """(O + M) / R in g CO2e per unit, with O = E·I already in grams; None when R is 0."""
    return (operational_g + embodied_g) / r if r > 0 else None


@dataclass(frozen=True)
class JobSci:
    """One job's SCI and its terms. ``sci_g_per_unit`` is None when a term is unknown, and
    ``note`` says which (no intensity, no embodied figure for the GPU model, no work)."""

    job: str
    unit: str | None
    r: float
    energy_j: float  # E: the job's GPU energy × PUE (the grid energy it stands for)
    pue: float
    operational_g: float | None  # E·I
    mean_g_per_kwh: float | None  # I, energy-weighted over the job's hours
    gpu_model: str
    gpu_hours: float
    embodied_g_per_gpu_hour: float | None
    embodied_g: float | None  # M
    embodied_source: str | None
    sci_g_per_unit: float | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # flat scalars: asdict's deep copy is not needed


def unit_of(work: Mapping[str, float], wanted: str | None = None) -> str | None:
    """The job's R: ``wanted`` when given, else the first of tokens, samples, steps it counted."""
    if wanted:
        return wanted if work.get(wanted, 0) > 0 else None
    return next((u for u in UNITS if work.get(u, 0) > 0), None)


def job_sci(ctx: Context, job: str, overrides: Mapping[str, embodied.Embodied] | None = None,
            unit: str | None = None) -> JobSci:
    """SCI of one job over the window: its energy by hour × PUE × the intensity of those hours,
    plus its GPU-hours × the amortised embodied rate of its GPU model, over its work."""
    agg = ctx.job_aggs[job]
    pue = ctx.fac.pue or 1.0
    by_hour: dict[int, float] = defaultdict(float)
    for b in ctx.job_buckets_of(job):
        by_hour[b.time_ns] += b.energy_j * pue
    em = carbon.emissions(by_hour, ctx.carbon)
    fig = embodied.lookup(agg.gpu_model, overrides)
    gpu_hours = agg.gpu_seconds / 3600
    m_g = fig.g_per_gpu_hour * gpu_hours if fig else None
    u = unit_of(agg.work, unit)
    r = agg.work.get(u, 0.0) if u else 0.0
    notes = []
    if em.g_co2 is None:
        notes.append(f"no intensity: {em.message}")
    elif em.message:
        notes.append(em.message)
    if fig is None:
        notes.append(f"no embodied figure for GPU model {agg.gpu_model!r}; pass --embodied MODEL=KG:YEARS")
    if u is None:
        notes.append(f"the job reports no {unit or ' / '.join(UNITS)}")
    value = sci(em.g_co2, m_g, r) if em.g_co2 is not None and m_g is not None else None
    return JobSci(job, u, r, em.energy_j, pue, em.g_co2, em.mean_g_per_kwh, agg.gpu_model, gpu_hours,
                  fig.g_per_gpu_hour if fig else None, m_g, fig.source if fig else None, value,
                  "; ".join(notes) or None)


def fleet_embodied(ctx: Context, overrides: Mapping[str, embodied.Embodied] | None = None
                   ) -> tuple[float, list[str]]:
    """M of every GPU in the window (GPU-hours = the data's span), and the models with no figure."""
    total = 0.0
    unknown = set()
    hours = ctx.span_s / 3600
    for model, _limit in ctx.gpu_info().values():
        fig = embodied.lookup(model, overrides)
        if fig is None:
            unknown.add(model)
        else:
            total += fig.g_per_gpu_hour * hours
    return total, sorted(unknown)


def fleet_sci(ctx: Context, fleet_operational_g: float | None,
              overrides: Mapping[str, embodied.Embodied] | None = None, unit: str | None = None
              ) -> dict[str, Any]:
    """The ``sci`` object of the report: per job, per unit over the jobs (jobs with every term
    known), and what the per-job figures leave out (idle GPUs, overhead) for the whole fleet."""
    jobs = [job_sci(ctx, j, overrides, unit) for j in sorted(ctx.job_aggs)]
    by_unit: dict[str, dict[str, float]] = {}
    for j in jobs:
        if j.sci_g_per_unit is None or j.unit is None:
            continue
        acc = by_unit.setdefault(j.unit, {"jobs": 0, "operational_g": 0.0, "embodied_g": 0.0, "r": 0.0})
        acc["jobs"] += 1
        acc["operational_g"] += j.operational_g or 0.0
        acc["embodied_g"] += j.embodied_g or 0.0
        acc["r"] += j.r
    for acc in by_unit.values():
        acc["sci_g_per_unit"] = sci(acc["operational_g"], acc["embodied_g"], acc["r"]) or 0.0
    m_fleet, unknown = fleet_embodied(ctx, overrides)
    o_jobs = sum(j.operational_g or 0.0 for j in jobs)
    m_jobs = sum(j.embodied_g or 0.0 for j in jobs)
    return {
        "definition": "SCI = (E·I + M) / R (GSF SCI, ISO/IEC 21031:2024); E = job GPU energy × PUE, "
                      "I = grid intensity of the job's hours, M = GPU-hours × embodied g per GPU-hour",
        "jobs": [j.to_dict() for j in jobs],
        "fleet": {
            "by_unit": by_unit,
            "operational_g": fleet_operational_g, "embodied_g": m_fleet,
            "embodied_unknown_models": unknown,
            "unattributed_operational_g": None if fleet_operational_g is None else fleet_operational_g - o_jobs,
            "unattributed_embodied_g": m_fleet - m_jobs,
            "span_s": ctx.span_s,
        },
        "embodied_table": [e.to_dict() for e in {**embodied.bundled(), **(overrides or {})}.values()],
    }


def _g(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} g"


def table_rows(sci_obj: Mapping[str, Any], max_rows: int = 20) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for the text/Markdown report: each job, then the fleet per unit."""
    rows = []
    for j in sci_obj.get("jobs", [])[:max_rows]:
        value = (f"{j['sci_g_per_unit']:.4g} g/{j['unit'].rstrip('s')}" if j["sci_g_per_unit"] is not None
                 else f"– ({j['note']})")
        rows.append([j["job"], _g(j["operational_g"]), _g(j["embodied_g"]),
                     f"{j['r']:,.0f} {j['unit'] or ''}".strip(), value])
    for unit, acc in sci_obj.get("fleet", {}).get("by_unit", {}).items():
        rows.append([f"fleet ({acc['jobs']:.0f} jobs)", _g(acc["operational_g"]), _g(acc["embodied_g"]),
                     f"{acc['r']:,.0f} {unit}", f"{acc['sci_g_per_unit']:.4g} g/{unit.rstrip('s')}"])
    return ["job", "E·I", "M", "R", "SCI"], rows
