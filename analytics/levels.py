"""PER at every level (GPU, job, node, fleet, facility) and each job's PER trend against its baseline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics import queries
from analytics.per import PER_UNITS, gflops_per_watt, per, per_by_unit, primary_unit
from analytics.queries import WORK_FIELDS, FacilityBucket, GpuBucket, JobBucket
from analytics.timeutil import Window
from collector.store.base import Store

NS = 1_000_000_000
BUSY_UTIL_PCT = 5.0
ESTIMATED = "estimated"

# How GPU-level work is attributed (job points carry no gpu tag); docs/analytics.md repeats it.
GPU_ATTRIBUTION = (
    "job work attributed to GPUs: per host and time bucket, each job's work is split over the "
    "GPUs it reported running on (its gpu_mask), in proportion to their energy; for a job that "
    "reported none, over the host's GPUs of the job's model that were busy (mean util >= 5 %) "
    "and whose power limit equals the job's, else over the busy GPUs of that model, else over "
    "all its GPUs on the host. Such jobs that share a host, model and power limit get a blended "
    "GPU-level PER; job-level PER is exact.")


@dataclass(frozen=True)
class PerRow:
    """Energy, work and PER of one thing at one level; ``estimated_energy_j`` is modelled, not measured."""

    level: str  # gpu | job | node | fleet | facility
    name: str
    energy_j: float
    work: Mapping[str, float]
    per: Mapping[str, float]
    estimated_energy_j: float = 0.0
    attributed: bool = False  # work attributed by GPU_ATTRIBUTION, not measured per GPU
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gflops_per_w(self) -> float | None:
        """FLOP/J is FLOP/s per W; in the customary GFLOP/s per W."""
        return gflops_per_watt(self.per.get("flops"))

    @property
    def estimated(self) -> bool:
        return self.estimated_energy_j > 0

    @property
    def label(self) -> str:
        """A note for tables and figures: which part of the energy is estimated."""
        if not self.estimated:
            return ""
        share = self.estimated_energy_j / self.energy_j if self.energy_j > 0 else 1.0
        return f"incl. {100 * share:.0f}% estimated energy"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "name": self.name, "energy_j": self.energy_j,
                "work": dict(self.work), "per": dict(self.per),
                "per_units": {u: PER_UNITS[u] for u in self.per},
                "gflops_per_s_per_w": self.gflops_per_w,
                "estimated_energy_j": self.estimated_energy_j, "estimated": self.estimated,
                "label": self.label, "attributed": self.attributed, "extra": dict(self.extra)}


def _row(level: str, name: str, energy_j: float, work: Mapping[str, float],
         estimated_j: float = 0.0, attributed: bool = False, **extra: Any) -> PerRow:
    clean = {u: w for u, w in work.items() if w > 0}
    return PerRow(level, name, energy_j, clean, per_by_unit(clean, energy_j), estimated_j,
                  attributed, extra)


# --- GPU ---------------------------------------------------------------------------------
def attribute_work_to_gpus(gpus: Sequence[GpuBucket], jobs: Sequence[JobBucket],
                           busy_util_pct: float = BUSY_UTIL_PCT) -> dict[tuple[str, str], dict[str, float]]:
    """Work per (host, gpu) by the method in GPU_ATTRIBUTION; buckets must share one bucket width."""
    by_slot: dict[tuple[str, int], list[GpuBucket]] = defaultdict(list)
    for g in gpus:
        by_slot[(g.host, g.time_ns)].append(g)
    out: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(WORK_FIELDS, 0.0))
    for j in jobs:
        here = by_slot.get((j.host, j.time_ns), [])
        if not here:
            continue
        chosen = _masked(here, j.gpu_mask) or _guessed(here, j, busy_util_pct)
        total = sum(g.energy_j for g in chosen)
        for g in chosen:
            share = g.energy_j / total if total > 0 else 1 / len(chosen)
            acc = out[(g.host, g.gpu)]
            for unit, w in j.work.items():
                acc[unit] += w * share
    return dict(out)


def _masked(here: list[GpuBucket], mask: int | None) -> list[GpuBucket]:
    """The GPUs of a host whose index is set in a job's ``gpu_mask`` (none without a mask)."""
    if not mask:
        return []
    return [g for g in here if g.gpu.isdigit() and mask >> int(g.gpu) & 1]


