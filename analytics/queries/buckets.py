"""The report's reads: per-GPU, per-job, CPU, facility, carbon and work buckets, and totals by tag."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from analytics.queries.power import Coverage
from analytics.timeutil import Window
from collector.schema import WORK_UNITS
from collector.store.base import AggregateQuery, Store

WORK_FIELDS = tuple(WORK_UNITS)


def energy_by(store: Store, window: Window, measurement: str, by: tuple[str, ...]) -> dict[
        tuple[str, ...], float]:
    """Total energy (J) per group over the window."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by))
    return {tuple(r.tags[t] for t in by): r.values.get("sum_energy_j") or 0.0 for r in rows}


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
    sm_clock_mhz: float | None = None  # mean SM clock of its GPUs (a clock lock shows here)

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
        ("sum", "estimated_j"), ("max", "gpu_mask"), ("mean", "sm_clock_mhz"),
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
            estimated_j=v.get("sum_estimated_j") or 0.0, sm_clock_mhz=v.get("mean_sm_clock_mhz")))
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


def work_buckets(store: Store, window: Window, bucket_s: int) -> list[tuple[int, dict[str, float]]]:
    """(bucket start ns, work per unit) of all jobs together, per time bucket."""
    rows = store.query(AggregateQuery("job", tuple(("sum", f) for f in WORK_FIELDS),
                                      window.start_ns, window.end_ns, bucket_s=bucket_s))
    return [(r.time_ns, {f: r.values.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS})
            for r in rows if r.time_ns is not None]


def estimated_job_energy_j(store: Store, window: Window) -> float:
    """Job energy in the window that a model estimated (field estimated_j): a job metered in-process
    with only the CPU estimate writes no cpu points, so this is where its estimate shows."""
    rows = store.query(AggregateQuery("job", (("sum", "estimated_j"),), window.start_ns,
                                      window.end_ns))
    return sum(r.values.get("sum_estimated_j") or 0.0 for r in rows)


def energy_by_where(store: Store, window: Window, measurement: str, by: tuple[str, ...],
                    where: dict[str, str | tuple[str, ...]]) -> dict[tuple[str, ...], float]:
    """:func:`energy_by`, restricted to the points whose tags match ``where``."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by, where=where))
    return {tuple(r.tags[t] for t in by): r.values.get("sum_energy_j") or 0.0 for r in rows}


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
