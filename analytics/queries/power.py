"""Power over time and what the data cover: coverage-weighted power series, sampling interval,
covered span, and the per-GPU heatmap cells (the dashboard's charts and cards)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from analytics.timeutil import Window
from collector.store.base import AggregateQuery, Store


@dataclass(frozen=True)
class Series:
    """A named time series of (bucket start ns, value); ``covered_s`` is, per bucket, the time
    the data in it covers (empty when the series is not a power series)."""

    name: str
    times_ns: list[int]
    values: list[float]
    covered_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class GpuCell:
    """One GPU over a window, for the fleet heatmap: mean utilisation and power, its power limit, energy."""

    host: str
    gpu: str
    model: str
    util_pct: float | None
    power_w: float | None
    power_limit_w: float | None
    energy_j: float


def gpu_cells(store: Store, window: Window) -> list[GpuCell]:
    """One cell per GPU (host, index, model) with its means over the window, in one grouped query."""
    rows = store.query(AggregateQuery(
        "gpu", (("mean", "util_pct"), ("mean", "power_w"), ("max", "power_limit_w"),
                ("sum", "energy_j")),
        window.start_ns, window.end_ns, group_by=("host", "gpu", "model")))
    return [GpuCell(r.tags["host"], r.tags["gpu"], r.tags["model"], r.values.get("mean_util_pct"),
                    r.values.get("mean_power_w"), r.values.get("max_power_limit_w"),
                    r.values.get("sum_energy_j") or 0.0) for r in rows]


SERIES_TAGS: dict[str, tuple[str, ...]] = {"gpu": ("host", "gpu"), "cpu": ("host", "domain")}


@dataclass(frozen=True)
class Coverage:
    """Energy, power and point count of one group over one bucket, and the time its data covers.

    Each point's ``energy_j`` is what was used since the series' previous point, and
    ``power_w`` its power, so energy / power is the interval a point covers. ΣE / ΣP is
    then the (power-weighted) sampling interval, and a series covers (its points ×
    that interval); with ``series`` series in the group, each holds count / series points.
    """

    energy_j: float
    power_sum_w: float | None
    count: int
    series: int

    @property
    def interval_s(self) -> float | None:
        if not self.power_sum_w or self.power_sum_w <= 0 or self.energy_j <= 0:
            return None
        return self.energy_j / self.power_sum_w

    @property
    def covered_s(self) -> float | None:
        """Seconds the group's data covers (per series), None when it has no power readings."""
        dt = self.interval_s
        if dt is None or self.count <= 0:
            return None
        return self.count / max(1, self.series) * dt


