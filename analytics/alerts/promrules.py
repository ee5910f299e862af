"""Export alert rules as Prometheus alerting rules over the agent exporter's metrics (collector/exporter.py)."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from analytics.alerts.rules import Rule, RuleSet, format_duration

# The exporter's metric names (collector/exporter.py); labels in comments.
GPU_POWER = "wattlens_gpu_power_watts"  # host, gpu, uuid, model
GPU_UTIL = "wattlens_gpu_utilization_ratio"  # 0-1
GPU_POWER_LIMIT = "wattlens_gpu_power_limit_watts"
GPU_ENERGY = "wattlens_gpu_energy_joules_total"
CPU_POWER = "wattlens_cpu_power_watts"  # host, domain
CPU_ENERGY = "wattlens_cpu_energy_joules_total"
JOB_ENERGY = "wattlens_job_energy_joules_total"  # job, host
JOB_WORK = {u: f"wattlens_job_{u}_total" for u in ("samples", "tokens", "steps", "flops")}
AUTO_UNIT_ORDER = ("tokens", "samples", "flops", "steps")  # analytics.per.primary_unit's order
PRESENCE_METRIC = {"gpu": GPU_POWER, "cpu": CPU_POWER, "job": JOB_ENERGY}
GPU_KEY = ("host", "gpu")
J_PER_KWH = 3.6e6


@dataclass
class Export:
    """Prometheus rules as YAML text, and the rules that could not be expressed (name -> why)."""

    yaml: str
    exported: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class NotExportable(Exception):
    """A rule Prometheus cannot evaluate over the exporter's metrics; the message says why."""


def _q(text: str) -> str:
    """A PromQL (and YAML) double-quoted string."""
    return json.dumps(text, ensure_ascii=False)


def _selector(metric: str, match: Mapping[str, str], extra: str = "") -> str:
    parts = [f"{k}={_q(v)}" for k, v in sorted(match.items())]
    if extra:
        parts.append(extra)
    return f"{metric}{{{','.join(parts)}}}" if parts else metric


_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def glob_to_re2(pattern: str) -> str:
    """A shell glob (*, ?, [..]) as an RE2 regex for PromQL's fully anchored ``=~``."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(r"\[")
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append("\\" + ch if ch in _RE2_SPECIAL else ch)
        i += 1
    return "".join(out)


def _job_matcher(pattern: str) -> str:
    return "" if pattern == "*" else f"job=~{_q(glob_to_re2(pattern))}"


def _with_hysteresis(rule: Rule, enter: str, stay: str, on: tuple[str, ...]) -> str:
    """``enter or (stay and still firing)``: Prometheus' way to hold an alert until the value clears by more."""
    if not rule.hysteresis:
        return enter
    firing = f"ALERTS{{alertname={_q(rule.name)},alertstate=\"firing\"}}"
    return f"({enter}) or ({stay} and on ({', '.join(on)}) {firing})"


def _threshold(rule: Rule) -> tuple[str, str]:
    p = rule.params
    w = format_duration(p["window"])
    power = f"avg_over_time({_selector(GPU_POWER, p['match'])}[{w}])"
    if p.get("above_w") is not None:
        x = float(p["above_w"])
        expr = _with_hysteresis(rule, f"{power} > {x:g}", f"{power} > {x - rule.hysteresis:g}",
                                GPU_KEY)
        limit = f"{x:g} W"
    else:
        frac = float(p["above_cap_pct"]) / 100
        cap = f"avg_over_time({_selector(GPU_POWER_LIMIT, p['match'])}[{w}])"
        expr = _with_hysteresis(rule, f"{power} > {frac:g} * {cap}",
                                f"{power} > {frac:g} * {cap} - {rule.hysteresis:g}", GPU_KEY)
        limit = f"{float(p['above_cap_pct']):g} % of its power limit"
    return expr, ("{{ $labels.host }}/gpu{{ $labels.gpu }} drew {{ $value | printf \"%.0f\" }} W "
                  f"(limit {limit})")


