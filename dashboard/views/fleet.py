"""Fleet page view model: the cards over the selected range, the stacked power chart (patched live), the GPU heatmap."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from analytics import queries, units
from analytics.context import Settings, load_context, load_headline
from analytics.filters import Filter, filter_context
from analytics.headline import MIN_COVERAGE, NOT_ENOUGH_HISTORY, Headline
from analytics.per import PER_UNITS
from analytics.queries import Series
from analytics.timeutil import NS, Window, bucket_for
from collector.store.base import Store
from dashboard.views.common import (
    DAY_NS,
    DEFAULT_RANGE,
    MAX_BUCKETS,
    NOW_LOOKBACK_S,
    RANGES,
    TOP_SERIES,
    Kpi,
    custom_range,
    data_end_ns,
    range_window,
    window_for,
)


def _hhmm(t_ns: int) -> str:
    from dashboard.figures import iso

    return iso(t_ns)[11:16]


Where = dict[str, str | tuple[str, ...]]


def _power_now(store: Store, end_ns: int, wheres: tuple[Where, Where] = ({}, {}),
               ) -> tuple[float | None, float]:
    """GPU + CPU power over the five minutes to ``end_ns`` (energy over the time the data
    covers), and the share of those five minutes the GPU data covers."""
    recent = Window(end_ns - NOW_LOOKBACK_S * NS, end_ns)
    total = 0.0
    seen = False
    for measurement, where in zip(("gpu", "cpu"), wheres, strict=True):
        for s in queries.power_series(store, recent, NOW_LOOKBACK_S, (), where or None,
                                      measurement=measurement):
            total += sum(s.values)
            seen = seen or bool(s.values)
    return (total if seen else None), queries.covered_s(store, recent) / NOW_LOOKBACK_S


def _change(now: float | None, before: float | None, enough: bool) -> float | None:
    return units.change_pct(now, before) if enough else None


def filter_wheres(store: Store, window: Window, flt: Filter) -> tuple[Where, Where]:
    """The store filters of ``flt`` for the gpu and the cpu measurement (cpu has hosts only)."""
    gpu: Where = {}
    if flt.node:
        gpu["host"] = flt.node
    if flt.model:
        gpu["model"] = flt.model
    if flt.job:
        hosts = queries.hosts_of_job(store, window, flt.job)
        gpu["host"] = tuple(h for h in hosts if not flt.node or h == flt.node) or ("",)
    if flt.team:  # the hosts its jobs ran on (and the other filters' hosts, when set)
        hosts = sorted({h for (h,) in queries.energy_by_where(store, window, "job", ("host",),
                                                              {"team": flt.team})})
        kept = gpu.get("host")
        gpu["host"] = tuple(h for h in hosts if (not flt.node or h == flt.node)
                            and (kept is None or h in kept)) or ("",)
    cpu_hosts = sorted({h for (h,) in queries.energy_by_where(store, window, "gpu", ("host",), gpu)})
    return gpu, {"host": tuple(cpu_hosts) or ("",)}


_FILTERED: dict[tuple[int, int, int, Filter], Headline] = {}  # (store, start, end, filter)
_FILTERED_MAX = 32


def _filtered_headline(store: Store, window: Window, settings: Settings, flt: Filter) -> Headline:
    """The report's definition over the filtered Context (analytics.filters), so the cards equal
    `wattlens report --node/--model/--job`. A full Context read: kept per settled window (the
    cards' windows move every five minutes), not re-read on every refresh."""
    key = (id(store), window.start_ns, window.end_ns, flt)
    got = _FILTERED.get(key)
    if got is None:
        got = filter_context(load_context(store, window, settings), flt).headline()
        if len(_FILTERED) >= _FILTERED_MAX:
            _FILTERED.pop(next(iter(_FILTERED)))
        _FILTERED[key] = got
    return got


def _headlines(store: Store, window: Window, prior: Window, settings: Settings,
               flt: Filter | None) -> tuple[Headline, Headline]:
    if flt is None or not flt.active:
        got = queries.gather(store, {"now": lambda: load_headline(store, window, settings),
                                     "prior": lambda: load_headline(store, prior, settings)})
    else:
        got = queries.gather(store, {
            "now": lambda: _filtered_headline(store, window, settings, flt),
            "prior": lambda: _filtered_headline(store, prior, settings, flt)})
    return got["now"], got["prior"]


def fleet_kpis(store: Store, range_key: str | None, end_ns: int, settings: Settings,
               flt: Filter | None = None) -> list[Kpi]:
    """The cards over the selected range (ending at :func:`settled_end_ns`), each against the
    range before it: the headline figures of analytics.headline, the same as ``wattlens report``.

    A change is shown only when the prior range is covered by data for at least
    90 % of its length; otherwise it reads "n/a (not enough history)".
    """
    window = range_window(store, range_key, end_ns)
    length = window.end_ns - window.start_ns
    head, prior = _headlines(store, window, Window(window.start_ns - length, window.start_ns),
                             settings, flt)
    wheres: tuple[Where, Where] = ({}, {})
    if flt is not None and flt.active:
        wheres = filter_wheres(store, Window(window.end_ns - DAY_NS - NOW_LOOKBACK_S * NS,
                                             window.end_ns), flt)
    label = ("window" if custom_range(range_key) else
             RANGES[range_key or DEFAULT_RANGE][0].replace("Last ", ""))
    ok = prior.enough_history
    vs = f"vs prior {label}" if ok else NOT_ENOUGH_HISTORY
    got: dict[str, Any] = queries.gather(store, {
        "now": lambda: _power_now(store, window.end_ns, wheres),
        "day": lambda: _power_now(store, window.end_ns - DAY_NS, wheres),
        "gpus": lambda: queries.energy_by_where(store, Window(
            window.end_ns - NOW_LOOKBACK_S * NS, window.end_ns), "gpu", ("host", "gpu"),
            wheres[0])})
    (power_now, _cov), (power_day, cov_day), gpus_now = got["now"], got["day"], len(got["gpus"])
    unit = head.unit or prior.unit
    per_now = head.per.get(unit) if unit else None
    gpu_only = head.per_gpu_only.get(unit) if unit else None
    tariff = settings.tariff
    em = head.emissions
    grid_kwh = head.grid_energy_j / units.J_PER_KWH
    other_it = head.it_energy_j - head.gpu_energy_j - head.cpu_energy_j
    it_note = f"GPU {units.energy(head.gpu_energy_j)} · CPU {units.energy(head.cpu_energy_j)}"
    if abs(other_it) >= 0.0005 * max(head.it_energy_j, 1.0):
        it_note += f" · other IT {units.energy(other_it)} (facility meter)"
    fac_note = (f"PUE {units.pue(head.pue)} = facility ÷ IT energy · carbon and cost use it"
                if head.facility_energy_j is not None else
                "no facility measurement · carbon and cost use IT energy")
    return [
        Kpi("power", "Power, last 5 min", units.power(power_now),
            f"GPU + CPU, to {_hhmm(window.end_ns)} UTC · {gpus_now} GPUs",
            _change(power_now, power_day, cov_day >= MIN_COVERAGE), None,
            "vs same 5 min a day before" if cov_day >= MIN_COVERAGE else NOT_ENOUGH_HISTORY,
            power_now),
        Kpi("energy", f"IT energy, {label}", units.energy(head.it_energy_j), it_note,
            _change(head.it_energy_j, prior.it_energy_j, ok), "down", vs, head.it_energy_j),
        Kpi("facility", f"Facility energy, {label}", units.energy(head.facility_energy_j),
            fac_note, _change(head.facility_energy_j, prior.facility_energy_j, ok), "down", vs,
            head.facility_energy_j),
        Kpi("per", f"Fleet PER, {label}", units.per3(per_now, PER_UNITS[unit]) if unit else units.DASH,
            (f"{unit} per GPU + CPU joule · GPU-only {units.per3(gpu_only, PER_UNITS[unit])}"
             if unit else "no job reported work"),
            _change(per_now, prior.per.get(unit) if unit else None, ok), "up", vs, per_now),
        Kpi("carbon", f"Carbon, {label}", units.mass_co2(em.g_co2),
            (f"{units.intensity(em.g_co2 / grid_kwh)} × {units.energy(head.grid_energy_j)} "
             f"{'facility' if head.facility_energy_j is not None else 'IT'} energy"
             if em.g_co2 is not None and grid_kwh > 0 else
             (em.message or "no carbon intensity").split(";")[0]),
            _change(em.g_co2, prior.emissions.g_co2, ok), "down", vs, em.g_co2),
        Kpi("cost", f"Energy cost, {label}", units.money(head.cost, tariff.currency),
            f"{units.energy(head.grid_energy_j)} "
            f"{'facility' if head.facility_energy_j is not None else 'IT'} energy at "
            f"{tariff.describe()}", _change(head.cost, prior.cost, ok), "down", vs, head.cost),
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
    where: Where = field(default_factory=dict)  # the filter (analytics.filters) as store tags

    def state(self, range_key: str) -> dict[str, Any]:
        """What the browser keeps (dcc.Store) so the next refresh can fetch only new buckets."""
        times = self.series[0].times_ns if self.series else []
        return {"range": range_key, "by": self.by, "bucket_s": self.bucket_s,
                "names": [s.name for s in self.series], "top": self.top,
                "t0": times[0] if times else None, "t1": times[-1] if times else None,
                "where": {k: list(v) if isinstance(v, tuple) else v for k, v in self.where.items()}}


def _other_label(n: int, by: str) -> str:
    return f"other ({n} {'nodes' if by == 'host' else 'models'})"


def _grid(series: list[Series], t0: int, t1: int, bucket_s: int) -> list[Series]:
    """Every series on the same bucket grid [t0, t1]: None where a group reported nothing."""
    step = bucket_s * NS
    grid = list(range(t0, t1 + 1, step))
    out = []
    for s in series:
        lookup = dict(zip(s.times_ns, s.values, strict=True))
        cover = dict(zip(s.times_ns, s.covered_s, strict=False))
        out.append(Series(s.name, grid, [lookup.get(t) for t in grid],  # type: ignore[misc]
                          [cover.get(t, 0.0) for t in grid]))
    return out


def _power_groups(store: Store, window: Window, bucket_s: int, by: str,
                  top: list[str] | None, where: Where | None = None) -> list[Series]:
    where = where or {}
    if top is None:
        return queries.power_series(store, window, bucket_s, (by,), where=where or None)
    named, total = queries.power_series_and_total(store, window, bucket_s, (by,),
                                                  where=where or None, names=set(top))
    if total is None:
        return named
    sums: dict[int, float] = defaultdict(float)
    for s in named:
        for t, v in zip(s.times_ns, s.values, strict=True):
            sums[t] += v
    other = Series("other", total.times_ns, [max(0.0, v - sums.get(t, 0.0))
                                             for t, v in zip(total.times_ns, total.values,
                                                             strict=True)],
                   total.covered_s)
    order = {name: i for i, name in enumerate(top)}
    return [*sorted(named, key=lambda s: order.get(s.name, len(order))), other]


def chart_bucket_s(store: Store, window: Window) -> int:
    """The power chart's bucket: about MAX_BUCKETS over the window, and never narrower than the
    sampling interval of the data in it (a 6 s bucket over 60 s samples would swing between 0
    and ten times the truth). Over a day or more the interval is measured on hourly buckets,
    which the store answers from its hourly tier."""
    bucket = bucket_for(window, MAX_BUCKETS)
    probe = 3600 if window.seconds >= DAY_NS // NS else bucket
    interval = queries.sampling_interval_s(store, window, max(bucket, probe))
    if interval is not None and interval > bucket:
        bucket = max(bucket, bucket_for(Window(0, max(1, int(0.95 * interval * NS))), 1))
    return bucket


def fleet_power(store: Store, window: Window, by: str = "host",
                max_series: int = TOP_SERIES, where: Where | None = None) -> PowerChart:
    """Average power per bucket stacked by node or GPU model; beyond ``max_series`` groups the
    smaller ones are summed as "other", so the chart stays readable and light at 1,000 GPUs."""
    if by not in ("host", "model"):
        raise ValueError(f"by: expected host or model, got {by!r}")
    bucket = chart_bucket_s(store, window)
    step = bucket * NS
    aligned = Window(window.start_ns // step * step, window.end_ns)  # whole first bucket
    ranking = queries.energy_by_where(store, aligned, "gpu", (by,), where or {})
    names = [k[0] for k, _ in sorted(ranking.items(), key=lambda kv: (-kv[1], kv[0]))]
    top = names[:max_series] if len(names) > max_series + 1 else None
    series = _power_groups(store, aligned, bucket, by, top, where)
    if top is not None and series and series[-1].name == "other":
        series[-1] = Series(_other_label(len(names) - len(top), by), series[-1].times_ns,
                            series[-1].values, series[-1].covered_s)
    times = sorted({t for s in series for t in s.times_ns})
    if times:
        series = _grid(series, times[0], times[-1], bucket)
    return PowerChart(aligned, bucket, by, series, len(names), top, dict(where or {}))


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
    if chart_bucket_s(store, window) != bucket:
        return None
    new_t0 = window.start_ns // step * step
    since = Window(max(t1 - step, new_t0, t0), window.end_ns)
    if since.end_ns <= since.start_ns:
        return None
    by = str(state["by"])
    top = state.get("top")
    where = {k: tuple(v) if isinstance(v, list) else v for k, v in (state.get("where") or {}).items()}
    fresh = _power_groups(store, since, bucket, by, top, where)
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


def gpu_heat(store: Store, window: Window, where: Where | None = None) -> list[queries.GpuCell]:
    """One heatmap cell per GPU: means over the window, computed in the store in one grouped query;
    ``where`` keeps the GPUs whose host/model match (a tuple: any of)."""
    def keep(tag: str, value: str) -> bool:
        want = (where or {}).get(tag)
        return want is None or value == want or (isinstance(want, tuple) and value in want)
    return [c for c in queries.gpu_cells(store, window) if keep("host", c.host) and keep("model", c.model)]


@dataclass
class FleetView:
    """Everything the Fleet page shows, for one refresh."""

    window: Window
    kpis: list[Kpi]
    power: PowerChart
    heat: list[queries.GpuCell]


def fleet_view(store: Store, range_key: str, by: str = "host",
               settings: Settings | None = None) -> FleetView:
    """The whole Fleet page (first render): KPIs, the stacked power chart and the GPU heatmap."""
    end = data_end_ns(store)
    window = window_for(store, range_key, end)
    got: dict[str, Any] = queries.gather(store, {
        "kpis": lambda: fleet_kpis(store, range_key, window.end_ns, settings or Settings()),
        "power": lambda: fleet_power(store, window, by),
        "heat": lambda: gpu_heat(store, range_window(store, range_key, end)),
    })
    return FleetView(window, got["kpis"], got["power"], got["heat"])
