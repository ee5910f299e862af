"""The fleet report: energy, carbon, cost, PUE, PER tables, objectives, frontiers, predictions, recommendations."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import levels
from analytics.context import Context, Progress, Settings, load_context
from analytics.embodied import parse_overrides
from analytics.filters import Filter, filter_context, no_match
from analytics.frontier import Frontier, best_cap
from analytics.objective import (
    DEFAULT_OBJECTIVE_LAMBDA_J,
    DEFAULT_TRADEOFF_WEIGHT,
    JobTerms,
    check_lambda,
    energy_model,
    job_terms,
    objective_j,
    tradeoff_cost,
)
from analytics.per import PER_UNITS, UNIT_SINGULAR, primary_unit
from analytics.predict import Prediction, predict_all
from analytics.recommend import Recommendation, recommend_from
from analytics.savings import combined
from analytics.sci import fleet_sci
from analytics.sci import table_rows as sci_table_rows
from analytics.teams import TeamRow, idle_policy_summary, team_rows
from analytics.timeutil import Window, fmt_time
from collector.errors import ConfigError
from collector.store.base import Store

J_PER_KWH = 3.6e6
NS = 1_000_000_000
MIN_EXTRAPOLATE_S = 3600.0  # under this much data, per-day figures are flagged as indicative
STEPS = ("gpu", "job", "cpu", "facility", "carbon", "job owners", "analyse")


@dataclass
class Report:
    """Everything `wattlens report` prints; ``to_dict()`` is JSON-serialisable."""

    window: Window
    lam: float  # the trade-off weight η (0..1) of cost = η·E + (1−η)·P_max·T
    totals: dict[str, Any]
    per: dict[str, list[levels.PerRow]]
    trends: list[levels.PerTrend]
    objectives: list[dict[str, Any]]
    frontiers: list[Frontier]
    predictions: list[Prediction]
    recommendations: list[Recommendation]
    notes: list[str] = field(default_factory=list)
    sci: dict[str, Any] = field(default_factory=dict)  # analytics.sci.fleet_sci
    objective_lambda_j: float = DEFAULT_OBJECTIVE_LAMBDA_J  # λ_J of J = E + λ_J·P, in joules
    teams: list[TeamRow] = field(default_factory=list)  # showback (analytics.teams)
    namespaces: list[TeamRow] = field(default_factory=list)  # the same per Kubernetes namespace
    idle_policy: dict[str, Any] = field(default_factory=dict)  # analytics.teams.idle_policy_summary
    autopilot: dict[str, Any] = field(default_factory=dict)  # analytics.autopilot.summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {"start": fmt_time(self.window.start_ns), "end": fmt_time(self.window.end_ns),
                       "start_ns": self.window.start_ns, "end_ns": self.window.end_ns},
            "tradeoff_weight": self.lam,
            "objective_lambda_j": self.objective_lambda_j,
            "totals": self.totals,
            "per": {level: [r.to_dict() for r in rows] for level, rows in self.per.items()},
            "trends": [t.to_dict() for t in self.trends],
            "objectives": self.objectives,
            "frontiers": [f.to_dict(self.lam) for f in self.frontiers],
            "predictions": [p.to_dict() for p in self.predictions],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "recommendations_total": combined(self.recommendations).to_dict(),
            "notes": list(self.notes),
            "sci": self.sci,
            "idle_policy": self.idle_policy,
            "teams": [r.to_dict(self.totals.get("currency", "")) for r in self.teams],
            "namespaces": [{"namespace": d.pop("team"), **d} for d in
                           (r.to_dict(self.totals.get("currency", "")) for r in self.namespaces)],
            "autopilot": self.autopilot,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)


def job_objective(terms: JobTerms, gpus: int, p_max_w: float | None, lam: float,
                  lambda_j: float = DEFAULT_OBJECTIVE_LAMBDA_J) -> dict[str, Any]:
    """A job's E_train/E_inf/E/P and J = E + λ_J·P from its measured terms, and its trade-off
    cost η·E + (1−η)·P_max·T at the weight η = ``lam`` with T = run time."""
    if terms.phase == "train":
        model = energy_model(terms.c_w, terms.t_batch_s, terms.samples, 0, 0, 0, terms.batch)
    else:
        model = energy_model(0, 0, 0, terms.c_w, terms.t_batch_s, terms.samples, terms.batch)
    out: dict[str, Any] = {"job": terms.job, "terms": terms.to_dict(), **model.to_dict(),
                           "objective_lambda_j": lambda_j,
                           "j": objective_j(model.e_j, model.p_inf_share, lambda_j)}
    if p_max_w and lam <= 1:
        p_max_job = p_max_w * max(gpus, 1)
        out["tradeoff"] = {"weight": lam, "max_power_w": p_max_job, "time_s": terms.active_s,
                           "cost_j": tradeoff_cost(terms.energy_j, terms.active_s, p_max_job, lam)}
    return out


def _totals(ctx: Context) -> tuple[dict[str, Any], list[str]]:
    """The headline figures (analytics.headline, as on the dashboard's cards) and what they rest on."""
    notes = []
    head = ctx.headline()
    if head.estimated_energy_j > 0:
        notes.append(f"{head.estimated_energy_j / J_PER_KWH:.3g} kWh of the energy is estimated "
                     f"(method=estimated: a model, not a meter); rows that include it are labelled")
    elif any(j.estimated_j > 0 for j in ctx.job_aggs.values()):  # wattlens.job without an agent
        notes.append("job energy is estimated (the CPU estimate: a model, not a meter); "
                     "the jobs it affects are labelled")
    if head.emissions.message:
        notes.append(f"carbon: {head.emissions.message}")
    methods = sorted({g.method for g in ctx.gpus} | {m for (_h, m), _t, _e in ctx.cpu})
    if "simulated" in methods:
        notes.append("data from the simulated fleet (method=simulated)")
    span = ctx.span_s
    per_day = {"scaled_from_s": span, "factor": 86400 / span,
               "too_short": span < MIN_EXTRAPOLATE_S}
    if per_day["too_short"]:
        notes.append(f"the data cover only {_duration(span)}: per-day savings are that span × "
                     f"{sig(86400 / span)}, too short to extrapolate to a day reliably")
    totals = {**head.to_dict(), "methods": methods, "per_day": per_day,
              "gpus": len({(g.host, g.gpu) for g in ctx.gpus}), "jobs": len(ctx.job_aggs)}
    return totals, notes


def build_report(store: Store, window: Window, lam: float = DEFAULT_TRADEOFF_WEIGHT,
                 settings: Settings | None = None, progress: Progress | None = None,
                 objective_lambda_j: float = DEFAULT_OBJECTIVE_LAMBDA_J,
                 flt: Filter | None = None) -> Report:
    """Read the window once (analytics.queries) and compute the whole report from it.

    ``lam`` is the trade-off weight η (0..1); ``objective_lambda_j`` the seed objective's λ_J (J);
    ``flt`` narrows it to a node, GPU model or job (analytics.filters, as the dashboard's filters).
    """
    lam = check_lambda(lam, "tradeoff_weight", unit_interval=True)
    objective_lambda_j = check_lambda(objective_lambda_j, "objective_lambda_j")
    flt = flt or Filter()
    whole = load_context(store, window, settings, progress)
    ctx = filter_context(whole, flt)
    if flt.active and not ctx.gpus and not ctx.jobs:
        raise ConfigError(no_match(whole, flt))
    if progress:
        progress("analyse")
    report = report_from(ctx, lam, objective_lambda_j, filtered=flt.active)
    from analytics import autopilot

    report.autopilot = autopilot.summary(store, window, flt.node, flt.job,
                                         autopilot.filter_groups(ctx, flt))
    if flt.active:  # say what the figures cover
        report.totals["filter"] = {"node": flt.node, "model": flt.model, "job": flt.job,
                                   "team": flt.team}
    return report


def report_from(ctx: Context, lam: float,
                objective_lambda_j: float = DEFAULT_OBJECTIVE_LAMBDA_J, *,
                filtered: bool = False) -> Report:
    """The report from an already-loaded Context (pure); ``filtered``: ctx is part of the fleet."""
    fac = ctx.fac
    totals, notes = _totals(ctx)
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
        objectives.append(job_objective(terms, j.gpus, p_max.get(j.gpu_model), lam,
                                        objective_lambda_j))
    predictions = predict_all(ctx.jobs, ctx.carbon,
                              running_since_ns=ctx.now_ns - 2 * ctx.bucket_s * NS)
    if ctx.carbon is not None and ctx.carbon_message:
        notes.append(f"carbon: {ctx.carbon_message}")
    sci = fleet_sci(ctx, totals["emissions"]["g_co2"], parse_overrides(ctx.settings.embodied),
                    ctx.settings.sci_unit)
    idle = idle_policy_summary(ctx)
    notes.append(f"job energy: {idle['text']} (docs/attribution.md); the teams' rows sum to the "
                 f"GPU + CPU energy, carbon and cost above")
    return Report(ctx.window, lam, totals, per, trends, objectives, recs.frontiers, predictions,
                  recs.items, notes, sci=sci, objective_lambda_j=objective_lambda_j,
                  teams=team_rows(ctx, filtered=filtered), idle_policy=idle,
                  namespaces=team_rows(ctx, filtered=filtered, by="namespace"))


# --- rendering ------------------------------------------------------------------------------------


def sig(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits (at least the units place), thousands separators, never -0."""
    if x is None or not math.isfinite(x):
        return "–"
    if abs(x) < 1e-12:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:,.{decimals}f}"
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def signed_pct(x: float | None) -> str:
    """A signed change in one decimal; a change that rounds to zero is ±0.0 %, never -0.0."""
    if x is None:
        return "–"
    return "±0.0%" if round(x, 1) == 0 else f"{x:+.1f}%"


def pct1(x: float | None) -> str:
    """A share in one decimal, '12.3 %'; never -0.0 (a share that rounds to zero reads 0.0 %)."""
    return "–" if x is None else f"{round(x, 1) + 0.0:.1f} %"


def _kwh(j: float | None) -> str:
    if j is None:
        return "–"
    kwh = j / J_PER_KWH
    return f"{kwh:,.2f} kWh" if abs(kwh) >= 1 else f"{sig(kwh)} kWh"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _money(x: float) -> str:
    """Cents from one unit up, three significant digits below (0.00167, not 0.00)."""
    return f"{x:,.2f}" if abs(x) >= 1 else sig(x)


def _mj(j: float | None) -> str:
    """Joules in J, kJ, MJ or GJ, four significant digits."""
    if j is None:
        return "–"
    factor, unit = next(((f, u) for f, u in ((1e9, "GJ"), (1e6, "MJ"), (1e3, "kJ"))
                         if abs(j) >= f), (1.0, "J"))
    return f"{sig(j / factor, 4)} {unit}"


def _objective_rows(report: Report, max_rows: int) -> list[list[str]]:
    rows = []
    for o in report.objectives[:max_rows]:
        if "error" in o:
            rows.append([o["job"], "–", "–", "–", "–", o["error"]])
            continue
        t = o.get("tradeoff")
        p = o.get("p_inf_share")
        rows.append([o["job"], _mj(o["e_j"]), "–" if p is None else f"{p:.2f}", _mj(o["j"]),
                     _mj(t["cost_j"]) if t else "–",
                     f"T {_duration(t['time_s'])}, P_max {t['max_power_w']:,.0f} W" if t else ""])
    return rows


def work_rate(value: float | None, unit: str | None, per: str = "J") -> str:
    """Work per joule (``per="J"``: PER) or per second (``"s"``: throughput) in the work unit, four
    significant digits, as every PER in the report: '0.02003 tokens/J', '47.98 tokens/s'."""
    if value is None:
        return "–"
    name = PER_UNITS[unit][:-2] if unit in PER_UNITS else "units"
    # plain digits with separators where they read well ('101,500 tokens/s'), else '4.9e+09'
    text = sig(value, 4) if 1e-3 <= abs(value) < 1e9 else f"{value:.4g}"
    return f"{text} {name}/{per}"


def _per_text(row: levels.PerRow) -> str:
    unit = primary_unit(row.work)
    if unit is None or unit not in row.per:
        return "– (no work)" if row.energy_j > 0 else "– (no energy)"
    text = work_rate(row.per[unit], unit)
    if "flops" in row.per and unit != "flops":
        text += f", {row.gflops_per_w:.3g} GFLOP/s/W"
    return text


def _team_per(r: TeamRow) -> str:
    unit = primary_unit(r.work)
    return work_rate(r.per[unit], unit) if unit and unit in r.per else "–"


def _table(headers: list[str], rows: list[list[str]], md: bool) -> list[str]:
    if md:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _fleet_per(t: dict[str, Any]) -> str:
    fp = t["fleet_per"]
    unit = fp["unit"]
    if unit is None:
        return "– (no job reported work)"
    gpu_only = fp["gpu_only_per"].get(unit)
    return (f"{sig(fp['per'].get(unit))} {PER_UNITS[unit]} (work ÷ {fp['energy']}); GPU-only "
            f"{sig(gpu_only)} {PER_UNITS[unit]}")


def render(report: Report, fmt: str = "table", max_rows: int = 20) -> str:
    """Text (``table``) or Markdown (``md``); JSON is ``report.to_json()``."""
    md = fmt == "md"
    t = report.totals
    h = (lambda s: f"\n## {s}\n") if md else (lambda s: f"\n{s}\n{'-' * len(s)}")
    lines = ["# wattlens report" if md else "wattlens report",
             f"window {fmt_time(report.window.start_ns)} .. {fmt_time(report.window.end_ns)} "
             f"({_duration(report.window.seconds)}; data cover {_duration(t['span_s'])}), "
             f"trade-off weight η = {report.lam:g}, objective λ_J = {sig(report.objective_lambda_j)} J",
             ""]
    em = t["emissions"]
    co2 = (f"{sig(em['kg_co2'])} kg CO2 ({em['mean_g_per_kwh']:.0f} g/kWh × "
           f"{_kwh(t['grid_energy_j'])} {t['grid_energy_basis']}; {em['source']})"
           if em["kg_co2"] is not None else f"unknown: {em['message']}")
    if em.get("renewable_pct") is not None:
        co2 += f", renewable {em['renewable_pct']:.0f}%"
    lines += [h("Totals"), *(_table(["", "value"], [
        ["GPU energy", _kwh(t["gpu_energy_j"])],
        ["CPU energy", _kwh(t["cpu_energy_j"]) + (f" (incl. {_kwh(t['estimated_energy_j'])} estimated)"
                                                 if t["estimated_energy_j"] else "")],
        ["IT energy", f"{_kwh(t['it_energy_j'])} ({t['it_energy_basis']}"
                      + (f"; GPU + CPU measured {_kwh(t['gpu_energy_j'] + t['cpu_energy_j'])})"
                         if t["it_energy_basis"] == "facility meter" else ")")],
        ["facility energy", _kwh(t["facility_energy_j"])],
        ["PUE", f"{t['pue']:.2f} (facility ÷ IT energy)" if t["pue"] else f"– ({t['pue_source']})"],
        ["carbon", co2],
        ["cost", f"{_money(t['cost'])} {t['currency']} ({t['tariff_text']} × "
                 f"{_kwh(t['grid_energy_j'])} {t['grid_energy_basis']})"],
        ["fleet PER", _fleet_per(t)],
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
    named = [r for r in report.namespaces if not r.team.startswith("(")]
    for title, head, owner_rows in (("Teams", "team", report.teams),
                                    ("Kubernetes namespaces", "namespace",
                                     report.namespaces if named else [])):
        if not owner_rows:
            continue
        body = [[r.team, _kwh(r.energy_j), f"{100 * r.share:.1f}%", _kwh(r.idle_j), str(r.jobs),
                 _team_per(r), f"{sig(r.kg_co2)} kg" if r.kg_co2 is not None else "unknown",
                 f"{_money(r.cost)} {t['currency']}"] for r in owner_rows[:max_rows]]
        lines += [h(f"{title} (showback; {report.idle_policy.get('text', '')})"),
                  *_table([head, "energy", "share", "of it idle", "jobs", "PER", "CO2", "cost"],
                          body, md)]
    trends = [tr for tr in report.trends if tr.change_pct is not None]  # below: + 0.0 turns -0.0 into 0.0
    if trends:
        body = [[tr.job, f"{tr.baseline:.4g}", f"{tr.latest:.4g}" if tr.latest else "–",
                 signed_pct(tr.change_pct), f"{PER_UNITS[tr.unit]}, {tr.baseline_source}"]
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
                    f"η={report.lam:g})"),
                  *_table(["class", "caps: time, energy per unit", "best cap"], body, md)]
    if report.predictions:
        body = [[p.job, f"{100 * p.progress:.0f}%",
                 f"{_kwh(p.energy_total_j)} [{p.energy_low_j / J_PER_KWH:,.2f}..{p.energy_high_j / J_PER_KWH:,.2f}]",
                 f"{fmt_time(p.finish_ns)}",
                 f"{sig(p.kg_co2)} kg" if p.kg_co2 is not None else "unknown"]
                for p in report.predictions[:max_rows]]
        lines += [h("Predictions (running jobs with a plan)"),
                  *_table(["job", "progress", "energy [95% interval]", "finish", "CO2"], body, md)]
    objectives = _objective_rows(report, max_rows)
    if objectives:
        lines += [h(f"Objective J = E + λ_J·P (λ_J = {sig(report.objective_lambda_j)} J) and trade-off "
                    f"cost η·E + (1−η)·P_max·T (η = {report.lam:g})"),
                  *_table(["job", "E", "P", "J", "trade-off cost", "terms"], objectives, md)]
    if report.sci.get("jobs"):
        headers, body = sci_table_rows(report.sci, max_rows)
        lines += [h("SCI: (E·I + M) per unit of work"), *_table(headers, body, md)]
    if report.autopilot.get("timeline") or report.autopilot.get("groups"):
        from analytics.autopilot import table_rows

        heads, steps, gheads, groups = table_rows(report.autopilot, max_rows)
        saved = report.autopilot
        lines += [h("Power-cap autopilot"),
                  f"energy saved vs the original limits: {_kwh(saved['saved_j'])}"
                  + (f" ({pct1(saved['saved_pct'])} of what they would have used)"
                     if saved["saved_pct"] is not None else ""),
                  *_table(gheads, groups, md), "", *_table(heads, steps, md)]
    lines.append(h("Recommendations"))
    span = t["span_s"]
    if report.recommendations:
        factor = 86400 / span if span > 0 else 0.0
        lines.append(f"savings per day, scaled from {_duration(span)} of data (× {sig(factor)})"
                     + (": too short to extrapolate to a day reliably, treat as indicative"
                        if span < MIN_EXTRAPOLATE_S else ""))
        total = combined(report.recommendations)
        kg = f"{sig(total.kg_co2_per_day)} kg CO2" if total.kg_co2_per_day is not None else \
            "kg CO2 unknown"
        lines.append(f"all together: {sig(total.kwh_per_day)} kWh, {kg}, {sig(total.cost_per_day)} "
                     f"{t['currency']} per day ({total.note})")
    else:
        lines.append("none")
    for i, r in enumerate(report.recommendations, 1):
        kg = f"{sig(r.savings_kg_co2_per_day)} kg CO2" if r.savings_kg_co2_per_day is not None \
            else "kg CO2 unknown"
        lines.append(f"{i}. {r.title}" + ("" if r.measured else " [estimate]"))
        lines.append(f"   saves {sig(r.savings_kwh_per_day)} kWh, {kg}, "
                     f"{sig(r.savings_cost_per_day)} {r.currency} per day")
        lines.append(f"   {r.detail}")
        lines.append(f"   how: {r.estimate_method}")
    if report.notes:
        lines.append(h("Notes"))
        lines += [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
