"""GPU health with the energy angle: temperature, clocks, memory use and power against the limit per
GPU, next to the PER of the node it serves, flagging a GPU that is throttled, hot or held at its cap.

Reads go through analytics.queries; everything here is pure arithmetic on what they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from analytics import queries
from analytics.per import per_by_unit, primary_unit
from analytics.timeutil import Window, bucket_for
from collector.store.base import Store

HOT_C = 83.0  # NVIDIA data-centre GPUs start slowing down around 85-87 °C (slowdown temperature)
AT_CAP_PCT = 95.0  # mean power within 5 % of the limit: the cap, not the work, sets the pace
CLOCK_LOW_RATIO = 0.85  # busy, but the SM clock is under 85 % of the best seen on the same model
BUSY_UTIL_PCT = 50.0
THROTTLED_SHARE = 0.05  # throttle reasons active in over 5 % of the time
MAX_POINTS = 240  # per GPU trace: 32+ traces share a chart


@dataclass(frozen=True)
class HealthFilter:
    """Which GPUs: by node (host), GPU model, the hosts a job ran on, or the hosts a team's jobs ran
    on (the job points' ``team`` tag, as analytics.filters). Empty means all."""

    node: str = ""
    model: str = ""
    job: str = ""
    team: str = ""

    def where(self) -> dict[str, str | tuple[str, ...]]:
        out: dict[str, str | tuple[str, ...]] = {}
        if self.node:
            out["host"] = self.node
        if self.model:
            out["model"] = self.model
        return out


@dataclass
class GpuHealth:
    """One GPU over the window: means of its health fields, the node's PER, and what stands out."""

    host: str
    gpu: str
    model: str
    temp_c: float | None
    temp_peak_c: float | None
    sm_clock_mhz: float | None
    mem_clock_mhz: float | None
    mem_util_pct: float | None
    util_pct: float | None
    power_w: float | None
    power_limit_w: float | None
    throttle_share: float | None  # fraction of the time a power or thermal throttle reason was set
    node_per: float | None = None
    per_unit: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.host}/gpu{self.gpu}"

    @property
    def power_pct(self) -> float | None:
        if self.power_w is None or not self.power_limit_w:
            return None
        return 100.0 * self.power_w / self.power_limit_w


@dataclass(frozen=True)
class HealthView:
    """Every GPU's summary row, flagged first; the series over time ({field: [values]}) of the
    first ``lines`` of them, the ones the charts draw; and, past those, the mean of all of them."""

    window: Window
    gpus: list[GpuHealth]
    times_ns: dict[str, list[int]]
    series: dict[str, dict[str, list[float | None]]]
    mean_times_ns: list[int] = field(default_factory=list)  # empty: every GPU has its line
    mean_series: dict[str, list[float | None]] = field(default_factory=dict)


def _throttle(b: Mapping[str, float | None]) -> float | None:
    """The share of the time a power or thermal throttle reason was set: the two shares added,
    at most 1 (a sample with both counts once only where they do not overlap)."""
    parts = [b.get("throttle_power"), b.get("throttle_thermal")]
    known = [p for p in parts if p is not None]
    return min(1.0, sum(known)) if known else None


def chart_series(buckets: Sequence[Mapping[str, float | None]]) -> dict[str, list[float | None]]:
    """What the health charts draw from a run of buckets' means: each field, power as a share of
    the limit and the throttled share, in percent."""
    return {
        "temp_c": [b["temp_c"] for b in buckets],
        "sm_clock_mhz": [b["sm_clock_mhz"] for b in buckets],
        "mem_clock_mhz": [b["mem_clock_mhz"] for b in buckets],
        "mem_util_pct": [b["mem_util_pct"] for b in buckets],
        "power_pct": [None if b["power_w"] is None or not b["power_limit_w"]
                      else 100.0 * b["power_w"] / b["power_limit_w"] for b in buckets],
        "throttle_pct": [None if (t := _throttle(b)) is None else 100.0 * t for b in buckets],
    }


