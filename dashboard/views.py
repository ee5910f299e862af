"""View models: what each page shows, read through analytics and shaped for the components and figures."""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import carbon, queries
from analytics.context import Context, Settings, load_carbon, load_context
from analytics.cost import energy_cost
from analytics.embodied import parse_overrides
from analytics.frontier import Frontier, best_cap, build_frontiers, max_power_by_model, point_cost
from analytics.levels import per_trends
from analytics.objective import tradeoff_cost
from analytics.per import PER_UNITS, UNIT_SINGULAR, per, primary_unit
from analytics.queries import Series
from analytics.recommend import Recommendation, recommend_from
from analytics.sci import fleet_sci
from analytics.timeutil import NS, Window, bucket_for
from collector.store.base import Store
from dashboard import units
from dashboard.figures import AlertSpan, CapPoint, HeatCell

HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
RANGES: dict[str, tuple[str, int]] = {
    "1h": ("Last hour", 3600),
    "6h": ("Last 6 hours", 6 * 3600),
    "24h": ("Last 24 hours", 86400),
    "7d": ("Last 7 days", 7 * 86400),
}
DEFAULT_RANGE = "24h"
MAX_BUCKETS = 600  # ~one bucket per 2 px of a 1,200 px chart: the point budget of a time series
TOP_SERIES = 10  # stacked groups shown by name; the rest are summed as "other"
NOW_LOOKBACK_S = 300  # "power now" = mean power over the last five minutes
STALE_AFTER_S = 300  # newer data than this is "live"
KPI_ALIGN_S = 300  # 24 h cards and range means end at a whole five minutes
ALERT_LOOKBACK_S = 30 * 86400  # how far back to look for the transition that set an alert's state


def range_seconds(range_key: str | None) -> int:
    """Seconds of a time-range key; an unknown key is an error naming it."""
    key = range_key or DEFAULT_RANGE
    if key not in RANGES:
        raise ValueError(f"range: expected one of {', '.join(RANGES)}, got {range_key!r}")
    return RANGES[key][1]


def data_end_ns(store: Store) -> int | None:
    """Just after the newest GPU or job point: windows end here, so a stopped store still shows data."""
    newest = queries.newest_time_ns(store, ("gpu", "job"))
    return None if newest is None else newest + 1


def window_for(store: Store, range_key: str | None, end_ns: int | None = None,
               align_s: int | None = None) -> Window:
    """The window of a time-range key, ending at ``end_ns`` or the newest point (or now, if empty).

    ``align_s`` ends it at a whole multiple of that many seconds (the last partial minute left
    out): every bucket of such a window but the newest is a settled rollup in the cache.
    """
    end = end_ns if end_ns is not None else data_end_ns(store)
    if end is not None and align_s:
        end = end // (align_s * NS) * align_s * NS
    return Window.last(range_seconds(range_key), end_ns=end)


def settled_end_ns(store: Store, end_ns: int) -> int:
    """``end_ns``, moved back to the cache's settle horizon when reading through a CachedStore,
    and down to a whole five minutes (KPI_ALIGN_S).

    The 24 h cards, the heatmap and the banners use windows ending here: every bucket they read
    is then a settled rollup, so between five-minute steps they cost no store query at all (on
    InfluxDB a query grouped by 1,000 GPUs costs ~0.2 s even over two minutes). The power chart
    alone follows the newest data.
    """
    settled = getattr(store, "settled_ns", None)
    if callable(settled):
        end_ns = min(end_ns, int(settled()))
    return end_ns // (KPI_ALIGN_S * NS) * KPI_ALIGN_S * NS


def range_window(store: Store, range_key: str | None, end_ns: int | None = None) -> Window:
    """The time range ending at :func:`settled_end_ns`: for means and totals over the range."""
    end = end_ns if end_ns is not None else data_end_ns(store)
    if end is None:
        return window_for(store, range_key, None)
    return Window.last(range_seconds(range_key), end_ns=settled_end_ns(store, end))


# --- status: banners and freshness ---------------------------------------------------------------
@dataclass(frozen=True)
class Status:
    """What the header says about the data: simulated or estimated, how fresh, alerts firing."""

    simulated: bool
    estimated: bool
    newest_ns: int | None
    age_s: float | None
    firing: int

    @property
    def live(self) -> bool:
        return self.age_s is not None and self.age_s <= STALE_AFTER_S


def status(store: Store, range_key: str | None, now_ns: int) -> Status:
    end = data_end_ns(store)
    if end is None:
        return Status(False, False, None, None, 0)
    w = range_window(store, range_key, end)
    methods = queries.methods_seen(store, w, "gpu") | queries.methods_seen(store, w, "cpu")
    firing = sum(1 for a in alert_lanes(store, end) if a.firing)
    # jobs metered in-process carry their estimate on the job points, up to the newest one
    estimated = "estimated" in methods or queries.estimated_job_energy_j(store, Window(w.start_ns, end)) > 0
    return Status("simulated" in methods, estimated, end - 1,
                  max(0.0, (now_ns - end) / NS), firing)