def series_per_group(store: Store, window: Window, measurement: str, by: tuple[str, ...],
                     where: dict[str, str | tuple[str, ...]] | None = None) -> dict[str, int]:
    """How many series (GPUs, CPU domains) each group of ``by`` holds in the window."""
    ident = tuple(dict.fromkeys((*by, *SERIES_TAGS.get(measurement, ()))))
    rows = store.query(AggregateQuery(measurement, (("count", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=ident, where=where or {}))
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.values.get("count_energy_j"):
            out[" / ".join(r.tags[t] for t in by) or "total"] += 1
    return dict(out)


def _coverage_parts(store: Store, window: Window, measurement: str, bucket_s: int | None,
                    by: tuple[str, ...], where: dict[str, str | tuple[str, ...]] | None,
                    ) -> list[tuple[str, int | None, float | None, float | None, int]]:
    """(group name, bucket, ΣE, ΣP, energy points) per group and bucket; ΣE is None where the
    group has power readings but no energy."""
    rows = store.query(AggregateQuery(
        measurement, (("sum", "energy_j"), ("count", "energy_j"), ("mean", "power_w"),
                      ("count", "power_w")), window.start_ns, window.end_ns,
        group_by=by, bucket_s=bucket_s, where=where or {}))
    out = []
    one = by[0] if len(by) == 1 else None
    for r in rows:
        v = r.values
        mean_p, n_p = v.get("mean_power_w"), v.get("count_power_w")
        power_sum = mean_p * n_p if mean_p is not None and n_p else None
        name = r.tags[one] if one is not None else " / ".join(r.tags[t] for t in by) or "total"
        out.append((name, r.time_ns, v.get("sum_energy_j"), power_sum,
                    int(v.get("count_energy_j") or 0)))
    return out


def _coverage_rows(store: Store, window: Window, measurement: str, bucket_s: int | None,
                   by: tuple[str, ...], where: dict[str, str | tuple[str, ...]] | None,
                   ) -> list[tuple[str, int | None, float, float | None, int]]:
    return [(name, t, e, p, n) for name, t, e, p, n in
            _coverage_parts(store, window, measurement, bucket_s, by, where) if e is not None]


def _to_series(parts: Sequence[tuple[str, int | None, float | None, float | None, int]],
               counts: dict[str, int], bucket_s: int) -> list[Series]:
    grouped: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for name, t, energy, power_sum, n in parts:
        if t is None or energy is None:
            continue
        covered = Coverage(energy, power_sum, n, counts.get(name, 1)).covered_s
        if covered is None or covered <= 0:
            covered = float(bucket_s)
        grouped[name].append((t, energy / covered, covered))
    return [Series(name, [t for t, _, _ in pts], [v for _, v, _ in pts], [c for _, _, c in pts])
            for name, pts in sorted(grouped.items())]


def power_series(store: Store, window: Window, bucket_s: int, by: tuple[str, ...] = (),
                 where: dict[str, str | tuple[str, ...]] | None = None,
                 measurement: str = "gpu") -> list[Series]:
    """Average power (W) per bucket, one series per group of ``by`` (one named "total" for ``()``).

    A bucket's power is its energy over the time its data covers (:class:`Coverage`), not
    over the bucket's width: the bucket still filling does not dip, a bucket holding the
    last backfilled point and the first live ones does not spike, and a bucket narrower
    than the sampling interval does not swing between 0 and several times the truth.
    Without power readings a bucket falls back to energy / width.
    """
    counts = series_per_group(store, window, measurement, by, where)
    return _to_series(_coverage_parts(store, window, measurement, bucket_s, by, where), counts,
                      bucket_s)


def power_series_and_total(store: Store, window: Window, bucket_s: int, by: tuple[str, ...],
                           where: dict[str, str | tuple[str, ...]] | None = None,
                           measurement: str = "gpu", names: Collection[str] | None = None,
                           ) -> tuple[list[Series], Series | None]:
    """:func:`power_series` per group of ``by`` (only ``names``, when given) and of all groups
    together.

    The total is its own read without groups: its parts are the sums of the groups' (energy,
    power readings, points and series all add), so it equals ``power_series(.., by=())[0]``,
    and a stacked chart's "other" (total minus the named groups) needs no read of the groups it
    sums. With ``names`` only those groups are read: at 1,000 GPUs the top 10 of 125 nodes are
    2,880 rows a day at 5 minutes, not 36,000.
    """
    counts = series_per_group(store, window, measurement, by, where)
    if names is not None and len(by) == 1:
        # names are groups found under ``where`` (the chart's ranking), so this only narrows it
        named = {**(where or {}), by[0]: tuple(sorted(names))}
        parts = _coverage_parts(store, window, measurement, bucket_s, by, named)
    else:
        parts = _coverage_parts(store, window, measurement, bucket_s, by, where)
        if names is not None:
            parts = [p for p in parts if p[0] in names]
    total = _coverage_parts(store, window, measurement, bucket_s, (), where)
    totals = _to_series(total, {"total": sum(counts.values()) or 1}, bucket_s)
    return _to_series(parts, counts, bucket_s), (totals[0] if totals else None)


def sampling_interval_s(store: Store, window: Window, bucket_s: int,
                        measurement: str = "gpu") -> float | None:
    """The longest sampling interval of the data in the window (the 90th percentile over
    ``bucket_s`` buckets of ΣE / ΣP, which is robust to a few odd buckets), None without power."""
    intervals = sorted(dt for _n, _t, e, p, c in _coverage_rows(store, window, measurement,
                                                                 bucket_s, (), None)
                       if (dt := Coverage(e, p, c, 1).interval_s) is not None)
    if not intervals:
        return None
    return intervals[min(len(intervals) - 1, int(0.9 * len(intervals)))]


def covered_s(store: Store, window: Window, measurement: str = "gpu") -> float:
    """Seconds of the window the data covers: the longest-covered series (one GPU), capped at
    the window. Per series: its points × its sampling interval (ΣE / ΣP), so a 20 s collection
    covers about 20 s, whatever the bucket width of any chart or table."""
    ident = SERIES_TAGS.get(measurement, ())
    best = 0.0
    for _name, _t, e, p, c in _coverage_rows(store, window, measurement, None, ident, None):
        best = max(best, Coverage(e, p, c, 1).covered_s or 0.0)
    return min(window.seconds, best)


def methods_seen(store: Store, window: Window, measurement: str) -> set[str]:
    """The `method` tag values (counter, integrated, estimated, simulated) of a measurement in the window."""
    rows = store.query(AggregateQuery(measurement, (("count", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=("method",)))
    return {r.tags["method"] for r in rows if r.tags.get("method") and r.values.get("count_energy_j")}