def _guessed(here: list[GpuBucket], j: JobBucket, busy_util_pct: float) -> list[GpuBucket]:
    """For a job that did not say which GPUs it ran on: the host's busy GPUs of its model and
    power limit, else the busy ones of its model, else all of its model."""
    model = [g for g in here if not j.gpu_model or g.model == j.gpu_model] or here
    busy = [g for g in model if (g.util_mean_pct or 0.0) >= busy_util_pct]
    capped = [g for g in busy if j.power_limit_w is not None and g.power_limit_w is not None
              and abs(g.power_limit_w - j.power_limit_w) < 1.0]
    return capped or busy or model


def gpu_per(gpus: Sequence[GpuBucket], jobs: Sequence[JobBucket],
            busy_util_pct: float = BUSY_UTIL_PCT) -> list[PerRow]:
    """One row per GPU: its energy, the work attributed to it, PER, utilisation and power limit."""
    work = attribute_work_to_gpus(gpus, jobs, busy_util_pct)
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for g in gpus:
        a = acc.setdefault((g.host, g.gpu), {"energy": 0.0, "est": 0.0, "util": 0.0, "n": 0,
                                              "model": g.model, "limit": [], "methods": set()})
        a["energy"] += g.energy_j
        if g.method == ESTIMATED:
            a["est"] += g.energy_j
        a["util"] += (g.util_mean_pct or 0.0) * g.count
        a["n"] += g.count
        if g.power_limit_w is not None:
            a["limit"].append(g.power_limit_w)
        a["methods"].add(g.method)
    rows = []
    for (host, gpu), a in sorted(acc.items(), key=lambda kv: (kv[0][0], _num_key(kv[0][1]))):
        rows.append(_row("gpu", f"{host}/{gpu}", a["energy"], work.get((host, gpu), {}), a["est"],
                         attributed=True, host=host, gpu=gpu, model=a["model"],
                         util_mean_pct=a["util"] / a["n"] if a["n"] else None,
                         power_limit_w=max(a["limit"]) if a["limit"] else None,
                         methods=sorted(a["methods"])))
    return rows


def _num_key(text: str) -> tuple[int, str]:
    return (int(text), "") if text.isdigit() else (1 << 30, text)


# --- jobs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobAggregate:
    """One job over the window, summed over its hosts and buckets."""

    job: str
    kind: str
    precision: str
    gpu_model: str
    hosts: tuple[str, ...]
    energy_j: float
    work: Mapping[str, float]
    active_s: float
    gpus: int
    batch_size: float | None
    power_limit_w: float | None
    util_pct: float | None
    util_max_pct: float | None
    deferrable: bool
    planned_samples: float | None
    first_ns: int
    last_ns: int
    estimated_j: float = 0.0  # the part of energy_j a model estimated
    workload: str = ""  # the workload tag (else the job id): see JobBucket.workload_class
    gpu_masks: Mapping[str, int] = field(default_factory=dict)  # host -> GPUs it ran on, as bits

    @property
    def gpu_seconds(self) -> float:
        return self.active_s * max(self.gpus, 1)

    @property
    def per(self) -> dict[str, float]:
        """PER for every work unit the job reported (samples/J, tokens/J, FLOP/J, steps/J)."""
        return per_by_unit(self.work, self.energy_j)

    @property
    def mean_power_w(self) -> float | None:
        return self.energy_j / self.active_s if self.active_s > 0 else None


def job_totals(store: Store, window: Window) -> dict[str, JobAggregate]:
    """Every job seen in the window, summed over its hosts: the report's definition
    (:func:`aggregate_jobs` over hourly buckets), for alert rules and the autopilot's units."""
    return aggregate_jobs(queries.job_buckets(store, window, 3600))