def _idle_waste(rule: Rule) -> tuple[str, str]:
    p = rule.params
    w = format_duration(p["window"])
    power = f"avg_over_time({_selector(GPU_POWER, p['match'])}[{w}])"
    idle = (f"avg_over_time({_selector(GPU_UTIL, p['match'])}[{w}]) < "
            f"{float(p['util_below_pct']) / 100:g}")
    y = float(p["above_w"])
    on = "on (host, gpu, uuid, model)"
    expr = _with_hysteresis(rule, f"{power} > {y:g} and {on} {idle}",
                            f"{power} > {y - rule.hysteresis:g} and {on} {idle}", GPU_KEY)
    return expr, ("{{ $labels.host }}/gpu{{ $labels.gpu }} idle (below "
                  f"{float(p['util_below_pct']):g} % util) drawing "
                  "{{ $value | printf \"%.0f\" }} W")


def _per(unit: str, rng: str, offset: str, job: str) -> str:
    sel_w = _selector(JOB_WORK[unit], {}, job)
    sel_e = _selector(JOB_ENERGY, {}, job)
    return (f"sum by (job) (rate({sel_w}[{rng}]{offset})) / "
            f"sum by (job) (rate({sel_e}[{rng}]{offset}))")


def _trend(rule: Rule) -> tuple[str, str]:
    p = rule.params
    w = format_duration(p["window"])
    bw = format_duration(p["baseline_window"])
    job = _job_matcher(p["job"])
    units = AUTO_UNIT_ORDER if p["unit"] == "auto" else (p["unit"],)
    ratios = []
    for unit in units:
        if p.get("baseline_per") is not None:
            ratios.append(f"({_per(unit, w, '', job)}) / {float(p['baseline_per']):g}")
        else:
            ratios.append(f"({_per(unit, w, '', job)}) / ({_per(unit, bw, f' offset {w}', job)})")
    ratio = ratios[0] if len(ratios) == 1 else " or ".join(f"({r})" for r in ratios)
    drop = f"100 * (1 - ({ratio}))"
    x = float(p["drop_pct"])
    expr = _with_hysteresis(rule, f"{drop} > {x:g}", f"{drop} > {x - rule.hysteresis:g}", ("job",))
    return expr, "job {{ $labels.job }} PER down {{ $value | printf \"%.1f\" }} % against its baseline"


def _absence(rule: Rule) -> tuple[str, str]:
    p = rule.params
    metric = PRESENCE_METRIC[p["measurement"]]
    sel = _selector(metric, p["match"])
    by = "host, gpu" if p["per"] == "gpu" else "host"
    known = format_duration(p["known_within"])
    silent = format_duration(rule.for_s)
    expr = (f"count by ({by}) (last_over_time({sel}[{known}])) unless "
            f"count by ({by}) (present_over_time({sel}[{silent}]))")
    target = "{{ $labels.host }}/gpu{{ $labels.gpu }}" if p["per"] == "gpu" else "{{ $labels.host }}"
    return expr, f"no {p['measurement']} data from {target} for {silent}"


def _budget(rule: Rule) -> tuple[str, str]:
    p = rule.params
    if isinstance(p["period"], str):
        raise NotExportable(f"calendar period {p['period']!r}: PromQL windows are rolling; "
                            f"use a rolling period such as 24h or 30d to export this rule")
    if p.get("max_kg_co2") is not None:
        raise NotExportable("CO2 budgets weigh each hour's energy by that hour's grid intensity, "
                            "which a PromQL rule over counters cannot do exactly")
    period = format_duration(p["period"])
    b = float(p["max_kwh"])
    if p["scope"] == "job":
        sel = _selector(JOB_ENERGY, {}, _job_matcher(p["job"]))
        kwh = f"sum by (job) (increase({sel}[{period}])) / {J_PER_KWH:g}"
        on: tuple[str, ...] = ("job",)
        what = "job {{ $labels.job }}"
    else:
        kwh = (f"((sum(increase({GPU_ENERGY}[{period}])) or vector(0)) + "
               f"(sum(increase({CPU_ENERGY}[{period}])) or vector(0))) / {J_PER_KWH:g}")
        on = ()
        what = "the fleet"
    expr = _with_hysteresis(rule, f"{kwh} > {b:g}", f"{kwh} > {b - rule.hysteresis:g}", on)
    return expr, f"{what} used {{{{ $value | printf \"%.2f\" }}}} kWh in {period}, over its budget of {b:g} kWh"


