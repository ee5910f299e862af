"""The one module that talks to the store: aggregate queries that return plain data for analytics."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from analytics.per import per_by_unit
from analytics.timeutil import Window
from collector.schema import WORK_UNITS
from collector.store.base import AggregateQuery, Store

WORK_FIELDS = tuple(WORK_UNITS)


@dataclass(frozen=True)
class Series:
    """A named time series of (bucket start ns, value); ``covered_s`` is, per bucket, the time
    the data in it covers (empty when the series is not a power series)."""

    name: str
    times_ns: list[int]
    values: list[float]
    covered_s: list[float] = field(default_factory=list)


@dataclass
class JobSummary:
    """One job over a window: energy, work by unit, PER by unit and its metadata."""

    job: str
    hosts: list[str]
    kind: str
    precision: str
    gpu_model: str
    energy_j: float
    work: dict[str, float]
    active_s: float
    gpus: int
    batch_size: float | None
    power_limit_w: float | None
    util_pct: float | None
    deferrable: bool
    planned_samples: float | None
    per: dict[str, float] = field(default_factory=dict)

    @property
    def mean_power_w(self) -> float | None:
        return self.energy_j / self.active_s if self.active_s > 0 else None


def energy_by(store: Store, window: Window, measurement: str, by: tuple[str, ...]) -> dict[
        tuple[str, ...], float]:
    """Total energy (J) per group over the window."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by))
    return {tuple(r.tags[t] for t in by): r.values.get("sum_energy_j") or 0.0 for r in rows}


def job_summaries(store: Store, window: Window) -> list[JobSummary]:
    """Every job seen in the window, summed over its hosts, with PER by work unit."""
    aggs = (
        ("sum", "energy_j"), *(("sum", f) for f in WORK_FIELDS), ("sum", "active_s"),
        ("max", "gpus"), ("max", "batch_size"), ("mean", "power_limit_w"),
        ("mean", "util_pct"), ("max", "deferrable"), ("max", "planned_samples"),
    )
    rows = store.query(AggregateQuery(
        "job", aggs, window.start_ns, window.end_ns,  # type: ignore[arg-type]
        group_by=("job", "host", "kind", "precision", "gpu_model")))
    jobs: dict[str, JobSummary] = {}
    for r in rows:
        v = r.values
        name = r.tags["job"]
        s = jobs.get(name)
        if s is None:
            s = jobs[name] = JobSummary(
                job=name, hosts=[], kind=r.tags["kind"], precision=r.tags["precision"],
                gpu_model=r.tags["gpu_model"], energy_j=0.0, work=dict.fromkeys(WORK_FIELDS, 0.0),
                active_s=0.0, gpus=0, batch_size=v.get("max_batch_size"),
                power_limit_w=v.get("mean_power_limit_w"), util_pct=v.get("mean_util_pct"),
                deferrable=bool(v.get("max_deferrable")),
                planned_samples=v.get("max_planned_samples"))
        s.hosts.append(r.tags["host"])
        s.energy_j += v.get("sum_energy_j") or 0.0
        for f in WORK_FIELDS:
            s.work[f] += v.get(f"sum_{f}") or 0.0
        s.active_s = max(s.active_s, v.get("sum_active_s") or 0.0)
        s.gpus += int(v.get("max_gpus") or 0)
    for s in jobs.values():
        s.per = per_by_unit(s.work, s.energy_j)
    return sorted(jobs.values(), key=lambda j: -j.energy_j)


# --- bucketed reads for the report, recommendations, frontier and carbon ----------------------
# Each function runs one aggregate query pushed down to the store and returns
# plain dataclasses; everything after that is pure functions in analytics/.


