"""View models: what each page shows, read through analytics and shaped for the components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analytics import queries
from analytics.per import PER_UNITS, primary_unit
from analytics.queries import Series
from analytics.timeutil import NS, Window, bucket_for
from collector.store.base import AggregateQuery, Store
from dashboard import units

RANGES_S = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
CHART_WIDTH_PX = 1200  # buckets are sized to the chart: about one per pixel at most


@dataclass
class FleetView:
    window: Window
    power: list[Series]
    kpis: list[tuple[str, str, str]]  # (label, value, note)
    jobs: list[dict[str, Any]]
    simulated: bool
    estimated: bool
    empty: bool


def window_for(store: Store, range_key: str) -> Window:
    """The window ending at the newest GPU point (or now), so a stopped demo store still shows data."""
    seconds = RANGES_S.get(range_key, 86400)
    span = store.time_range("gpu")
    end = span[1] + 1 if span else None
    return Window.last(seconds, end_ns=end)


def fleet_view(store: Store, range_key: str, by: str) -> FleetView:
    window = window_for(store, range_key)
    bucket = bucket_for(window, min(CHART_WIDTH_PX, 600))
    power = queries.fleet_power(store, window, bucket, by=by)
    recent = Window(max(window.start_ns, window.end_ns - 5 * 60 * NS), window.end_ns)
    latest = queries.latest_power_w(store, recent)
    totals = queries.fleet_totals(store, window)
    jobs = queries.job_summaries(store, window)
    methods = set(store.tag_values("gpu", "method", window.start_ns, window.end_ns))
    methods |= set(store.tag_values("cpu", "method", window.start_ns, window.end_ns))
    unit = primary_unit(totals.work)
    fleet_per = (totals.work.get(unit, 0.0) / totals.gpu_energy_j
                 if unit and totals.gpu_energy_j else None)
    pue = (totals.facility_energy_j / totals.it_energy_j
           if totals.facility_energy_j and totals.it_energy_j else None)
    kpis = [
        ("GPU power now", units.power(sum(latest.values()) if latest else None),
         f"{len(latest)} GPUs reporting"),
        (f"GPU energy ({range_key})", units.energy(totals.gpu_energy_j),
         f"CPU {units.energy(totals.cpu_energy_j)}"),
        ("Fleet PER", units.per(fleet_per, PER_UNITS[unit]) if unit else "–",
         "work per GPU joule"),
        ("PUE", f"{pue:.2f}" if pue else "–", "facility / IT energy"),
    ]
    return FleetView(window, power, kpis, [job_row(j) for j in jobs],
                     simulated="simulated" in methods, estimated="estimated" in methods,
                     empty=not power)


def job_row(j: queries.JobSummary) -> dict[str, Any]:
    unit = primary_unit(j.work)
    value = j.per.get(unit) if unit else None
    return {
        "job": j.job,
        "kind": j.kind,
        "precision": j.precision,
        "gpus": j.gpus,
        "gpu_model": j.gpu_model.replace("NVIDIA ", ""),
        "energy_kwh": round(j.energy_j / 3.6e6, 3),
        "work": f"{j.work[unit]:,.0f} {unit}" if unit else "–",
        "per": units.per(value, PER_UNITS[unit]) if unit else "–",
        "per_value": value,
        "power_kw": round(j.mean_power_w / 1000, 2) if j.mean_power_w else None,
    }


def has_measurement(store: Store, measurement: str, window: Window) -> bool:
    rows = store.query(AggregateQuery(measurement, (("count", "energy_j"),),
                                      window.start_ns, window.end_ns))
    return bool(rows and (rows[0].values.get("count_energy_j") or 0) > 0)