def _carbon(rule: Rule) -> tuple[str, str]:
    raise NotExportable("the exporter publishes no deferrable flag for jobs, so Prometheus cannot "
                        "tell which running jobs could wait; evaluate it with `wattlens alerts run`")


_BUILDERS = {"threshold": _threshold, "idle_waste": _idle_waste, "trend": _trend,
             "absence": _absence, "budget": _budget, "carbon": _carbon}


def _summary_template(rule: Rule, default: str) -> str:
    """A rule's own summary template in Prometheus' template language, or the built-in one."""
    if not rule.summary:
        return default
    targets = {"threshold": "{{ $labels.host }}/gpu{{ $labels.gpu }}",
               "idle_waste": "{{ $labels.host }}/gpu{{ $labels.gpu }}", "trend": "{{ $labels.job }}",
               "absence": "{{ $labels.host }}", "carbon": "{{ $labels.job }}",
               "budget": "{{ $labels.job }}" if rule.params.get("scope") == "job" else "fleet"}
    out = []
    for literal, name, _spec, _ in string.Formatter().parse(rule.summary):
        out.append(literal)  # parse() already turned "{{" into "{"
        if name is None:
            continue
        if name == "value":
            out.append('{{ $value | printf "%.4g" }}')
        elif name == "target":
            out.append(targets[rule.kind])
        elif name == "threshold":
            out.append(f"{rule.threshold:g}" if rule.threshold is not None else "")
        elif name in ("rule", "kind", "severity", "unit"):
            out.append({"rule": rule.name, "kind": rule.kind, "severity": rule.severity,
                        "unit": rule.unit}[name])
        else:
            out.append(f"{{{{ $labels.{name} }}}}")
    return "".join(out)


def export_rules(ruleset: RuleSet, group: str = "wattlens") -> Export:
    """Prometheus alerting rules (YAML) for every rule that can be expressed over the exporter's metrics."""
    exp = Export("")
    lines = [f"# Generated by `wattlens alerts export-prometheus-rules` from {ruleset.source}.",
             "# Metrics are those of the wattlens agent's /metrics (collector/exporter.py)."]
    body = ["groups:", f"  - name: {_q(group)}", "    rules:"]
    for rule in ruleset.rules:
        try:
            expr, summary = _BUILDERS[rule.kind](rule)
        except NotExportable as exc:
            exp.skipped[rule.name] = str(exc)
            continue
        exp.exported.append(rule.name)
        for_s = 0.0 if rule.kind == "absence" else rule.for_s
        body.append(f"      - alert: {_q(rule.name)}")
        body.append(f"        expr: {_q(expr)}")
        if for_s:
            body.append(f"        for: {format_duration(for_s)}")
        labels = {**rule.labels, "severity": rule.severity, "kind": rule.kind}
        body.append("        labels:")
        body.extend(f"          {k}: {_q(v)}" for k, v in sorted(labels.items()))
        body.append("        annotations:")
        body.append(f"          summary: {_q(_summary_template(rule, summary))}")
        unit = rule.unit
        body.append(f"          unit: {_q(unit)}")
    for name, why in exp.skipped.items():
        lines.append(f"# Not exported: {name}: {why}")
    if not exp.exported:
        body = ["groups: []"]
    exp.yaml = "\n".join([*lines, *body]) + "\n"
    return exp