@dataclass(frozen=True)
class GpuBucket:
    """One GPU over one time bucket: energy, utilisation, power range and power limit."""

    host: str
    gpu: str
    model: str
    method: str
    time_ns: int
    energy_j: float
    util_mean_pct: float | None
    util_max_pct: float | None
    power_max_w: float | None
    power_min_w: float | None
    power_limit_w: float | None
    count: int
    power_mean_w: float | None = None

    @property
    def covered_s(self) -> float | None:
        """Seconds this GPU's points in the bucket cover (:class:`Coverage`)."""
        power_sum = self.power_mean_w * self.count if self.power_mean_w is not None else None
        return Coverage(self.energy_j, power_sum, self.count, 1).covered_s


def gpu_buckets(store: Store, window: Window, bucket_s: int) -> list[GpuBucket]:
    """Every GPU's buckets over the window, computed in the store (one scan of `gpu`)."""
    rows = store.query(AggregateQuery(
        "gpu", (("sum", "energy_j"), ("mean", "util_pct"), ("max", "util_pct"), ("max", "power_w"),
                ("min", "power_w"), ("mean", "power_limit_w"), ("count", "energy_j"),
                ("mean", "power_w")),
        window.start_ns, window.end_ns, group_by=("host", "gpu", "model", "method"),
        bucket_s=bucket_s))
    out = []
    for r in rows:
        v = r.values
        if r.time_ns is None:
            continue
        out.append(GpuBucket(
            r.tags["host"], r.tags["gpu"], r.tags["model"], r.tags["method"], r.time_ns,
            v.get("sum_energy_j") or 0.0, v.get("mean_util_pct"), v.get("max_util_pct"),
            v.get("max_power_w"), v.get("min_power_w"), v.get("mean_power_limit_w"),
            int(v.get("count_energy_j") or 0), v.get("mean_power_w")))
    return out


@dataclass(frozen=True)
class JobBucket:
    """One job on one host over one time bucket: energy, work by unit, run time and metadata."""

    job: str
    host: str
    kind: str
    precision: str
    gpu_model: str
    time_ns: int
    energy_j: float
    work: dict[str, float]
    active_s: float
    gpus: int
    batch_size: float | None
    power_limit_w: float | None
    util_pct: float | None
    util_max_pct: float | None
    deferrable: bool
    planned_samples: float | None
    workload: str = ""  # the job's explicit workload tag; "" where the reporter set none
    gpu_mask: int | None = None  # bit i set: the job ran on the host's GPU i (where reported)
    estimated_j: float = 0.0  # the part of energy_j a model estimated (the CPU estimate)

    @property
    def workload_class(self) -> str:
        """What the job is an instance of: its ``workload`` tag, else its own id (never parsed)."""
        return self.workload or self.job


def job_buckets(store: Store, window: Window, bucket_s: int,
                job: str | None = None) -> list[JobBucket]:
    """Every job's buckets (or one job's, by id) over the window, per host."""
    aggs = (
        ("sum", "energy_j"), *(("sum", f) for f in WORK_FIELDS), ("sum", "active_s"),
        ("max", "gpus"), ("max", "batch_size"), ("mean", "power_limit_w"), ("mean", "util_pct"),
        ("max", "util_pct"), ("max", "deferrable"), ("max", "planned_samples"),
        ("sum", "estimated_j"), ("max", "gpu_mask"),
    )
    rows = store.query(AggregateQuery(
        "job", aggs, window.start_ns, window.end_ns,  # type: ignore[arg-type]
        group_by=("job", "host", "kind", "precision", "gpu_model", "workload"), bucket_s=bucket_s,
        where={"job": job} if job is not None else {}))
    out = []
    for r in rows:
        v = r.values
        if r.time_ns is None:
            continue
        out.append(JobBucket(
            r.tags["job"], r.tags["host"], r.tags["kind"], r.tags["precision"],
            r.tags["gpu_model"], r.time_ns, v.get("sum_energy_j") or 0.0,
            {f: v.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS}, v.get("sum_active_s") or 0.0,
            int(v.get("max_gpus") or 0), v.get("max_batch_size"), v.get("mean_power_limit_w"),
            v.get("mean_util_pct"), v.get("max_util_pct"), bool(v.get("max_deferrable")),
            v.get("max_planned_samples"), workload=r.tags.get("workload") or "",
            gpu_mask=int(m) if (m := v.get("max_gpu_mask")) is not None else None,
            estimated_j=v.get("sum_estimated_j") or 0.0))
    return out