def flags_for(g: GpuHealth, best_clock: float | None) -> list[str]:
    """What stands out on a GPU, each a short phrase with its number."""
    out = []
    pct = g.power_pct
    if g.throttle_share is not None and g.throttle_share >= THROTTLED_SHARE:
        out.append(f"throttled {100 * g.throttle_share:.0f} % of the time")
    if g.temp_peak_c is not None and g.temp_peak_c >= HOT_C:
        out.append(f"hot: {g.temp_peak_c:.0f} °C")
    if pct is not None and pct >= AT_CAP_PCT:
        out.append(f"at its power cap ({pct:.0f} % of {g.power_limit_w:.0f} W)")
    if (best_clock and g.sm_clock_mhz is not None and (g.util_pct or 0) >= BUSY_UTIL_PCT
            and g.sm_clock_mhz < CLOCK_LOW_RATIO * best_clock):
        out.append(f"SM clock {g.sm_clock_mhz:.0f} MHz, {100 * g.sm_clock_mhz / best_clock:.0f} % "
                   f"of the best on {g.model}")
    return out


def gpu_health(store: Store, window: Window, flt: HealthFilter = HealthFilter(),
               lines: int = 16) -> HealthView:
    """Every GPU matching the filter over the window, flagged first, with the node's PER; the
    series of the first ``lines`` (the charts' lines) and, past them, the mean of all."""
    where = flt.where()
    if flt.job or flt.team:
        hosts = _hosts_of(store, window, flt)
        if not hosts:
            return HealthView(window, [], {}, {})
        where["host"] = tuple(sorted(hosts))
    work = queries.job_work_by_host(store, window)
    gpus = []
    for (host, gpu, model), m in sorted(queries.gpu_health_summary(store, window, where).items()):
        g = GpuHealth(host, gpu, model, m["temp_c"], m["peak_temp_c"], m["sm_clock_mhz"],
                      m["mem_clock_mhz"], m["mem_util_pct"], m["util_pct"], m["power_w"],
                      m["power_limit_w"], _throttle(m))
        host_work, host_energy = work.get(host, ({}, 0.0))
        unit = primary_unit(host_work)
        if unit:
            g.per_unit, g.node_per = unit, per_by_unit(host_work, host_energy).get(unit)
        gpus.append(g)
    best: dict[str, float] = {}
    for g in gpus:
        if g.sm_clock_mhz is not None and (g.util_pct or 0) >= BUSY_UTIL_PCT:
            best[g.model] = max(best.get(g.model, 0.0), g.sm_clock_mhz)
    for g in gpus:
        g.flags = flags_for(g, best.get(g.model))
    gpus.sort(key=lambda g: (-len(g.flags), g.name))
    bucket_s = bucket_for(window, MAX_POINTS)
    times, series = _drawn_series(store, window, bucket_s, where, gpus[:lines])
    mean_times: list[int] = []
    mean: dict[str, list[float | None]] = {}
    if len(gpus) > lines:
        rows = queries.gpu_health_buckets(store, window, bucket_s, where, group_by=()).get((), [])
        mean_times, mean = [t for t, _b in rows], chart_series([b for _t, b in rows])
    return HealthView(window, gpus, times, series, mean_times, mean)


def _drawn_series(store: Store, window: Window, bucket_s: int,
                  where: dict[str, str | tuple[str, ...]], drawn: list[GpuHealth],
                  ) -> tuple[dict[str, list[int]], dict[str, dict[str, list[float | None]]]]:
    """Bucket times and chart series of the GPUs drawn, read for their hosts only."""
    names = {(g.host, g.gpu, g.model): g.name for g in drawn}
    times: dict[str, list[int]] = {}
    series: dict[str, dict[str, list[float | None]]] = {}
    if not names:
        return times, series
    only = {**where, "host": tuple(sorted({g.host for g in drawn}))}
    for key, rows in queries.gpu_health_buckets(store, window, bucket_s, only).items():
        if key in names:
            times[names[key]] = [t for t, _b in rows]
            series[names[key]] = chart_series([b for _t, b in rows])
    return times, series


def _hosts_of(store: Store, window: Window, flt: HealthFilter) -> set[str]:
    """The hosts a job filter, a team filter (its jobs' hosts) and a node filter all keep."""
    found: list[set[str]] = []
    if flt.job:
        found.append(set(queries.hosts_of_job(store, window, flt.job)))
    if flt.team:
        found.append({host for (_job, host, team) in queries.job_energy_by_tags(
            store, window, ("team",)) if team == flt.team})
    hosts = set.intersection(*found)
    return {h for h in hosts if h == flt.node} if flt.node else hosts
