"""The fleet report: energy, carbon, cost, PUE, PER tables, objectives, frontiers, predictions, recommendations."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon, levels
from analytics.context import Context, Progress, Settings, load_context
from analytics.cost import energy_cost
from analytics.embodied import parse_overrides
from analytics.frontier import Frontier, best_cap
from analytics.objective import JobTerms, check_lambda, energy_model, job_terms, objective_j, tradeoff_cost
from analytics.per import PER_UNITS, UNIT_SINGULAR, primary_unit
from analytics.predict import Prediction, predict_all
from analytics.recommend import Recommendation, recommend_from
from analytics.sci import fleet_sci
from analytics.sci import table_rows as sci_table_rows
from analytics.timeutil import Window, fmt_time
from collector.errors import ConfigError
from collector.store.base import Store

J_PER_KWH = 3.6e6
NS = 1_000_000_000
STEPS = ("gpu", "job", "cpu", "facility", "carbon", "analyse")


@dataclass
class Report:
    """Everything `wattlens report` prints; ``to_dict()`` is JSON-serialisable."""

    window: Window
    lam: float
    totals: dict[str, Any]
    per: dict[str, list[levels.PerRow]]
    trends: list[levels.PerTrend]
    objectives: list[dict[str, Any]]
    frontiers: list[Frontier]
    predictions: list[Prediction]
    recommendations: list[Recommendation]
    notes: list[str] = field(default_factory=list)
    sci: dict[str, Any] = field(default_factory=dict)  # analytics.sci.fleet_sci

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {"start": fmt_time(self.window.start_ns), "end": fmt_time(self.window.end_ns),
                       "start_ns": self.window.start_ns, "end_ns": self.window.end_ns},
            "lambda": self.lam,
            "totals": self.totals,
            "per": {level: [r.to_dict() for r in rows] for level, rows in self.per.items()},
            "trends": [t.to_dict() for t in self.trends],
            "objectives": self.objectives,
            "frontiers": [f.to_dict(self.lam) for f in self.frontiers],
            "predictions": [p.to_dict() for p in self.predictions],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "notes": list(self.notes),
            "sci": self.sci,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)


def job_objective(terms: JobTerms, gpus: int, p_max_w: float | None, lam: float) -> dict[str, Any]:
    """A job's E_train/E_inf/E/P/J at λ from its measured terms, and its cost(λ) with T = run time."""
    if terms.phase == "train":
        model = energy_model(terms.c_w, terms.t_batch_s, terms.samples, 0, 0, 0, terms.batch)
    else:
        model = energy_model(0, 0, 0, terms.c_w, terms.t_batch_s, terms.samples, terms.batch)
    out: dict[str, Any] = {"job": terms.job, "terms": terms.to_dict(), **model.to_dict(),
                           "lambda": lam, "j": objective_j(model.e_j, model.p_inf_share, lam)}
    if p_max_w and lam <= 1:
        p_max_job = p_max_w * max(gpus, 1)
        out["tradeoff"] = {"max_power_w": p_max_job, "time_s": terms.active_s,
                           "cost_j": tradeoff_cost(terms.energy_j, terms.active_s, p_max_job, lam)}
    return out


def _totals(ctx: Context, fac: levels.FacilityEnergy) -> tuple[dict[str, Any], list[str]]:
    notes = []
    gpu_j = sum(g.energy_j for g in ctx.gpus)
    cpu_j = sum(e for _k, _t, e in ctx.cpu)
    est_j = sum(g.energy_j for g in ctx.gpus if g.method == levels.ESTIMATED) + sum(
        e for (_h, m), _t, e in ctx.cpu if m == levels.ESTIMATED)
    if est_j > 0:
        notes.append(f"{est_j / J_PER_KWH:.3g} kWh of the energy is estimated (method=estimated: a "
                     f"model, not a meter); rows that include it are labelled")
    elif any(j.estimated_j > 0 for j in ctx.job_aggs.values()):  # wattlens.job without an agent
        notes.append("job energy is estimated (the CPU estimate: a model, not a meter); "
                     "the jobs it affects are labelled")
    em = carbon.emissions(ctx.grid_by_hour, ctx.carbon)
    if em.message:
        notes.append(f"carbon: {em.message}")
    tariff = ctx.settings.tariff
    cost = energy_cost(ctx.grid_by_hour, tariff)
    methods = sorted({g.method for g in ctx.gpus} | {m for (_h, m), _t, _e in ctx.cpu})
    if "simulated" in methods:
        notes.append("data from the simulated fleet (method=simulated)")
    totals = {
        "gpu_energy_j": gpu_j, "cpu_energy_j": cpu_j, "estimated_energy_j": est_j,
        "it_energy_j": fac.it_energy_j if fac.it_energy_j is not None else gpu_j + cpu_j,
        "facility_energy_j": fac.facility_energy_j, "pue": fac.pue, "pue_source": fac.source,
        "grid_energy_j": sum(ctx.grid_by_hour.values()), "grid_energy_basis": ctx.grid_basis,
        "emissions": em.to_dict(), "kg_co2": em.kg_co2,
        "cost": cost, "currency": tariff.currency, "tariff": tariff.to_dict(),
        "tariff_text": tariff.describe(), "methods": methods,
        "gpus": len({(g.host, g.gpu) for g in ctx.gpus}), "jobs": len(ctx.job_aggs),
        "span_s": ctx.span_s,
    }
    return totals, notes