def energy_buckets(store: Store, window: Window, measurement: str, bucket_s: int,
                   by: tuple[str, ...]) -> list[tuple[tuple[str, ...], int, float]]:
    """(group tags, bucket start ns, energy J) for a measurement, e.g. cpu by (host, method)."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by, bucket_s=bucket_s))
    return [(tuple(r.tags[t] for t in by), r.time_ns, r.values.get("sum_energy_j") or 0.0)
            for r in rows if r.time_ns is not None]


@dataclass(frozen=True)
class FacilityBucket:
    """One site over one bucket: IT and facility energy (or mean powers when energy is absent)."""

    site: str
    time_ns: int
    it_energy_j: float | None
    facility_energy_j: float | None
    it_power_w: float | None
    facility_power_w: float | None


def facility_buckets(store: Store, window: Window, bucket_s: int) -> list[FacilityBucket]:
    """The `facility` measurement per site and bucket."""
    rows = store.query(AggregateQuery(
        "facility", (("sum", "it_energy_j"), ("sum", "facility_energy_j"), ("mean", "it_power_w"),
                     ("mean", "facility_power_w")),
        window.start_ns, window.end_ns, group_by=("site",), bucket_s=bucket_s))
    return [FacilityBucket(r.tags["site"], r.time_ns, r.values.get("sum_it_energy_j"),
                           r.values.get("sum_facility_energy_j"), r.values.get("mean_it_power_w"),
                           r.values.get("mean_facility_power_w"))
            for r in rows if r.time_ns is not None]


def carbon_hourly(store: Store, window: Window) -> dict[str, dict[int, tuple[float, float | None]]]:
    """Hourly mean grid intensity (g/kWh) and renewable share (%) per region: {region: {hour_ns: ..}}."""
    rows = store.query(AggregateQuery(
        "carbon", (("mean", "intensity_g_per_kwh"), ("mean", "renewable_pct")),
        window.start_ns, window.end_ns, group_by=("region",), bucket_s=3600))
    out: dict[str, dict[int, tuple[float, float | None]]] = defaultdict(dict)
    for r in rows:
        g = r.values.get("mean_intensity_g_per_kwh")
        if g is None or r.time_ns is None:
            continue
        out[r.tags["region"]][r.time_ns] = (g, r.values.get("mean_renewable_pct"))
    return dict(out)


def newest_time_ns(store: Store, measurements: tuple[str, ...] = ("gpu", "job")) -> int | None:
    """The newest point time over the given measurements, or None when they are all empty."""
    ends = [span[1] for m in measurements if (span := store.time_range(m)) is not None]
    return max(ends) if ends else None


# --- reads for alert rules (analytics/alerts) ------------------------------------------------


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


# --- reads for the dashboard (dashboard/views.py): small results, aggregated in the store ----


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


# The tags that identify one power series (one GPU, one CPU domain) of a measurement.
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


def _coverage_rows(store: Store, window: Window, measurement: str, bucket_s: int | None,
                   by: tuple[str, ...], where: dict[str, str | tuple[str, ...]] | None,
                   ) -> list[tuple[str, int | None, float, float | None, int]]:
    rows = store.query(AggregateQuery(
        measurement, (("sum", "energy_j"), ("count", "energy_j"), ("mean", "power_w"),
                      ("count", "power_w")), window.start_ns, window.end_ns,
        group_by=by, bucket_s=bucket_s, where=where or {}))
    out = []
    for r in rows:
        energy = r.values.get("sum_energy_j")
        if energy is None:
            continue
        mean_p, n_p = r.values.get("mean_power_w"), r.values.get("count_power_w")
        power_sum = mean_p * n_p if mean_p is not None and n_p else None
        out.append((" / ".join(r.tags[t] for t in by) or "total", r.time_ns, energy, power_sum,
                    int(r.values.get("count_energy_j") or 0)))
    return out


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
    grouped: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for name, t, energy, power_sum, n in _coverage_rows(store, window, measurement, bucket_s,
                                                         by, where):
        if t is None:
            continue
        covered = Coverage(energy, power_sum, n, counts.get(name, 1)).covered_s
        if covered is None or covered <= 0:
            covered = float(bucket_s)
        grouped[name].append((t, energy / covered, covered))
    return [Series(name, [t for t, _, _ in pts], [v for _, v, _ in pts], [c for _, _, c in pts])
            for name, pts in sorted(grouped.items())]


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


def estimated_job_energy_j(store: Store, window: Window) -> float:
    """Job energy in the window that a model estimated (field estimated_j): a job metered in-process
    with only the CPU estimate writes no cpu points, so this is where its estimate shows."""
    rows = store.query(AggregateQuery("job", (("sum", "estimated_j"),), window.start_ns,
                                      window.end_ns))
    return sum(r.values.get("sum_estimated_j") or 0.0 for r in rows)


def methods_seen(store: Store, window: Window, measurement: str) -> set[str]:
    """The `method` tag values (counter, integrated, estimated, simulated) of a measurement in the window."""
    rows = store.query(AggregateQuery(measurement, (("count", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=("method",)))
    return {r.tags["method"] for r in rows if r.tags.get("method") and r.values.get("count_energy_j")}


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


def work_buckets(store: Store, window: Window, bucket_s: int) -> list[tuple[int, dict[str, float]]]:
    """(bucket start ns, work per unit) of all jobs together, per time bucket."""
    rows = store.query(AggregateQuery("job", tuple(("sum", f) for f in WORK_FIELDS),
                                      window.start_ns, window.end_ns, bucket_s=bucket_s))
    return [(r.time_ns, {f: r.values.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS})
            for r in rows if r.time_ns is not None]


def cached(store: Store) -> Store:
    """``store`` behind the store layer's read-through rollup cache (what the dashboard reads)."""
    from collector.store.cache import CachedStore

    return CachedStore(store)