def aggregate_jobs(jobs: Iterable[JobBucket]) -> dict[str, JobAggregate]:
    """Sum each job's buckets: energy and work add; run time is the longest per-host sum."""
    acc: dict[str, dict[str, Any]] = {}
    for b in sorted(jobs, key=lambda b: (b.job, b.time_ns, b.host)):
        a = acc.get(b.job)
        if a is None:
            a = acc[b.job] = {"b": b, "hosts": {}, "energy": 0.0, "work": dict.fromkeys(WORK_FIELDS, 0.0),
                              "util": 0.0, "util_w": 0.0, "util_max": None, "limit": 0.0,
                              "limit_w": 0.0, "first": b.time_ns, "last": b.time_ns,
                              "batch": None, "planned": None, "deferrable": False}
        h = a["hosts"].setdefault(b.host, {"active": 0.0, "gpus": 0, "mask": None})
        if b.gpu_mask is not None:
            h["mask"] = (h["mask"] or 0) | b.gpu_mask
        h["active"] += b.active_s
        h["gpus"] = max(h["gpus"], b.gpus)
        a["energy"] += b.energy_j
        a["estimated"] = a.get("estimated", 0.0) + b.estimated_j
        for unit, w in b.work.items():
            a["work"][unit] = a["work"].get(unit, 0.0) + w
        weight = b.active_s if b.active_s > 0 else 0.0
        if b.util_pct is not None and weight > 0:
            a["util"] += b.util_pct * weight
            a["util_w"] += weight
        if b.util_max_pct is not None:
            a["util_max"] = max(a["util_max"] or 0.0, b.util_max_pct)
        if b.power_limit_w is not None and weight > 0:
            a["limit"] += b.power_limit_w * weight
            a["limit_w"] += weight
        a["first"] = min(a["first"], b.time_ns)
        a["last"] = max(a["last"], b.time_ns)
        if b.batch_size is not None:
            a["batch"] = max(a["batch"] or 0.0, b.batch_size)
        if b.planned_samples is not None:
            a["planned"] = max(a["planned"] or 0.0, b.planned_samples)
        a["deferrable"] = a["deferrable"] or b.deferrable
    out = {}
    for name, a in acc.items():
        b = a["b"]
        out[name] = JobAggregate(
            name, b.kind, b.precision, b.gpu_model, tuple(sorted(a["hosts"])), a["energy"],
            a["work"], max((h["active"] for h in a["hosts"].values()), default=0.0),
            sum(h["gpus"] for h in a["hosts"].values()), a["batch"],
            a["limit"] / a["limit_w"] if a["limit_w"] else None,
            a["util"] / a["util_w"] if a["util_w"] else None, a["util_max"], a["deferrable"],
            a["planned"], a["first"], a["last"], estimated_j=a.get("estimated", 0.0),
            workload=b.workload_class,
            gpu_masks={host: h["mask"] for host, h in a["hosts"].items() if h["mask"] is not None})
    return out


def job_per(jobs: Mapping[str, JobAggregate]) -> list[PerRow]:
    """One row per job, most energy first (ties by name)."""
    rows = []
    for j in sorted(jobs.values(), key=lambda j: (-j.energy_j, j.job)):
        rows.append(_row("job", j.job, j.energy_j, j.work, j.estimated_j, kind=j.kind, precision=j.precision,
                         gpu_model=j.gpu_model, hosts=list(j.hosts), gpus=j.gpus,
                         active_s=j.active_s, power_limit_w=j.power_limit_w, util_pct=j.util_pct,
                         mean_power_w=j.mean_power_w))
    return rows


@dataclass(frozen=True)
class PerTrend:
    """A job's hourly PER in one unit against its baseline (its first hour, or a set reference)."""

    job: str
    unit: str
    baseline: float | None
    baseline_source: str
    times_ns: tuple[int, ...]
    values: tuple[float | None, ...]
    latest: float | None
    change_pct: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "unit": self.unit, "per_unit": PER_UNITS[self.unit],
                "baseline": self.baseline, "baseline_source": self.baseline_source,
                "times_ns": list(self.times_ns), "values": list(self.values),
                "latest": self.latest, "change_pct": self.change_pct}


