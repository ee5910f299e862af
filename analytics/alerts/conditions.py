"""What each rule kind observes at one instant: per target a value, whether it breaches, and whether it still holds."""

from __future__ import annotations

import fnmatch
import math
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from analytics import queries
from analytics.alerts.rules import Rule, format_duration
from analytics.levels import job_totals
from analytics.per import primary_unit
from analytics.timeutil import Window
from collector.store.base import Store

NS = 1_000_000_000
J_PER_KWH = 3.6e6
MAX_HISTORY_BUCKETS = 720  # the history behind a long `for` is read in at most this many buckets


@dataclass(frozen=True)
class Observation:
    """One target of one rule at one evaluation.

    ``enter`` is the breach that starts an alert; ``stay`` is the looser test
    (moved by the rule's hysteresis) that keeps a pending or firing alert
    going. ``since_ns`` is set when the data itself shows when the condition
    began (an absence rule knows when a host last spoke).
    """

    target: str
    value: float
    enter: bool
    stay: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    threshold: float | None = None
    summary: str = ""
    since_ns: int | None = None


Observer = Callable[[Rule, Store, int], list[Observation]]


def observe(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    """Evaluate ``rule`` over the data up to ``now_ns``; raises the store's errors (the engine isolates them)."""
    obs = _OBSERVERS[rule.kind](rule, store, now_ns)
    return [_with_summary(rule, o) for o in obs]


def _window(now_ns: int, seconds: float) -> Window:
    return Window(now_ns - int(seconds * NS), now_ns)


def gpu_target(host: str, gpu: str) -> str:
    """The target string of one GPU: ``node-01/gpu6``."""
    return f"{host}/gpu{gpu}"


def _cap_limit(p: Mapping[str, object], means: Mapping[str, float | None]) -> float | None:
    """A threshold rule's limit in W for one GPU: ``above_w``, or a percentage of its power limit."""
    if p.get("above_w") is not None:
        return float(p["above_w"])  # type: ignore[arg-type]
    cap = means.get("power_limit_w")
    if cap is None:
        return None  # no power limit reported: a cap-relative rule cannot judge this GPU
    return cap * float(p["above_cap_pct"]) / 100  # type: ignore[arg-type]


def _threshold_enters(p: Mapping[str, object]) -> Callable[[Mapping[str, float | None]], bool]:
    def enters(means: Mapping[str, float | None]) -> bool:
        power, limit = means.get("power_w"), _cap_limit(p, means)
        return power is not None and limit is not None and power > limit
    return enters


def _idle_enters(p: Mapping[str, object]) -> Callable[[Mapping[str, float | None]], bool]:
    limit, util_below = float(p["above_w"]), float(p["util_below_pct"])  # type: ignore[arg-type]

    def enters(means: Mapping[str, float | None]) -> bool:
        power, util = means.get("power_w"), means.get("util_pct")
        return power is not None and util is not None and util < util_below and power > limit
    return enters


def _held_since(rule: Rule, store: Store, now_ns: int, fields: tuple[str, ...],
                keys: set[tuple[str, ...]], enters: Callable[[Mapping[str, float | None]], bool],
                ) -> dict[tuple[str, ...], int]:
    """Per GPU, since when the stored history shows the condition held without a break (up to ``for`` back).

    So ``for`` is judged against the data already there: a GPU idle all day
    fires at the first evaluation instead of waiting ``for`` in pending. The
    history is read in buckets of the rule's ``window`` (coarser for a long
    ``for``); a missing bucket or one that does not breach ends the run.
    """
    if rule.for_s <= 0 or not keys:
        return {}
    p = rule.params
    lookback_s = rule.for_s + float(p["window"])
    bucket_s = max(1, int(p["window"]), math.ceil(lookback_s / MAX_HISTORY_BUCKETS))
    window = _window(now_ns, lookback_s)
    match = dict(p.get("match") or {})
    where = match if "host" in match else {**match, "host": tuple(sorted({k[0] for k in keys}))}
    history = queries.group_mean_buckets(store, window, "gpu", fields, ("host", "gpu", "model"),
                                         bucket_s, where=where)
    step = bucket_s * NS
    out: dict[tuple[str, ...], int] = {}
    for key in keys:
        since, expected = None, None
        for t, means in reversed(history.get(key, [])):
            if (t + 2 * step < now_ns) if expected is None else (t != expected):
                break  # a gap in the data: the condition is not known to have held through it
            if not enters(means):
                break
            since, expected = max(t, window.start_ns), t - step
        if since is not None:
            out[key] = since
    return out


def _gpu_rule(rule: Rule, store: Store, now_ns: int, fields: tuple[str, ...],
              enters: Callable[[Mapping[str, float | None]], bool],
              stays: Callable[[Mapping[str, float | None]], bool],
              describe: Callable[[str, Mapping[str, float | None], float], str]) -> list[Observation]:
    """Threshold and idle waste: per GPU the mean over ``window``, and since when the breach held."""
    p = rule.params
    data = queries.group_means(store, _window(now_ns, p["window"]), "gpu", fields,
                               ("host", "gpu", "model"), where=dict(p.get("match") or {}))
    # a GPU without the readings the rule needs is not judged (power_limit_w: only for above_cap_pct)
    judged = {k: v for k, v in data.items() if _cap_limit(p, v) is not None
              and all(v.get(f) is not None for f in fields if f != "power_limit_w")}
    since = _held_since(rule, store, now_ns, fields, {k for k, v in judged.items() if enters(v)},
                        enters)
    out = []
    for key, v in sorted(judged.items()):
        host, gpu, model = key
        limit = _cap_limit(p, v)
        assert limit is not None and v["power_w"] is not None
        target = gpu_target(host, gpu)
        out.append(Observation(target, v["power_w"], enters(v), stays(v),
                               {"host": host, "gpu": gpu, "model": model}, limit,
                               describe(target, v, limit), since_ns=since.get(key)))
    return out


def _threshold(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params

    def stays(v: Mapping[str, float | None]) -> bool:
        limit = _cap_limit(p, v)
        return limit is not None and (v["power_w"] or 0.0) > limit - rule.hysteresis

    return _gpu_rule(rule, store, now_ns, ("power_w", "power_limit_w"), _threshold_enters(p), stays,
                     lambda t, v, limit: f"{t} drew {v['power_w']:.0f} W (limit {limit:.0f} W)")


def _idle_waste(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params
    stays = _idle_enters({**p, "above_w": float(p["above_w"]) - rule.hysteresis})
    return _gpu_rule(rule, store, now_ns, ("power_w", "util_pct"), _idle_enters(p), stays,
                     lambda t, v, _limit: f"{t} idle ({v['util_pct']:.1f} % util) drawing "
                                          f"{v['power_w']:.0f} W")


def _trend(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params
    window_s, base_s = float(p["window"]), float(p["baseline_window"])
    current = job_totals(store, _window(now_ns, window_s))
    baseline: dict[str, dict[str, float]] = {}
    if p.get("baseline_per") is None:
        end = now_ns - int(window_s * NS)
        baseline = {name: j.per for name, j in job_totals(store, _window(end, base_s)).items()}
    out = []
    for _name, job in sorted(current.items()):
        if not fnmatch.fnmatchcase(job.job, p["job"]):
            continue
        unit = primary_unit(job.work) if p["unit"] == "auto" else p["unit"]
        if unit is None or unit not in job.per:
            continue
        base = p.get("baseline_per") or baseline.get(job.job, {}).get(unit)
        if not base:
            continue  # no baseline yet: a new job cannot have dropped
        now_per = job.per[unit]
        drop_pct = 100.0 * (1.0 - now_per / base)
        limit = float(p["drop_pct"])
        out.append(Observation(
            job.job, drop_pct, drop_pct > limit, drop_pct > limit - rule.hysteresis,
            {"job": job.job, "hosts": ",".join(sorted(job.hosts)), "unit_per": f"{unit}/J"}, limit,
            f"job {job.job} PER down {drop_pct:.1f} % against its baseline "
            f"({now_per:.4g} vs {base:.4g} {unit}/J)"))
    return out


def _absence(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params
    measurement = p["measurement"]
    by = ("host", "gpu") if p["per"] == "gpu" else ("host",)
    fld = "energy_j"
    match = dict(p.get("match") or {})
    known = set(queries.group_means(store, _window(now_ns, p["known_within"]), measurement,
                                    (fld,), by, where=match))
    # A target counts as silent once it has missed a minute (or the whole `for`, if shorter);
    # it is pending from its last point and fires when the silence reaches `for`.
    stale_s = min(60.0, rule.for_s)
    present = set(queries.group_means(store, _window(now_ns, stale_s), measurement, (fld,), by,
                                      where=match))
    silent = sorted(known - present)
    if not silent:
        return []
    bucket_s = max(1, min(60, int(rule.for_s // 10) or 1))
    hosts = tuple(sorted({k[0] for k in silent}))
    seen = queries.last_seen_ns(store, _window(now_ns, p["known_within"]), measurement, fld, by,
                                bucket_s, where={**match, "host": hosts})
    out = []
    for key in silent:
        last = seen.get(key)
        if last is None:
            continue
        silence_s = (now_ns - last) / NS
        target = gpu_target(*key) if len(key) == 2 else key[0]
        labels = dict(zip(by, key, strict=True))
        out.append(Observation(
            target, silence_s, True, True, labels, rule.for_s,
            f"no {measurement} data from {target} for {format_duration(round(silence_s))}",
            since_ns=last))
    return out


def _carbon(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params
    window = _window(now_ns, p["window"])
    intensity = queries.carbon_intensity_mean(store, window, p.get("region"))
    if intensity is None:
        return []
    limit = float(p["above_g_per_kwh"])
    out = []
    for job, hosts in sorted(queries.deferrable_jobs_running(store, window).items()):
        if not fnmatch.fnmatchcase(job, p["job"]):
            continue
        labels = {"job": job, "hosts": ",".join(hosts)}
        if p.get("region"):
            labels["region"] = p["region"]
        out.append(Observation(
            job, intensity, intensity > limit, intensity > limit - rule.hysteresis, labels, limit,
            f"deferrable job {job} running at {intensity:.0f} gCO2/kWh (limit {limit:g})"))
    return out


def budget_window(period: float | str, now_ns: int) -> Window:
    """The budget's accounting window: rolling seconds, or the current UTC day, ISO week or month."""
    if not isinstance(period, str):
        return _window(now_ns, period)
    now = datetime.fromtimestamp(now_ns / NS, tz=UTC)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        start -= timedelta(days=start.weekday())
    elif period == "month":
        start = start.replace(day=1)
    start_ns = int(start.timestamp()) * NS
    return Window(start_ns, max(now_ns, start_ns + 1))


def _budget(rule: Rule, store: Store, now_ns: int) -> list[Observation]:
    p = rule.params
    window = budget_window(p["period"], now_ns)
    co2 = p.get("max_kg_co2") is not None
    limit = float(p["max_kg_co2"] if co2 else p["max_kwh"])
    period = p["period"] if isinstance(p["period"], str) else format_duration(p["period"])
    totals: dict[str, tuple[float, float | None]] = {}
    if p["scope"] == "job":
        if co2:
            for (job,), v in queries.energy_and_co2(store, window, "job", ("job",),
                                                    p.get("region")).items():
                totals[job] = v
        else:
            for (job,), joules in queries.energy_by(store, window, "job", ("job",)).items():
                totals[job] = (joules, None)
        totals = {k: v for k, v in totals.items() if fnmatch.fnmatchcase(k, p["job"])}
    else:
        joules, seen = 0.0, False
        grams: float | None = 0.0
        for measurement in ("gpu", "cpu"):
            if co2:
                for e, g in queries.energy_and_co2(store, window, measurement, (),
                                                   p.get("region")).values():
                    seen = True
                    joules += e
                    grams = None if g is None or grams is None else grams + g
            else:
                for e in queries.energy_by(store, window, measurement, ()).values():
                    seen = True
                    joules += e
        if seen:
            totals["fleet"] = (joules, grams if co2 else None)
    out = []
    for target, (joules, grams) in sorted(totals.items()):
        if co2:
            if grams is None:
                continue  # no carbon data: a CO2 budget cannot be judged
            value, unit = grams / 1000, "kg CO2"
        else:
            value, unit = joules / J_PER_KWH, "kWh"
        labels = {"scope": p["scope"], "period": period}
        if p["scope"] == "job":
            labels["job"] = target
        out.append(Observation(
            target, value, value > limit, value > limit - rule.hysteresis, labels, limit,
            f"{target} used {value:.2f} {unit} this {period}, over its budget of {limit:g} {unit}"))
    return out


_OBSERVERS: dict[str, Observer] = {
    "threshold": _threshold,
    "idle_waste": _idle_waste,
    "trend": _trend,
    "absence": _absence,
    "carbon": _carbon,
    "budget": _budget,
}


class _Blank(dict[str, object]):
    def __missing__(self, key: str) -> object:
        return ""


def _with_summary(rule: Rule, o: Observation) -> Observation:
    if not rule.summary:
        return o
    values: dict[str, object] = _Blank({**o.labels, "rule": rule.name, "kind": rule.kind,
                                        "severity": rule.severity, "target": o.target,
                                        "unit": rule.unit})
    values["value"] = o.value
    values["threshold"] = o.threshold if o.threshold is not None else float("nan")
    try:
        text = string.Formatter().vformat(rule.summary, (), values)
    except (ValueError, TypeError):
        text = o.summary  # a format spec that does not fit the value: keep the built-in line
    return Observation(o.target, o.value, o.enter, o.stay, o.labels, o.threshold, text, o.since_ns)