# --- GPU health and the dashboard's filters (analytics/health.py) -----------------------------
HEALTH_FIELDS = ("temp_c", "sm_clock_mhz", "mem_clock_mhz", "mem_util_pct", "util_pct", "power_w",
                 "power_limit_w", "throttle_power", "throttle_thermal")


def gpu_health_buckets(store: Store, window: Window, bucket_s: int,
                       where: dict[str, str | tuple[str, ...]] | None = None,
                       ) -> dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]]:
    """Per GPU (host, gpu, model), per bucket: the mean of each health field (None where not stored)."""
    rows = store.query(AggregateQuery("gpu", tuple(("mean", f) for f in HEALTH_FIELDS),
                                      window.start_ns, window.end_ns,
                                      group_by=("host", "gpu", "model"), bucket_s=bucket_s,
                                      where=where or {}))
    out: dict[tuple[str, ...], list[tuple[int, dict[str, float | None]]]] = defaultdict(list)
    for r in rows:
        if r.time_ns is not None:
            out[(r.tags["host"], r.tags["gpu"], r.tags["model"])].append(
                (r.time_ns, {f: r.values.get(f"mean_{f}") for f in HEALTH_FIELDS}))
    return {k: sorted(v, key=lambda b: b[0]) for k, v in out.items()}