def build_report(store: Store, window: Window, lam: float = 0.5, settings: Settings | None = None,
                 progress: Progress | None = None) -> Report:
    """Read the window once (analytics.queries) and compute the whole report from it."""
    lam = check_lambda(lam, unit_interval=True)
    ctx = load_context(store, window, settings, progress)
    if progress:
        progress("analyse")
    return report_from(ctx, lam)


def report_from(ctx: Context, lam: float) -> Report:
    """The report from an already-loaded Context (pure)."""
    fac = ctx.fac
    totals, notes = _totals(ctx, fac)
    per = {
        "gpu": levels.gpu_per(ctx.gpus, ctx.jobs, ctx.settings.busy_util_pct),
        "job": levels.job_per(ctx.job_aggs),
        "node": levels.node_per(ctx.gpus, ctx.cpu, ctx.jobs),
    }
    fleet = levels.fleet_rows(ctx.gpus, ctx.cpu, ctx.jobs, fac)
    per["fleet"] = [r for r in fleet if r.level == "fleet"]
    per["facility"] = [r for r in fleet if r.level == "facility"]
    if not per["facility"]:
        notes.append(f"facility PER: {fac.source}")
    notes.append(f"GPU-level PER: {levels.GPU_ATTRIBUTION}")
    trends = levels.per_trends(ctx.jobs, ctx.settings.per_references)
    recs = recommend_from(ctx, lam)
    # Without carbon data the totals already carry the message; say it once.
    notes.extend(m for m in recs.messages if not (ctx.carbon is None and m.startswith("kg CO2")))
    p_max: dict[str, float] = defaultdict(float)
    for g in ctx.gpus:
        if g.power_limit_w:
            p_max[g.model] = max(p_max[g.model], g.power_limit_w)
    objectives = []
    for j in sorted(ctx.job_aggs.values(), key=lambda j: (-j.energy_j, j.job)):
        try:
            terms = job_terms(j.job, j.kind, j.energy_j, j.active_s, j.work.get("samples", 0.0),
                              j.batch_size)
        except ConfigError as exc:
            objectives.append({"job": j.job, "error": str(exc)})
            continue
        objectives.append(job_objective(terms, j.gpus, p_max.get(j.gpu_model), lam))
    predictions = predict_all(ctx.jobs, ctx.carbon,
                              running_since_ns=ctx.now_ns - 2 * ctx.bucket_s * NS)
    if ctx.carbon is not None and ctx.carbon_message:
        notes.append(f"carbon: {ctx.carbon_message}")
    sci = fleet_sci(ctx, totals["emissions"]["g_co2"], parse_overrides(ctx.settings.embodied),
                    ctx.settings.sci_unit)
    return Report(ctx.window, lam, totals, per, trends, objectives, recs.frontiers, predictions,
                  recs.items, notes, sci)


# --- rendering ------------------------------------------------------------------------------------


def _kwh(j: float | None) -> str:
    if j is None:
        return "–"
    kwh = j / J_PER_KWH
    return f"{kwh:,.2f} kWh" if abs(kwh) >= 1 or kwh == 0 else f"{kwh:.3g} kWh"


def _per_text(row: levels.PerRow) -> str:
    unit = primary_unit(row.work)
    if unit is None or unit not in row.per:
        return "– (no work)" if row.energy_j > 0 else "– (no energy)"
    text = f"{row.per[unit]:.4g} {PER_UNITS[unit]}"
    if "flops" in row.per and unit != "flops":
        text += f", {row.gflops_per_w:.3g} GFLOP/s/W"
    return text