def per_trends(jobs: Iterable[JobBucket], references: Mapping[str, float] | None = None,
               period_s: int = 3600) -> list[PerTrend]:
    """Hourly PER per job; baseline = the first ``period_s`` of the job in the data, or ``references[job]``.

    ``latest`` is the PER over the job's last ``period_s``; ``change_pct`` compares it with the baseline.
    """
    period_ns = period_s * NS
    by_job: dict[str, list[JobBucket]] = defaultdict(list)
    for b in jobs:
        by_job[b.job].append(b)
    out = []
    for name in sorted(by_job):
        buckets = by_job[name]
        total: dict[str, float] = defaultdict(float)
        for b in buckets:
            for u, w in b.work.items():
                total[u] += w
        unit = primary_unit(total)
        if unit is None:
            continue
        first = min(b.time_ns for b in buckets)
        last = max(b.time_ns for b in buckets)
        hours: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        base = [0.0, 0.0]
        recent = [0.0, 0.0]
        for b in buckets:
            slot = hours[b.time_ns // period_ns * period_ns]
            slot[0] += b.work.get(unit, 0.0)
            slot[1] += b.energy_j
            if b.time_ns < first + period_ns:
                base[0] += b.work.get(unit, 0.0)
                base[1] += b.energy_j
            if b.time_ns > last - period_ns:
                recent[0] += b.work.get(unit, 0.0)
                recent[1] += b.energy_j
        baseline: float | None = per(base[0], base[1])
        source = "first hour"
        if references and name in references:
            baseline, source = references[name], "reference"
        latest = per(recent[0], recent[1])
        change = (100 * (latest / baseline - 1) if latest is not None and baseline else None)
        times = tuple(sorted(hours))
        out.append(PerTrend(name, unit, baseline, source, times,
                            tuple(per(hours[t][0], hours[t][1]) for t in times), latest, change))
    return out


# --- node, fleet, facility ---------------------------------------------------------------------
def node_per(gpus: Sequence[GpuBucket], cpu: Sequence[tuple[tuple[str, ...], int, float]],
             jobs: Sequence[JobBucket]) -> list[PerRow]:
    """Per host: GPU + CPU energy against the work of every job that ran there.

    ``cpu`` rows are ``((host, method), time, energy)`` from ``queries.energy_buckets``.
    """
    energy: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # gpu, cpu, estimated
    for g in gpus:
        energy[g.host][0] += g.energy_j
        if g.method == ESTIMATED:
            energy[g.host][2] += g.energy_j
    for (host, method), _t, e in cpu:
        energy[host][1] += e
        if method == ESTIMATED:
            energy[host][2] += e
    work: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(WORK_FIELDS, 0.0))
    for j in jobs:
        for u, w in j.work.items():
            work[j.host][u] += w
    rows = []
    for host in sorted(set(energy) | set(work)):
        gpu_j, cpu_j, est = energy[host]
        rows.append(_row("node", host, gpu_j + cpu_j, work.get(host, {}), est, gpu_energy_j=gpu_j,
                         cpu_energy_j=cpu_j))
    return rows


@dataclass(frozen=True)
class FacilityEnergy:
    """IT and facility energy over the window and the PUE between them (None without facility data)."""

    it_energy_j: float | None
    facility_energy_j: float | None
    pue: float | None
    source: str
    scales_measured_it: bool = False  # facility energy = our GPU + CPU energy × PUE


def facility_energy(buckets: Sequence[FacilityBucket], measured_it_j: float) -> FacilityEnergy:
    """Facility energy = IT energy × PUE, both from the `facility` measurement.

    With energy fields, PUE = Σ facility_energy_j / Σ it_energy_j. With only power
    fields, PUE = mean facility power / mean IT power, applied to the measured
    GPU + CPU energy. No facility points: all None.
    """
    it = sum(b.it_energy_j for b in buckets if b.it_energy_j is not None)
    fac = sum(b.facility_energy_j for b in buckets if b.facility_energy_j is not None)
    if it > 0 and fac > 0:
        return FacilityEnergy(it, fac, fac / it, "facility measurement: energy")
    it_w = [b.it_power_w for b in buckets if b.it_power_w]
    fac_w = [b.facility_power_w for b in buckets if b.facility_power_w]
    if it_w and fac_w:
        pue = (sum(fac_w) / len(fac_w)) / (sum(it_w) / len(it_w))
        return FacilityEnergy(measured_it_j, measured_it_j * pue, pue,
                              "facility measurement: power (PUE applied to GPU + CPU energy)", True)
    return FacilityEnergy(None, None, None, "no facility measurement in the window")


def fleet_rows(gpus: Sequence[GpuBucket], cpu: Sequence[tuple[tuple[str, ...], int, float]],
               jobs: Sequence[JobBucket], fac: FacilityEnergy) -> list[PerRow]:
    """The fleet row (GPU + CPU energy) and, with facility data, the facility row (IT × PUE)."""
    gpu_j = sum(g.energy_j for g in gpus)
    cpu_j = sum(e for _k, _t, e in cpu)
    est = sum(g.energy_j for g in gpus if g.method == ESTIMATED) + sum(
        e for (_h, m), _t, e in cpu if m == ESTIMATED)
    work: dict[str, float] = dict.fromkeys(WORK_FIELDS, 0.0)
    for j in jobs:
        for u, w in j.work.items():
            work[u] += w
    gpu_only = per_by_unit({u: w for u, w in work.items() if w > 0}, gpu_j)
    rows = [_row("fleet", "fleet", gpu_j + cpu_j, work, est, gpu_energy_j=gpu_j,
                 cpu_energy_j=cpu_j, per_gpu_energy_only=gpu_only)]
    if fac.facility_energy_j is not None:
        est_share = est / (gpu_j + cpu_j) if gpu_j + cpu_j > 0 else 0.0
        rows.append(_row("facility", "facility", fac.facility_energy_j, work,
                         fac.facility_energy_j * est_share if fac.scales_measured_it else 0.0,
                         it_energy_j=fac.it_energy_j, pue=fac.pue, source=fac.source))
    return rows