def job_work_by_host(store: Store, window: Window) -> dict[str, tuple[dict[str, float], float]]:
    """Per host: the work of its jobs by unit and the energy those job records hold (J)."""
    rows = store.query(AggregateQuery(
        "job", (("sum", "energy_j"), *(("sum", f) for f in WORK_FIELDS)),  # type: ignore[arg-type]
        window.start_ns, window.end_ns, group_by=("host",)))
    return {r.tags["host"]: ({f: r.values.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS},
                             r.values.get("sum_energy_j") or 0.0) for r in rows}


def filter_values(store: Store, window: Window) -> dict[str, list[str]]:
    """What the dashboard's filters can pick in the window: nodes, GPU models and jobs, sorted."""
    gpus = energy_by(store, window, "gpu", ("host", "model"))
    jobs = energy_by(store, window, "job", ("job", "host"))
    return {"node": sorted({h for h, _m in gpus}), "model": sorted({m for _h, m in gpus}),
            "job": sorted({j for j, _h in jobs})}


def hosts_of_job(store: Store, window: Window, job: str) -> list[str]:
    """The hosts a job ran on in the window."""
    return sorted({h for (h,) in energy_by_where(store, window, "job", ("host",), {"job": job})})


def energy_by_where(store: Store, window: Window, measurement: str, by: tuple[str, ...],
                    where: dict[str, str | tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """:func:`energy_by`, restricted to the points whose tags match ``where``."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by, where=where))
    return {tuple(r.tags[t] for t in by): r.values.get("sum_energy_j") or 0.0 for r in rows}


# --- the power-cap autopilot (analytics/autopilot.py) -----------------------------------------
AUTOPILOT_EVENT_FIELDS = ("cap_w", "previous_w", "original_w", "gpus", "slowdown_pct", "throughput",
                          "power_w", "per", "baseline_throughput", "baseline_power_w", "baseline_per")


def autopilot_events(store: Store, window: Window) -> list[tuple[int, dict[str, str], dict[str, float | None]]]:
    """(time ns, tags, fields) of every autopilot change and settled event (one-second buckets:
    a group changes at most once per interval)."""
    rows = store.query(AggregateQuery(
        "autopilot", tuple(("max", f) for f in AUTOPILOT_EVENT_FIELDS), window.start_ns,
        window.end_ns, group_by=("host", "job", "event", "reason"), bucket_s=1,
        where={"event": ("change", "settled")}))
    return sorted(((r.time_ns, dict(r.tags), {f: r.values.get(f"max_{f}") for f in AUTOPILOT_EVENT_FIELDS})
                   for r in rows if r.time_ns is not None), key=lambda e: (e[0], sorted(e[1].items())))


def autopilot_windows(store: Store, window: Window) -> dict[tuple[str, str], dict[str, float | None]]:
    """Per (host, job): the autopilot's summed window energy, work, seconds and energy saved."""
    rows = store.query(AggregateQuery(
        "autopilot", (("sum", "energy_j"), ("sum", "saved_j"), ("sum", "work"), ("sum", "seconds"),
                      ("max", "original_w"), ("min", "cap_w")), window.start_ns, window.end_ns,
        group_by=("host", "job"), where={"event": "window"}))
    return {(r.tags.get("host", ""), r.tags.get("job", "")): dict(r.values) for r in rows}


def job_energy_by_tags(store: Store, window: Window, tags: tuple[str, ...]
                       ) -> dict[tuple[str, ...], tuple[float, float]]:
    """(job, host, *tags) -> (energy J, idle J) of the job points over the window; a tag a point
    lacks reads "" (the team showback and the idle policy, analytics.teams)."""
    by = ("job", "host", *tags)
    rows = store.query(AggregateQuery("job", (("sum", "energy_j"), ("sum", "idle_j")),
                                      window.start_ns, window.end_ns, group_by=by))
    return {tuple(r.tags.get(t) or "" for t in by): (r.values.get("sum_energy_j") or 0.0,
                                                    r.values.get("sum_idle_j") or 0.0)
            for r in rows}