# --- fleet -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kpi:
    """One KPI card: value with unit, a sub-line, and the change against the comparison period."""

    key: str
    label: str
    value: str
    note: str
    change_pct: float | None
    good_when: str | None  # "down", "up" or None (neither is better)
    compare: str
    raw: float | None = None


def _grid_by_hour(gpu: dict[int, float], cpu: dict[int, float],
                  fac: list[queries.FacilityBucket]) -> tuple[dict[int, float], str]:
    """Energy the grid supplied per hour, by the rule of analytics.context.load_context: the
    facility meter where it has energy, else GPU + CPU × the hour's PUE, else GPU + CPU."""
    it: dict[int, float] = defaultdict(float)
    for src in (gpu, cpu):
        for t, e in src.items():
            it[t // HOUR_NS * HOUR_NS] += e
    if any(b.facility_energy_j for b in fac):
        grid: dict[int, float] = defaultdict(float)
        for b in fac:
            grid[b.time_ns // HOUR_NS * HOUR_NS] += b.facility_energy_j or 0.0
        return dict(grid), "facility energy"
    pue: dict[int, list[float]] = defaultdict(list)
    for b in fac:
        if b.it_power_w and b.facility_power_w:
            pue[b.time_ns // HOUR_NS * HOUR_NS].append(b.facility_power_w / b.it_power_w)
    if pue:
        by_hour = {h: sum(v) / len(v) for h, v in pue.items()}
        mean = sum(by_hour.values()) / len(by_hour)
        return {h: e * by_hour.get(h, mean) for h, e in it.items()}, "GPU + CPU energy × PUE"
    return dict(it), "GPU + CPU energy (no facility data)"


@dataclass(frozen=True)
class DayTotals:
    """One day of the fleet: energy, work, PUE, emissions and cost, and the power at its end."""

    gpu_j: float
    cpu_j: float
    work: dict[str, float]
    pue: float | None
    grid_j: float
    grid_basis: str
    g_co2: float | None
    carbon_note: str | None
    cost: float
    power_now_w: float | None


def _day(start: int, end: int, gpu: dict[int, float], cpu: dict[int, float],
         fac: list[queries.FacilityBucket], work: list[tuple[int, dict[str, float]]],
         series: carbon.IntensitySeries | None, message: str | None,
         settings: Settings) -> DayTotals:
    def inside(t: int) -> bool:
        return start <= t < end

    gpu_d = {t: e for t, e in gpu.items() if inside(t)}
    cpu_d = {t: e for t, e in cpu.items() if inside(t)}
    fac_d = [b for b in fac if inside(b.time_ns)]
    totals: dict[str, float] = defaultdict(float)
    for t, w in work:
        if inside(t):
            for unit, v in w.items():
                totals[unit] += v
    grid, basis = _grid_by_hour(gpu_d, cpu_d, fac_d)
    em = carbon.emissions(grid, series)
    it_j = sum(b.it_energy_j or 0.0 for b in fac_d)
    fac_j = sum(b.facility_energy_j or 0.0 for b in fac_d)
    last = end - NOW_LOOKBACK_S * NS  # the newest five-minute bucket: "power now"
    now_j = gpu[last] + cpu.get(last, 0.0) if last in gpu else None
    return DayTotals(sum(gpu_d.values()), sum(cpu_d.values()), dict(totals),
                     fac_j / it_j if it_j > 0 and fac_j > 0 else None, sum(grid.values()), basis,
                     em.g_co2, em.message or message, energy_cost(grid, settings.tariff),
                     None if now_j is None else now_j / NOW_LOOKBACK_S)


def two_days(store: Store, end_ns: int, settings: Settings) -> tuple[DayTotals, DayTotals]:
    """The 24 h ending at ``end_ns`` and the 24 h before, from one set of five-minute aggregates
    over the two days, computed in the store (energy, work, facility) and the hourly carbon.

    ``end_ns`` is a whole five minutes, so the window moves by whole buckets and every bucket
    but the newest is a settled rollup in the cache.
    """
    step = NOW_LOOKBACK_S * NS
    if end_ns % step:
        raise ValueError(f"end_ns: must be a whole {NOW_LOOKBACK_S} s, got {end_ns}")
    w = Window(end_ns - 2 * DAY_NS, end_ns)
    gpu = {t: e for _k, t, e in queries.energy_buckets(store, w, "gpu", NOW_LOOKBACK_S, ())}
    cpu = {t: e for _k, t, e in queries.energy_buckets(store, w, "cpu", NOW_LOOKBACK_S, ())}
    fac = queries.facility_buckets(store, w, NOW_LOOKBACK_S)
    work = queries.work_buckets(store, w, NOW_LOOKBACK_S)
    hours = Window(w.start_ns // HOUR_NS * HOUR_NS, -(-w.end_ns // HOUR_NS) * HOUR_NS)
    series, message = load_carbon(store, hours, settings)  # hourly data: whole hours
    mid = end_ns - DAY_NS
    return (_day(mid, end_ns, gpu, cpu, fac, work, series, message, settings),
            _day(w.start_ns, mid, gpu, cpu, fac, work, series, message, settings))


def _hhmm(t_ns: int) -> str:
    from dashboard.figures import iso

    return iso(t_ns)[11:16]


def fleet_kpis(store: Store, end_ns: int, settings: Settings) -> list[Kpi]:
    """Power now, energy, PER, carbon, PUE and cost over the last 24 h, each against the 24 h before.

    The days end at :func:`settled_end_ns` (a whole five minutes, settled): their aggregates are
    then rollups in the cache, and the window moves once per five minutes. Power is the mean of
    the last of those five minutes, against the same five minutes a day before.
    """
    end_ns = settled_end_ns(store, end_ns)
    today, before = two_days(store, end_ns, settings)
    recent = Window(end_ns - NOW_LOOKBACK_S * NS, end_ns)
    gpus_now = len(queries.energy_by(store, recent, "gpu", ("host", "gpu")))
    vs = "vs prior 24 h"
    unit = primary_unit(today.work) or primary_unit(before.work)
    per_now = per(today.work.get(unit), today.gpu_j) if unit else None
    per_before = per(before.work.get(unit), before.gpu_j) if unit else None
    tariff = settings.tariff
    energy_now = today.gpu_j + today.cpu_j
    energy_before = before.gpu_j + before.cpu_j
    return [
        Kpi("power", "Power, last 5 min", units.power(today.power_now_w),
            f"GPU + CPU, to {_hhmm(end_ns)} UTC · {gpus_now} GPUs",
            units.change_pct(today.power_now_w, before.power_now_w), None,
            "vs yesterday", today.power_now_w),
        Kpi("energy", "Energy, 24 h", units.energy(energy_now),
            f"GPU {units.energy(today.gpu_j)} · CPU {units.energy(today.cpu_j)}",
            units.change_pct(energy_now, energy_before), "down", vs, energy_now),
        Kpi("per", "Fleet PER, 24 h", units.per3(per_now, PER_UNITS[unit]) if unit else units.DASH,
            f"{unit} per GPU joule" if unit else "no job reported work",
            units.change_pct(per_now, per_before), "up", vs, per_now),
        Kpi("carbon", "Carbon, 24 h", units.mass_co2(today.g_co2),
            (f"{units.intensity(today.g_co2 / (today.grid_j / units.J_PER_KWH))} on {today.grid_basis}"
             if today.g_co2 is not None and today.grid_j > 0 else
             (today.carbon_note or "no carbon intensity").split(";")[0]),
            units.change_pct(today.g_co2, before.g_co2), "down", vs, today.g_co2),
        Kpi("pue", "PUE, 24 h", units.pue(today.pue),
            "facility ÷ IT energy" if today.pue else "no facility measurement",
            units.change_pct(today.pue, before.pue), "down", vs, today.pue),
        Kpi("cost", "Energy cost, 24 h", units.money(today.cost, tariff.currency),
            f"at {tariff.describe()}", units.change_pct(today.cost, before.cost), "down", vs,
            today.cost),
    ]


@dataclass
class PowerChart:
    """The stacked power chart: series on a regular grid of buckets, and how to extend it live."""

    window: Window
    bucket_s: int
    by: str
    series: list[Series]
    groups: int
    top: list[str] | None  # named groups when the rest is summed into "other"

    def state(self, range_key: str) -> dict[str, Any]:
        """What the browser keeps (dcc.Store) so the next refresh can fetch only new buckets."""
        times = self.series[0].times_ns if self.series else []
        return {"range": range_key, "by": self.by, "bucket_s": self.bucket_s,
                "names": [s.name for s in self.series], "top": self.top,
                "t0": times[0] if times else None, "t1": times[-1] if times else None}


def _other_label(n: int, by: str) -> str:
    return f"other ({n} {'nodes' if by == 'host' else 'models'})"


def _grid(series: list[Series], t0: int, t1: int, bucket_s: int) -> list[Series]:
    """Every series on the same bucket grid [t0, t1]: None where a group reported nothing."""
    step = bucket_s * NS
    grid = list(range(t0, t1 + 1, step))
    out = []
    for s in series:
        lookup = dict(zip(s.times_ns, s.values, strict=True))
        out.append(Series(s.name, grid, [lookup.get(t) for t in grid]))  # type: ignore[misc]
    return out


def _power_groups(store: Store, window: Window, bucket_s: int, by: str,
                  top: list[str] | None) -> list[Series]:
    if top is None:
        return queries.power_series(store, window, bucket_s, (by,))
    named = queries.power_series(store, window, bucket_s, (by,), where={by: tuple(top)})
    total = queries.power_series(store, window, bucket_s, ())
    if not total:
        return named
    sums: dict[int, float] = defaultdict(float)
    for s in named:
        for t, v in zip(s.times_ns, s.values, strict=True):
            sums[t] += v
    t_all = total[0].times_ns
    other = Series("other", t_all, [max(0.0, v - sums.get(t, 0.0))
                                    for t, v in zip(t_all, total[0].values, strict=True)])
    order = {name: i for i, name in enumerate(top)}
    return [*sorted(named, key=lambda s: order.get(s.name, len(order))), other]


def fleet_power(store: Store, window: Window, by: str = "host",
                max_series: int = TOP_SERIES) -> PowerChart:
    """Average power per bucket stacked by node or GPU model; beyond ``max_series`` groups the
    smaller ones are summed as "other", so the chart stays readable and light at 1,000 GPUs."""
    if by not in ("host", "model"):
        raise ValueError(f"by: expected host or model, got {by!r}")
    bucket = bucket_for(window, MAX_BUCKETS)
    step = bucket * NS
    aligned = Window(window.start_ns // step * step, window.end_ns)  # whole first bucket
    ranking = queries.energy_by(store, aligned, "gpu", (by,))
    names = [k[0] for k, _ in sorted(ranking.items(), key=lambda kv: (-kv[1], kv[0]))]
    top = names[:max_series] if len(names) > max_series + 1 else None
    series = _power_groups(store, aligned, bucket, by, top)
    if top is not None and series and series[-1].name == "other":
        series[-1] = Series(_other_label(len(names) - len(top), by), series[-1].times_ns,
                            series[-1].values)
    times = sorted({t for s in series for t in s.times_ns})
    if times:
        series = _grid(series, times[0], times[-1], bucket)
    return PowerChart(aligned, bucket, by, series, len(names), top)


@dataclass(frozen=True)
class PowerUpdate:
    """New buckets for a live chart: drop ``drop`` points at the front, replace the last
    ``replace`` points, then append ``values[name]`` (on the times ``times_ns``)."""

    drop: int
    replace: int
    times_ns: list[int]
    values: dict[str, list[float | None]]
    state: dict[str, Any]


MAX_PATCH_DROP = 60  # more than this many buckets behind (a hidden tab): redraw instead


def fleet_power_update(store: Store, range_key: str, state: dict[str, Any],
                       end_ns: int | None = None) -> PowerUpdate | None:
    """Only the buckets that changed since ``state`` (the last two, which were still filling, and
    any new ones), or None when the chart must be redrawn (range, grouping or groups changed)."""
    bucket = int(state.get("bucket_s") or 0)
    t0, t1 = state.get("t0"), state.get("t1")
    if not bucket or t0 is None or t1 is None:
        return None
    window = window_for(store, range_key, end_ns)
    step = bucket * NS
    if bucket_for(window, MAX_BUCKETS) != bucket:
        return None
    new_t0 = window.start_ns // step * step
    since = Window(max(t1 - step, new_t0, t0), window.end_ns)
    if since.end_ns <= since.start_ns:
        return None
    by = str(state["by"])
    top = state.get("top")
    fresh = _power_groups(store, since, bucket, by, top)
    if top is not None and fresh and fresh[-1].name == "other":
        fresh[-1] = Series(state["names"][-1], fresh[-1].times_ns, fresh[-1].values)
    names = list(state["names"])
    if any(s.name not in names for s in fresh):
        return None  # a new group appeared: redraw
    times = sorted({t for s in fresh for t in s.times_ns})
    if not times or times[-1] < t1 - step:
        return None
    grid = list(range(since.start_ns, times[-1] + 1, step))
    lookup = {s.name: dict(zip(s.times_ns, s.values, strict=True)) for s in fresh}
    drop = max(0, (new_t0 - t0) // step)
    replace = (t1 - since.start_ns) // step + 1
    held = (t1 - t0) // step + 1  # points each trace holds now
    if drop > MAX_PATCH_DROP or drop + replace > held:
        return None
    values = {n: [lookup.get(n, {}).get(t) for t in grid] for n in names}
    new_state = {**state, "t0": max(t0, new_t0), "t1": grid[-1]}
    return PowerUpdate(int(drop), int(replace), grid, values, new_state)


def gpu_heat(store: Store, window: Window) -> list[HeatCell]:
    """One heatmap cell per GPU: means over the window, computed in the store in one grouped query."""
    return [HeatCell(c.host, c.gpu, c.model, c.util_pct, c.power_w, c.power_limit_w)
            for c in queries.gpu_cells(store, window)]


@dataclass
class FleetView:
    """Everything the Fleet page shows, for one refresh."""

    window: Window
    kpis: list[Kpi]
    power: PowerChart
    heat: list[HeatCell]


def fleet_view(store: Store, range_key: str, by: str = "host",
               settings: Settings | None = None) -> FleetView:
    """The whole Fleet page (first render): KPIs, the stacked power chart and the GPU heatmap."""
    end = data_end_ns(store)
    window = window_for(store, range_key, end)
    kpis = fleet_kpis(store, window.end_ns, settings or Settings())
    return FleetView(window, kpis, fleet_power(store, window, by),
                     gpu_heat(store, range_window(store, range_key, end)))


# --- analysis context shared by jobs, trade-off, carbon and recommendations ----------------------
class ContextMemo:
    """The analytics Context per range, shared by the analysis pages and by λ moves.

    One Context per range and minute of data. When the data has moved on by less than
    ``stale_s``, the last Context is served at once while the new one loads on a background
    thread (at 1,000 GPUs a 24 h Context takes seconds to read): pages stay responsive and
    are at most a refresh behind.
    """

    def __init__(self, settings: Settings, stale_s: float = 600.0) -> None:
        self.settings = settings
        self.stale_ns = int(stale_s * NS)
        self._items: dict[str, tuple[int, Context]] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    def _window(self, store: Store, range_key: str) -> Window:
        end = data_end_ns(store)
        if end is not None:
            end = -(-end // (60 * NS)) * 60 * NS  # up to the minute: one context per minute
        return window_for(store, range_key, end)

    def get(self, store: Store, range_key: str) -> Context:
        window = self._window(store, range_key)
        with self._lock:
            got = self._items.get(range_key)
            if got is not None and got[0] == window.end_ns:
                return got[1]
            stale = got is not None and 0 < window.end_ns - got[0] <= self.stale_ns
            start_reload = stale and range_key not in self._loading
            if start_reload:
                self._loading.add(range_key)
        if got is not None and stale:
            if start_reload:
                threading.Thread(target=self._reload, args=(store, range_key, window),
                                 name="wattlens-context", daemon=True).start()
            return got[1]
        ctx = load_context(store, window, self.settings)
        with self._lock:
            self._items[range_key] = (window.end_ns, ctx)
        return ctx

    def _reload(self, store: Store, range_key: str, window: Window) -> None:
        try:
            ctx = load_context(store, window, self.settings)
            with self._lock:
                self._items[range_key] = (window.end_ns, ctx)
        except Exception as exc:  # the next request loads in the foreground and shows the error
            import logging

            logging.getLogger("wattlens.dashboard").warning("dashboard: reloading analytics "
                                                            "for %s failed: %s", range_key, exc)
        finally:
            with self._lock:
                self._loading.discard(range_key)


# --- jobs ----------------------------------------------------------------------------------------
def _p_max(ctx: Context) -> dict[str, float]:
    return max_power_by_model(ctx.gpus)


def _frontier_of(fronts: list[Frontier], job: str) -> Frontier | None:
    for f in fronts:
        if any(job in p.jobs for p in f.points):
            return f
    return None


@dataclass(frozen=True)
class JobObjective:
    """A job's cost(λ) = λ·E + (1−λ)·P_max·T (T in GPU-seconds) and its excess over the best cap."""

    cost_j: float | None
    excess_j: float | None
    excess_pct: float | None
    best_cap_w: float | None


def job_objective(j: Any, fronts: list[Frontier], p_max: dict[str, float], lam: float) -> JobObjective:
    """cost(λ) of one JobAggregate, and how much less it would cost per unit of work at its class's
    best cap for this λ (from the measured frontier)."""
    unit = primary_unit(j.work)
    pm = p_max.get(j.gpu_model) or j.power_limit_w
    if unit is None or not pm or j.gpu_seconds <= 0:
        return JobObjective(None, None, None, None)
    cost = tradeoff_cost(j.energy_j, j.gpu_seconds, pm, lam)
    f = _frontier_of(fronts, j.job)
    best = best_cap(f, lam) if f is not None else None
    work = j.work.get(unit, 0.0)
    if f is None or best is None or work <= 0 or f.unit != unit:
        return JobObjective(cost, None, None, None)
    best_cost = tradeoff_cost(best.energy_j_per_unit * work, best.time_s_per_unit * work,
                              f.p_max_w, lam)
    return JobObjective(cost, cost - best_cost, 100 * (cost / best_cost - 1) if best_cost else None,
                        best.cap_w)


def jobs_rows(ctx: Context, lam: float) -> list[dict[str, Any]]:
    """One table row per job in the window, ranked by excess cost(λ) over the best cap (then cost)."""
    fronts = build_frontiers(ctx.jobs, _p_max(ctx))
    p_max = _p_max(ctx)
    trends = {t.job: t for t in per_trends(ctx.jobs, ctx.settings.per_references)}
    running_after = ctx.now_ns - 2 * ctx.bucket_s * NS
    rows = []
    for j in ctx.job_aggs.values():
        unit = primary_unit(j.work)
        value = per(j.work.get(unit), j.energy_j) if unit else None
        obj = job_objective(j, fronts, p_max, lam)
        tr = trends.get(j.job)
        row: dict[str, Any] = {
            "id": j.job, "job": j.job, "kind": j.kind, "precision": j.precision,
            "gpu_model": j.gpu_model.replace("NVIDIA ", ""), "gpus": j.gpus,
            "gpus_text": f"{j.gpus} × {short_model(j.gpu_model)}",
            "kind_text": f"{j.kind} · {j.precision}",
            "hosts": ", ".join(j.hosts) if len(j.hosts) <= 2 else f"{len(j.hosts)} hosts",
            "status": "running" if j.last_ns >= running_after else "finished",
            "energy_kwh": round(j.energy_j / units.J_PER_KWH, 3),
            "runtime_h": round(j.active_s / 3600, 2),
            "power_kw": round(j.mean_power_w / 1000, 2) if j.mean_power_w else None,
            "cap_w": round(j.power_limit_w) if j.power_limit_w else None,
            "work": units.count(j.work.get(unit), unit) if unit else units.DASH,
            "per": units.per(value, PER_UNITS[unit]) if unit else units.DASH,
            "per_value": value,
            "per_trend_pct": round(tr.change_pct, 1) + 0.0 if tr and tr.change_pct is not None else None,
            "cost_mj": round(obj.cost_j / 1e6, 2) if obj.cost_j is not None else None,
            "excess_mj": round(obj.excess_j / 1e6, 2) if obj.excess_j is not None else None,
            "excess_pct": round(obj.excess_pct, 1) if obj.excess_pct is not None else None,
            "best_cap_w": round(obj.best_cap_w) if obj.best_cap_w else None,
        }
        rows.append(row)
    rows.sort(key=lambda r: (r["excess_mj"] is None, -(r["excess_mj"] or 0.0),
                             -(r["cost_mj"] or 0.0), r["job"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def short_model(model: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA A100-SXM4-80GB' -> 'A100' (tables; hover has the full name)."""
    name = model.replace("NVIDIA ", "").strip()
    return re.split(r"[ -]", name)[0] if name else model


@dataclass
class JobDetail:
    """One job over the range: its series, its baseline and the numbers for the cards."""

    job: str
    found: bool
    window: Window
    times_ns: list[int] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)
    rate: list[float | None] = field(default_factory=list)
    per_values: list[float | None] = field(default_factory=list)
    unit: str = "samples"
    baseline: float | None = None
    baseline_source: str = ""
    change_pct: float | None = None
    facts: list[tuple[str, str]] = field(default_factory=list)
    started_before: bool = False


def job_detail(store: Store, range_key: str, job: str) -> JobDetail:
    """Power, throughput and PER of one job in the range, against its baseline (its first hour,
    or a reference set in the settings)."""
    window = window_for(store, range_key)
    bucket = bucket_for(window, 300)
    buckets = queries.job_buckets(store, window, bucket, job=job)
    if not buckets:
        return JobDetail(job, False, window)
    from analytics.levels import aggregate_jobs

    agg = aggregate_jobs(buckets)[job]
    unit = primary_unit(agg.work) or "samples"
    per_t: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for b in buckets:
        slot = per_t[b.time_ns]
        slot[0] += b.energy_j
        slot[1] += b.work.get(unit, 0.0)
        slot[2] = max(slot[2], b.active_s)
    times = sorted(per_t)
    power: list[float | None] = []
    rate: list[float | None] = []
    pers: list[float | None] = []
    for t in times:
        e, w, active = per_t[t]
        power.append(e / active if active > 0 else None)
        rate.append(w / active if active > 0 else None)
        pers.append(per(w, e))
    trend = next(iter(per_trends(buckets)), None)
    value = per(agg.work.get(unit), agg.energy_j)
    facts = [
        ("Energy", units.energy(agg.energy_j)),
        ("Work", units.count(agg.work.get(unit), unit)),
        ("PER", units.per(value, PER_UNITS[unit])),
        ("Baseline PER", units.per(trend.baseline, PER_UNITS[unit]) if trend else units.DASH),
        ("Mean power", units.power(agg.mean_power_w)),
        ("Run time", units.duration(agg.active_s)),
        ("GPUs", f"{agg.gpus} × {agg.gpu_model.replace('NVIDIA ', '')}"),
        ("Power cap", f"{agg.power_limit_w:.0f} W" if agg.power_limit_w else units.DASH),
        ("Precision", agg.precision),
        ("Hosts", ", ".join(agg.hosts)),
    ]
    return JobDetail(job, True, window, times, power, rate, pers, unit,
                     trend.baseline if trend else None, trend.baseline_source if trend else "",
                     trend.change_pct if trend else None, facts,
                     started_before=agg.first_ns <= window.start_ns + bucket * NS)


# --- trade-off ---------------------------------------------------------------------------------
@dataclass
class Tradeoff:
    """The trade-off page for one λ: frontier classes, the selected one's caps, and the ranking."""

    lam: float
    classes: list[tuple[str, str]]  # (key, label), classes with at least two caps first
    selected: str | None
    points: list[CapPoint]
    unit: str
    p_max_w: float
    best_cap_w: float | None
    summary: str
    rows: list[dict[str, Any]]


def tradeoff(ctx: Context, lam: float, selected: str | None) -> Tradeoff:
    """Rank jobs by cost(λ) and show the frontier of the selected class with the cap that minimises it."""
    fronts = build_frontiers(ctx.jobs, _p_max(ctx))
    fronts.sort(key=lambda f: (-(len(f.points) >= 2), -sum(p.energy_j for p in f.points), f.key))
    classes = [(f.key, f"{f.label} · {len(f.points)} cap{'s' if len(f.points) != 1 else ''}")
               for f in fronts]
    rows = jobs_rows(ctx, lam)
    f = next((x for x in fronts if x.key == selected), fronts[0] if fronts else None)
    if f is None:
        return Tradeoff(lam, classes, None, [], "samples", 0.0, None,
                        "No job ran at a known power cap with reported work in this range.", rows)
    best = best_cap(f, lam)
    on_front = {p.cap_w for p in f.frontier}
    points = [CapPoint(p.cap_w, p.time_s_per_unit, p.energy_j_per_unit, p.cap_w in on_front,
                       point_cost(f, p, lam), len(p.jobs)) for p in f.points]
    return Tradeoff(lam, classes, f.key, points, f.unit, f.p_max_w,
                    best.cap_w if best else None, _tradeoff_summary(f, lam), rows)


def _tradeoff_summary(f: Frontier, lam: float) -> str:
    best = best_cap(f, lam)
    if best is None:
        return "No cap of this class is on the frontier."
    unit = UNIT_SINGULAR.get(f.unit, f.unit)
    top = max(f.points, key=lambda p: p.cap_w)
    text = f"At λ = {lam:.2f} the best cap for {f.workload} on {f.gpu_model} is {best.cap_w:.0f} W"
    if top.cap_w != best.cap_w:
        de = 100 * (best.energy_j_per_unit / top.energy_j_per_unit - 1)
        dt = 100 * (best.time_s_per_unit / top.time_s_per_unit - 1)
        text += (f": {units.signed_pct(de)} energy and {units.signed_pct(dt)} time per {unit} "
                 f"against {top.cap_w:.0f} W")
    else:
        text += ", the highest cap measured: at this λ, time matters more than the energy a lower cap saves"
    return text + "."


# --- carbon ------------------------------------------------------------------------------------
@dataclass
class CarbonView:
    """Grid intensity history and forecast, suggested windows, and emissions by job and node."""

    window: Window
    source: str | None
    message: str | None
    hist: list[tuple[int, float, float | None]]
    forecast: list[tuple[int, float]]
    windows: list[dict[str, Any]]
    shade: list[tuple[int, int, str]]
    by_job: list[tuple[str, float]]
    by_node: list[tuple[str, float]]
    total_g: float | None
    mean_g_per_kwh: float | None
    renewable_pct: float | None
    grid_basis: str
    deferrable: list[str]
    recs: list[Recommendation]
    sci: dict[str, Any] = field(default_factory=dict)  # analytics.sci.fleet_sci, as in the report


def carbon_view(ctx: Context, lam: float = 0.5) -> CarbonView:
    """Carbon over the window from one analytics Context; emissions include the facility overhead
    (each hour's PUE), like the report's totals."""
    series = ctx.carbon
    now = ctx.now_ns
    hist: list[tuple[int, float, float | None]] = []
    fc: list[tuple[int, float]] = []
    windows: list[dict[str, Any]] = []
    shade: list[tuple[int, int, str]] = []
    if series is not None and series.hourly:
        hist = [(h, v.g_per_kwh, v.renewable_pct) for h, v in sorted(series.hourly.items())
                if ctx.window.start_ns - HOUR_NS < h < ctx.window.end_ns]
    if series is not None:
        try:
            fc = carbon.forecast(series, now, 86400)
        except carbon.CarbonDataMissing:
            fc = []
    if fc:
        mean_fc = sum(g for _, g in fc) / len(fc)
        for hours in (2, 4, 8):
            got = carbon.best_window(fc, hours * 3600, earliest_ns=now)
            if got is None:
                continue
            start, mean = got
            windows.append({"hours": hours, "start_ns": start, "end_ns": start + hours * HOUR_NS,
                            "mean_g_per_kwh": mean,
                            "vs_mean_pct": units.change_pct(mean, mean_fc)})
        w4 = next((w for w in windows if w["hours"] == 4), None)
        if w4 is not None:
            shade.append((w4["start_ns"], w4["end_ns"], "best 4 h"))
    by_job_h: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for b in ctx.jobs:
        by_job_h[b.job][b.time_ns] += b.energy_j * (ctx.pue_at(b.time_ns) or 1.0)
    by_node_h: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for g in ctx.gpus:
        by_node_h[g.host][g.time_ns] += g.energy_j * (ctx.pue_at(g.time_ns) or 1.0)
    for (host, _method), t, e in ctx.cpu:
        by_node_h[host][t] += e * (ctx.pue_at(t) or 1.0)
    by_job = [(name, em.g_co2) for name, hours in by_job_h.items()
              if (em := carbon.emissions(hours, series)).g_co2 is not None]
    by_node = [(name, em.g_co2) for name, hours in by_node_h.items()
               if (em := carbon.emissions(hours, series)).g_co2 is not None]
    total = carbon.emissions(ctx.grid_by_hour, series)
    deferrable = sorted(j.job for j in ctx.job_aggs.values() if j.deferrable)
    recs = [r for r in recommend_from(ctx, lam).items if r.kind == "carbon_window"]
    return CarbonView(ctx.window, series.describe() if series else None,
                      total.message or ctx.carbon_message, hist, fc, windows, shade,
                      by_job, by_node, total.g_co2, total.mean_g_per_kwh, total.renewable_pct,
                      ctx.grid_basis, deferrable, recs,
                      fleet_sci(ctx, total.g_co2, parse_overrides(ctx.settings.embodied), ctx.settings.sci_unit))


# --- recommendations ---------------------------------------------------------------------------
@dataclass
class RecommendationsView:
    """Ranked recommendations with the total they would save per day."""

    items: list[Recommendation]
    messages: list[str]
    kwh_per_day: float
    kg_co2_per_day: float | None
    cost_per_day: float
    currency: str


def recommendations_view(ctx: Context, lam: float) -> RecommendationsView:
    rs = recommend_from(ctx, lam)
    kg = [r.savings_kg_co2_per_day for r in rs.items if r.savings_kg_co2_per_day is not None]
    return RecommendationsView(rs.items, rs.messages,
                               sum(r.savings_kwh_per_day for r in rs.items),
                               sum(kg) if kg else None,
                               sum(r.savings_cost_per_day for r in rs.items),
                               ctx.settings.tariff.currency)


# --- alerts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertLane:
    """One alert (rule, severity, target): its state now and its firing periods."""

    rule: str
    severity: str
    target: str
    firing: bool
    since_ns: int
    value: float | None
    spans: tuple[tuple[int, int | None], ...]

    @property
    def lane(self) -> str:
        return f"{self.rule} · {self.target}"


def alert_lanes(store: Store, end_ns: int) -> list[AlertLane]:
    """Every alert with a transition in the lookback, firing ones first, newest first."""
    if store.time_range("alert") is None:
        return []
    events = queries.alert_events(store, Window(end_ns - ALERT_LOOKBACK_S * NS, end_ns))
    by_lane: dict[tuple[str, str, str], list[queries.AlertEvent]] = defaultdict(list)
    for e in events:
        by_lane[(e.rule, e.severity, e.target)].append(e)
    lanes = []
    for (rule, sev, target), evs in by_lane.items():
        spans: list[tuple[int, int | None]] = []
        start: int | None = None
        for e in evs:
            if e.state == 1 and start is None:
                start = e.time_ns
            elif e.state == 0 and start is not None:
                spans.append((start, e.time_ns))
                start = None
        if start is not None:
            spans.append((start, None))
        last = evs[-1]
        lanes.append(AlertLane(rule, sev, target, last.state == 1, last.time_ns, last.value,
                               tuple(spans)))
    return sorted(lanes, key=lambda a: (not a.firing, -a.since_ns, a.rule, a.target))


@dataclass
class AlertsView:
    """The Alerts page: whether alerting ever wrote to this store, lanes and timeline spans."""

    window: Window
    recorded: bool
    lanes: list[AlertLane]
    spans: list[AlertSpan]


def alerts_view(store: Store, range_key: str) -> AlertsView:
    window = window_for(store, range_key)
    recorded = store.time_range("alert") is not None
    lanes = alert_lanes(store, window.end_ns) if recorded else []
    shown = [a for a in lanes if a.firing or any(
        (end is None or end >= window.start_ns) for _s, end in a.spans)]
    spans = [AlertSpan(a.lane, a.severity, s, e) for a in shown for s, e in a.spans
             if e is None or e >= window.start_ns]
    return AlertsView(window, recorded, shown, spans)
