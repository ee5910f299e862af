"""Reads for alert rules (analytics/alerts) and the alerts the engine recorded."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from analytics.timeutil import Window
from collector.store.base import AggregateQuery, Store


def group_means(store: Store, window: Window, measurement: str, fields: tuple[str, ...],
                by: tuple[str, ...], where: dict[str, str] | None = None,
                ) -> dict[tuple[str, ...], dict[str, float | None]]:
    """Mean of each field per group over the window: {(tag values...): {field: mean}}."""
    rows = store.query(AggregateQuery(measurement, tuple(("mean", f) for f in fields),
                                      window.start_ns, window.end_ns, group_by=by,
                                      where=where or {}))
    return {tuple(r.tags[t] for t in by): {f: r.values.get(f"mean_{f}") for f in fields}
            for r in rows}


def group_mean_buckets(store: Store, window: Window, measurement: str, fields: tuple[str, ...],
                       by: tuple[str, ...], bucket_s: int, where: dict[str, str] | None = None,
                       ) -> dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]]:
    """Means per group and ``bucket_s`` bucket, oldest first: {(tag values...): [(bucket start, {field: mean})]}."""
    rows = store.query(AggregateQuery(measurement, tuple(("mean", f) for f in fields),
                                      window.start_ns, window.end_ns, group_by=by,
                                      bucket_s=bucket_s, where=where or {}))
    out: dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]] = defaultdict(list)
    for r in rows:
        if r.time_ns is not None:
            out[tuple(r.tags[t] for t in by)].append(
                (r.time_ns, {f: r.values.get(f"mean_{f}") for f in fields}))
    return {k: sorted(v, key=lambda b: b[0]) for k, v in out.items()}


def last_seen_ns(store: Store, window: Window, measurement: str, field_name: str,
                 by: tuple[str, ...], bucket_s: int, where: dict[str, str | tuple[str, ...]] | None = None,
                 ) -> dict[tuple[str, ...], int]:
    """Per group, the end of the newest ``bucket_s`` bucket holding a point (when it was last heard from)."""
    rows = store.query(AggregateQuery(measurement, (("count", field_name),), window.start_ns,
                                      window.end_ns, group_by=by, bucket_s=bucket_s,
                                      where=where or {}))
    out: dict[tuple[str, ...], int] = {}
    for r in rows:
        if r.time_ns is None or not r.values.get(f"count_{field_name}"):
            continue
        key = tuple(r.tags[t] for t in by)
        out[key] = max(out.get(key, 0), min(r.time_ns + bucket_s * 1_000_000_000, window.end_ns))
    return out


def deferrable_jobs_running(store: Store, window: Window) -> dict[str, list[str]]:
    """Jobs marked deferrable (job field deferrable=1) that ran in the window: {job: [hosts]}."""
    rows = store.query(AggregateQuery("job", (("max", "deferrable"), ("sum", "active_s")),
                                      window.start_ns, window.end_ns, group_by=("job", "host")))
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if (r.values.get("max_deferrable") or 0) >= 1 and (r.values.get("sum_active_s") or 0) > 0:
            out[r.tags["job"]].append(r.tags["host"])
    return {job: sorted(hosts) for job, hosts in out.items()}


def carbon_intensity_mean(store: Store, window: Window, region: str | None = None) -> float | None:
    """Mean grid intensity (g CO2/kWh) over the window, of one region or averaged over all."""
    rows = store.query(AggregateQuery("carbon", (("mean", "intensity_g_per_kwh"),), window.start_ns,
                                      window.end_ns, group_by=("region",),
                                      where={"region": region} if region else {}))
    values = [v for r in rows if (v := r.values.get("mean_intensity_g_per_kwh")) is not None]
    return sum(values) / len(values) if values else None


def energy_and_co2(store: Store, window: Window, measurement: str, by: tuple[str, ...],
                   region: str | None = None, bucket_s: int = 3600,
                   ) -> dict[tuple[str, ...], tuple[float, float | None]]:
    """Energy (J) and CO2 (g) per group: energy per bucket x that bucket's mean grid intensity.

    A bucket without an intensity reading uses the window's mean; CO2 is None
    when the window has no carbon data at all.
    """
    energy = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                        window.end_ns, group_by=by, bucket_s=bucket_s))
    carbon = store.query(AggregateQuery("carbon", (("mean", "intensity_g_per_kwh"),),
                                        window.start_ns, window.end_ns, bucket_s=bucket_s,
                                        where={"region": region} if region else {}))
    hourly = {r.time_ns: v for r in carbon if (v := r.values.get("mean_intensity_g_per_kwh")) is not None}
    mean = carbon_intensity_mean(store, window, region) if hourly else None
    out: dict[tuple[str, ...], tuple[float, float | None]] = {}
    for r in energy:
        key = tuple(r.tags[t] for t in by)
        joules = r.values.get("sum_energy_j") or 0.0
        e0, c0 = out.get(key, (0.0, None))
        co2 = None if mean is None else (c0 or 0.0) + joules / 3.6e6 * hourly.get(r.time_ns, mean)
        out[key] = (e0 + joules, co2)
    return out


def max_power_limit_w(store: Store, window: Window, model: str) -> float | None:
    """The highest power limit GPUs of one model reported in the window (P_max for cost(λ))."""
    rows = store.query(AggregateQuery("gpu", (("max", "power_limit_w"),), window.start_ns,
                                      window.end_ns, where={"model": model}))
    return rows[0].values.get("max_power_limit_w") if rows else None


@dataclass(frozen=True)
class AlertEvent:
    """One alert transition from the `alert` measurement: state 1 is firing, 0 resolved."""

    rule: str
    severity: str
    target: str
    time_ns: int
    state: int
    value: float | None


def alert_events(store: Store, window: Window) -> list[AlertEvent]:
    """Every firing/resolved transition in the window, oldest first (one-second buckets: transitions are rare)."""
    rows = store.query(AggregateQuery(
        "alert", (("max", "state"), ("min", "state"), ("max", "value")), window.start_ns,
        window.end_ns, group_by=("rule", "severity", "target"), bucket_s=1))
    out = []
    for r in rows:
        if r.time_ns is None or r.values.get("max_state") is None:
            continue
        hi, lo = r.values["max_state"], r.values.get("min_state")
        states = [1, 0] if lo is not None and hi is not None and lo < hi else [int((hi or 0) >= 0.5)]
        for state in states:
            out.append(AlertEvent(r.tags["rule"], r.tags["severity"], r.tags["target"], r.time_ns,
                                  state, r.values.get("max_value")))
    return sorted(out, key=lambda e: (e.time_ns, e.rule, e.target, -e.state))