def _table(headers: list[str], rows: list[list[str]], md: bool) -> list[str]:
    if md:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def render(report: Report, fmt: str = "table", max_rows: int = 20) -> str:
    """Text (``table``) or Markdown (``md``); JSON is ``report.to_json()``."""
    md = fmt == "md"
    t = report.totals
    h = (lambda s: f"\n## {s}\n") if md else (lambda s: f"\n{s}\n{'-' * len(s)}")
    lines = ["# wattlens report" if md else "wattlens report",
             f"window {fmt_time(report.window.start_ns)} .. {fmt_time(report.window.end_ns)}, "
             f"λ = {report.lam:g}", ""]
    em = t["emissions"]
    co2 = (f"{em['kg_co2']:,.1f} kg CO2 ({em['mean_g_per_kwh']:.0f} g/kWh, {em['source']})"
           if em["kg_co2"] is not None else f"unknown: {em['message']}")
    if em.get("renewable_pct") is not None:
        co2 += f", renewable {em['renewable_pct']:.0f}%"
    lines += [h("Totals"), *(_table(["", "value"], [
        ["GPU energy", _kwh(t["gpu_energy_j"])],
        ["CPU energy", _kwh(t["cpu_energy_j"]) + (f" (incl. {_kwh(t['estimated_energy_j'])} estimated)"
                                                 if t["estimated_energy_j"] else "")],
        ["IT energy", _kwh(t["it_energy_j"])],
        ["facility energy", _kwh(t["facility_energy_j"])],
        ["PUE", f"{t['pue']:.2f}" if t["pue"] else f"– ({t['pue_source']})"],
        ["carbon", co2],
        ["cost", f"{t['cost']:,.2f} {t['currency']} ({t['tariff_text']}; on {t['grid_energy_basis']})"],
    ], md))]
    for level, title in (("fleet", "Fleet PER"), ("facility", "Facility PER"), ("node", "Node PER"),
                         ("job", "Job PER"), ("gpu", "GPU PER (attributed)")):
        rows = report.per.get(level, [])
        if not rows:
            continue
        body = [[r.name, _kwh(r.energy_j), _per_text(r), r.label] for r in rows[:max_rows]]
        lines += [h(title), *_table(["name", "energy", "PER", "note"], body, md)]
        if len(rows) > max_rows:
            lines.append(f"... {len(rows) - max_rows} more (use --format json for all)")
    trends = [tr for tr in report.trends if tr.change_pct is not None]  # below: + 0.0 turns -0.0 into 0.0
    if trends:
        body = [[tr.job, f"{tr.baseline:.4g}", f"{tr.latest:.4g}" if tr.latest else "–",
                 f"{round(tr.change_pct or 0.0, 1) + 0.0:+.1f}%", f"{PER_UNITS[tr.unit]}, {tr.baseline_source}"]
                for tr in sorted(trends, key=lambda tr: (tr.change_pct or 0.0, tr.job))[:max_rows]]
        lines += [h("PER trend vs baseline"), *_table(["job", "baseline", "latest", "change", "unit"],
                                                       body, md)]
    if report.frontiers:
        body = []
        for f in report.frontiers:
            best = best_cap(f, report.lam) if report.lam <= 1 else None
            unit = UNIT_SINGULAR.get(f.unit, f.unit)
            pts = "; ".join(f"{p.cap_w:.0f} W: {p.time_s_per_unit:.3g} s, {p.energy_j_per_unit:.3g} J per {unit}"
                            for p in f.points)
            body.append([f.label, pts, f"{best.cap_w:.0f} W" if best else "–"])
        lines += [h(f"Power-cap frontiers (GPU-seconds and joules per unit of work; best cap at "
                    f"λ={report.lam:g})"),
                  *_table(["class", "caps: time, energy per unit", "best cap"], body, md)]
    if report.predictions:
        body = [[p.job, f"{100 * p.progress:.0f}%",
                 f"{_kwh(p.energy_total_j)} [{p.energy_low_j / J_PER_KWH:,.2f}..{p.energy_high_j / J_PER_KWH:,.2f}]",
                 f"{fmt_time(p.finish_ns)}",
                 f"{p.kg_co2:,.1f} kg" if p.kg_co2 is not None else "unknown"]
                for p in report.predictions[:max_rows]]
        lines += [h("Predictions (running jobs with a plan)"),
                  *_table(["job", "progress", "energy [95% interval]", "finish", "CO2"], body, md)]
    if report.sci.get("jobs"):
        headers, body = sci_table_rows(report.sci, max_rows)
        lines += [h("SCI: (E·I + M) per unit of work"), *_table(headers, body, md)]
    lines.append(h("Recommendations"))
    if not report.recommendations:
        lines.append("none")
    for i, r in enumerate(report.recommendations, 1):
        kg = f"{r.savings_kg_co2_per_day:,.2f} kg CO2" if r.savings_kg_co2_per_day is not None \
            else "kg CO2 unknown"
        lines.append(f"{i}. {r.title}" + ("" if r.measured else " [estimate]"))
        lines.append(f"   saves {r.savings_kwh_per_day:,.2f} kWh, {kg}, "
                     f"{r.savings_cost_per_day:,.2f} {r.currency} per day")
        lines.append(f"   {r.detail}")
        lines.append(f"   how: {r.estimate_method}")
    if report.notes:
        lines.append(h("Notes"))
        lines += [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
