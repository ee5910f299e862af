"""GPU health with the energy angle: temperature, clocks, memory use and power against the limit per
GPU, next to the PER of the node it serves, flagging a GPU that is throttled, hot or held at its cap.

Reads go through analytics.queries; everything here is pure arithmetic on what they return.
"""

from __future__ import annotations

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
    """Per GPU: the summary row and its series over time ({field: [values]} on shared times)."""

    window: Window
    gpus: list[GpuHealth]
    times_ns: dict[str, list[int]]
    series: dict[str, dict[str, list[float | None]]]
    has_throttle: bool


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _throttle(b: dict[str, float | None]) -> float | None:
    parts = [b.get("throttle_power"), b.get("throttle_thermal")]
    known = [p for p in parts if p is not None]
    return min(1.0, sum(known)) if known else None


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


def gpu_health(store: Store, window: Window, flt: HealthFilter = HealthFilter()) -> HealthView:
    """Every GPU matching the filter over the window, with its series and the node's PER."""
    bucket_s = bucket_for(window, MAX_POINTS)
    where = flt.where()
    if flt.job or flt.team:
        found: list[set[str]] = []
        if flt.job:
            found.append(set(queries.hosts_of_job(store, window, flt.job)))
        if flt.team:
            found.append({host for (_job, host, team) in queries.job_energy_by_tags(
                store, window, ("team",)) if team == flt.team})
        hosts = set.intersection(*found)
        if flt.node:
            hosts = {h for h in hosts if h == flt.node}
        if not hosts:
            return HealthView(window, [], {}, {}, False)
        where["host"] = tuple(sorted(hosts))
    buckets = queries.gpu_health_buckets(store, window, bucket_s, where)
    work = queries.job_work_by_host(store, window)
    gpus: list[GpuHealth] = []
    times: dict[str, list[int]] = {}
    series: dict[str, dict[str, list[float | None]]] = {}
    has_throttle = False
    for (host, gpu, model), rows in sorted(buckets.items()):
        vals = [b for _t, b in rows]
        thr = [_throttle(b) for b in vals]
        has_throttle = has_throttle or any(t is not None for t in thr)
        temps = [b["temp_c"] for b in vals if b["temp_c"] is not None]
        g = GpuHealth(host, gpu, model, _mean([b["temp_c"] for b in vals]), max(temps) if temps else None,
                      _mean([b["sm_clock_mhz"] for b in vals]), _mean([b["mem_clock_mhz"] for b in vals]),
                      _mean([b["mem_util_pct"] for b in vals]), _mean([b["util_pct"] for b in vals]),
                      _mean([b["power_w"] for b in vals]), _mean([b["power_limit_w"] for b in vals]),
                      _mean(thr))
        host_work, host_energy = work.get(host, ({}, 0.0))
        unit = primary_unit(host_work)
        if unit:
            g.per_unit, g.node_per = unit, per_by_unit(host_work, host_energy).get(unit)
        gpus.append(g)
        times[g.name] = [t for t, _b in rows]
        series[g.name] = {
            "temp_c": [b["temp_c"] for b in vals],
            "sm_clock_mhz": [b["sm_clock_mhz"] for b in vals],
            "mem_clock_mhz": [b["mem_clock_mhz"] for b in vals],
            "mem_util_pct": [b["mem_util_pct"] for b in vals],
            "power_pct": [None if b["power_w"] is None or not b["power_limit_w"]
                          else 100.0 * b["power_w"] / b["power_limit_w"] for b in vals],
            "throttle_pct": [None if t is None else 100.0 * t for t in thr],
        }
    best: dict[str, float] = {}
    for g in gpus:
        if g.sm_clock_mhz is not None and (g.util_pct or 0) >= BUSY_UTIL_PCT:
            best[g.model] = max(best.get(g.model, 0.0), g.sm_clock_mhz)
    for g in gpus:
        g.flags = flags_for(g, best.get(g.model))
    return HealthView(window, gpus, times, series, has_throttle)
