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
    """A named time series of (bucket start ns, value)."""

    name: str
    times_ns: list[int]
    values: list[float]


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


def fleet_power(store: Store, window: Window, bucket_s: int, by: str = "host",
                measurement: str = "gpu") -> list[Series]:
    """Average power per bucket (W), one series per value of tag ``by``, computed in the store.

    Power is SUM(energy_j) / bucket width, exact for every complete bucket. The
    newest bucket is usually still filling: its width is scaled by how many
    points it holds against the bucket before it, so the line does not dip.
    """
    rows = store.query(AggregateQuery(
        measurement, (("sum", "energy_j"), ("count", "energy_j")), window.start_ns,
        window.end_ns, group_by=(by,), bucket_s=bucket_s))
    grouped: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for r in rows:
        energy = r.values.get("sum_energy_j")
        if energy is None or r.time_ns is None:
            continue
        grouped[r.tags[by]].append((r.time_ns, energy, r.values.get("count_energy_j") or 0.0))
    out = []
    for name in sorted(grouped):
        points = grouped[name]
        values = [e / bucket_s for _, e, _ in points]
        if len(points) >= 2 and points[-2][2] > 0:
            fill = min(1.0, points[-1][2] / points[-2][2])
            values[-1] = points[-1][1] / (bucket_s * fill) if fill > 0 else values[-1]
        out.append(Series(name, [t for t, _, _ in points], values))
    return out


def energy_by(store: Store, window: Window, measurement: str, by: tuple[str, ...]) -> dict[
        tuple[str, ...], float]:
    """Total energy (J) per group over the window."""
    rows = store.query(AggregateQuery(measurement, (("sum", "energy_j"),), window.start_ns,
                                      window.end_ns, group_by=by))
    return {tuple(r.tags[t] for t in by): r.values.get("sum_energy_j") or 0.0 for r in rows}


def latest_power_w(store: Store, window: Window, measurement: str = "gpu",
                   by: tuple[str, ...] = ("host", "gpu")) -> dict[tuple[str, ...], float]:
    """The last power reading of each series in the window."""
    rows = store.query(AggregateQuery(measurement, (("last", "power_w"),), window.start_ns,
                                      window.end_ns, group_by=by))
    return {tuple(r.tags[t] for t in by): v for r in rows
            if (v := r.values.get("last_power_w")) is not None}


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


@dataclass(frozen=True)
class FleetTotals:
    """Energy and work over a window, for fleet and facility PER."""

    gpu_energy_j: float
    cpu_energy_j: float
    it_energy_j: float | None
    facility_energy_j: float | None
    work: dict[str, float]
    estimated_cpu_energy_j: float = 0.0


def fleet_totals(store: Store, window: Window) -> FleetTotals:
    gpu = sum(energy_by(store, window, "gpu", ()).values())
    cpu_rows = energy_by(store, window, "cpu", ("method",))
    cpu = sum(cpu_rows.values())
    estimated = sum(v for k, v in cpu_rows.items() if k[0] == "estimated")
    fac_rows = store.query(AggregateQuery(
        "facility", (("sum", "it_energy_j"), ("sum", "facility_energy_j")),
        window.start_ns, window.end_ns))
    it = fac_rows[0].values.get("sum_it_energy_j") if fac_rows else None
    facility = fac_rows[0].values.get("sum_facility_energy_j") if fac_rows else None
    work_rows = store.query(AggregateQuery(
        "job", tuple(("sum", f) for f in WORK_FIELDS), window.start_ns, window.end_ns))
    work = {f: (work_rows[0].values.get(f"sum_{f}") or 0.0) if work_rows else 0.0
            for f in WORK_FIELDS}
    return FleetTotals(gpu, cpu, it, facility, work, estimated)


def node_summaries(store: Store, window: Window) -> list[dict[str, object]]:
    """Per node: GPU and CPU energy, the work of jobs that ran there, and PER on GPU+CPU energy."""
    gpu = energy_by(store, window, "gpu", ("host",))
    cpu = energy_by(store, window, "cpu", ("host",))
    rows = store.query(AggregateQuery(
        "job", tuple(("sum", f) for f in WORK_FIELDS), window.start_ns, window.end_ns,
        group_by=("host",)))
    work: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        work[r.tags["host"]] = {f: r.values.get(f"sum_{f}") or 0.0 for f in WORK_FIELDS}
    out = []
    for (host,) in sorted(set(gpu) | set(cpu)):
        energy = gpu.get((host,), 0.0) + cpu.get((host,), 0.0)
        w = work.get(host, {})
        out.append({"host": host, "gpu_energy_j": gpu.get((host,), 0.0),
                    "cpu_energy_j": cpu.get((host,), 0.0), "energy_j": energy,
                    "work": w, "per": per_by_unit(w, energy)})
    return out
