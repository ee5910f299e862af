"""One attribution round of the job tracker, as a pure function: what happened -> job points.

:class:`collector.tracker.JobTracker` gathers a round's inputs (energy readings,
GPU processes, /proc lookups, CPU ticks) into a :class:`RoundInput`;
:func:`job_round` turns them into ``job`` points with :mod:`collector.attribution`
and returns what the tracker must remember (:class:`RoundResult`). No I/O, no
clock, no lock: the same input gives the same points.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from collector.attribution import CPU_TIME, UNATTRIBUTED, Presence, Split, _weakest, split_by_ticks, split_energy
from collector.job_report import WORK_FIELDS, Progress
from collector.schema import FieldValue, Point, point

MAX_PIDS_PER_JOB = 256
MAX_HELD_ROUNDS = 3  # rounds a job's first work may wait for its first energy share


@dataclass
class JobState:
    """What the tracker knows of one job (reported, or discovered through /proc)."""

    name: str
    first_s: float
    last_s: float
    reported: bool = True  # False: discovered through /proc only
    end_s: float | None = None
    kind: str = ""
    precision: str = ""
    batch_size: int | None = None
    planned_samples: float | None = None
    deferrable: bool | None = None
    gpus: tuple[int, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    work: dict[str, float] = field(default_factory=lambda: dict.fromkeys(WORK_FIELDS, 0.0))
    owner: int | None = None  # the UID that first posted (Unix socket); None: a token holder

    def apply(self, p: Progress) -> None:
        for f in WORK_FIELDS:
            self.work[f] += getattr(p, f)
        for name in ("kind", "precision", "batch_size", "planned_samples", "deferrable"):
            value = getattr(p, name)
            if value is not None:
                setattr(self, name, value)
        if p.gpus is not None:
            self.gpus = p.gpus
        if p.tags is not None:
            self.tags = dict(p.tags)
        if p.pid is not None and len(self.pids) < MAX_PIDS_PER_JOB:
            self.pids.add(p.pid)

    def snapshot(self) -> JobState:
        return JobState(self.name, self.first_s, self.last_s, self.reported, self.end_s, self.kind,
                        self.precision, self.batch_size, self.planned_samples, self.deferrable,
                        self.gpus, dict(self.tags), set(self.pids), dict(self.work), self.owner)


@dataclass(frozen=True)
class GpuReading:
    index: int
    model: str
    energy_j: float | None
    util_pct: float | None
    power_limit_w: float | None


@dataclass(frozen=True)
class RoundInput:
    """Everything one round needs. Times are the agent's monotonic seconds; ``t0`` the last round."""

    host: str
    wall_ns: int
    t0: float
    now_s: float
    jobs: Mapping[str, JobState]  # snapshots of the reported jobs
    gpus: Mapping[int, GpuReading]
    cpu_energy_j: float | None
    pids_now: Mapping[int, list[int]] | None  # GPU index -> compute PIDs (None: unknown)
    prev_pids: Mapping[int, set[int]]  # the same, last round
    utils: Mapping[int, Mapping[int, float]]  # GPU index -> PID -> SM utilisation
    pid_job: Mapping[int, str | None]  # GPU PIDs not reported by a job -> job from /proc
    pid_age_s: Mapping[int, float | None]  # GPU PIDs running now -> age
    job_ticks: Mapping[str, float]  # CPU clock ticks of each job's processes this round
    busy_ticks: float | None  # the host's busy ticks this round (None: unknown)
    attribute_cpu: bool
    can_hold: bool  # energy sources exist, so work may wait a round for its energy
    methods: Mapping[str, str]  # each job's last attribution method
    held: Mapping[str, int]  # rounds each job's work has waited
    live: frozenset[str]  # jobs still tracked (held work goes back to them)
    cpu_estimated_share: float = 0.0  # of the CPU energy, the part a model estimated

    @property
    def interval_s(self) -> float:
        return self.now_s - self.t0


@dataclass
class RoundResult:
    points: list[Point]
    methods: dict[str, str]
    held: dict[str, int]
    held_work: dict[str, dict[str, float]]  # work to add back to the live job for a later round


def _presence(j: JobState, r: RoundInput) -> tuple[float, float]:
    start = max(j.first_s, r.t0) - r.t0
    end = (min(j.end_s, r.now_s) if j.end_s is not None else r.now_s) - r.t0
    return start, max(start, end)


OnGpu = dict[int, dict[str, tuple[float, float, set[int]]]]


def _who_is_on_gpus(r: RoundInput, pid_owner: Mapping[int, str]) -> tuple[OnGpu, dict[str, JobState]]:
    """GPU index -> job -> (presence start, end, its PIDs there); and jobs found through /proc."""
    on_gpu: OnGpu = {}
    for j in r.jobs.values():
        if j.reported:
            for g in j.gpus:
                s, e = _presence(j, r)
                on_gpu.setdefault(g, {})[j.name] = (s, e, set())
    discovered: dict[str, JobState] = {}
    interval_s = r.interval_s
    for g in sorted(set(r.pids_now or {}) | set(r.prev_pids)):
        now_set = set((r.pids_now or {}).get(g, ()))
        prev_set = r.prev_pids.get(g, set())
        for pid in now_set | prev_set:
            name = pid_owner.get(pid) or r.pid_job.get(pid)
            if name is None:
                continue
            here = on_gpu.setdefault(g, {})
            known = r.jobs.get(name)
            if known is not None and known.reported:
                s, e = _presence(known, r)
            else:
                # Seen through /proc only: from the previous round (or its start) to this one
                # (or, gone now, an unknown moment in between: counted as half the interval).
                age = r.pid_age_s.get(pid) if pid in now_set else None
                s = 0.0 if pid in prev_set or age is None else max(0.0, interval_s - age)
                e = interval_s if pid in now_set else interval_s / 2
                job = discovered.get(name) or r.jobs.get(name)
                if job is None:
                    job = discovered[name] = JobState(name, first_s=r.t0, last_s=r.t0, reported=False)
                job.pids.add(pid)
                old = here.get(name)
                if old is not None:
                    s, e = min(s, old[0]), max(e, old[1])
            old_pids = here[name][2] if name in here else set()
            here[name] = (s, e, old_pids | {pid})
    return on_gpu, discovered


@dataclass
class _GpuSplit:
    share_j: dict[str, float] = field(default_factory=dict)
    methods: dict[str, list[str | None]] = field(default_factory=dict)
    job_gpus: dict[str, list[int]] = field(default_factory=dict)
    unattributed: dict[str, list[float]] = field(default_factory=dict)  # model -> [J, idle GPUs]


def _split_gpus(r: RoundInput, on_gpu: OnGpu) -> _GpuSplit:
    out = _GpuSplit()
    for index, here in sorted(on_gpu.items()):
        for name in here:
            out.job_gpus.setdefault(name, []).append(index)
    for index, reading in sorted(r.gpus.items()):
        here = on_gpu.get(index, {})
        if reading.energy_j is None:
            continue
        gpu_utils = r.utils.get(index)
        presences: dict[str, Presence] = {}
        for name, (s, e, pids) in here.items():
            util = (math.fsum(gpu_utils.get(p, 0.0) for p in pids)
                    if gpu_utils is not None and pids else None)
            presences[name] = Presence(s, e, util)
        if any(p.util is None for p in presences.values()):
            presences = {n: Presence(p.start_s, p.end_s) for n, p in presences.items()}
        split = split_energy(reading.energy_j, r.interval_s, presences)
        for name, joules in split.shares_j.items():
            out.share_j[name] = out.share_j.get(name, 0.0) + joules
            out.methods.setdefault(name, []).append(split.method)
        acc = out.unattributed.setdefault(reading.model, [0.0, 0.0])
        acc[0] += split.unattributed_j
        acc[1] += 0 if here else 1
    return out


def _split_cpu(r: RoundInput) -> Split | None:
    if r.cpu_energy_j is not None and r.busy_ticks is not None:
        return split_by_ticks(r.cpu_energy_j, max(0.0, r.busy_ticks), dict(r.job_ticks))
    if r.cpu_energy_j is not None:
        return Split({}, r.cpu_energy_j, None)
    return None


def job_round(r: RoundInput) -> RoundResult:
    """The job points of one round: each job's attributed energy with the work it reported."""
    pid_owner = {pid: j.name for j in r.jobs.values() for pid in j.pids}
    on_gpu, discovered = _who_is_on_gpus(r, pid_owner)
    all_jobs = {**r.jobs, **{n: d for n, d in discovered.items() if n not in r.jobs}}
    pid_owner |= {pid: d.name for d in discovered.values() for pid in d.pids}
    gpu = _split_gpus(r, on_gpu)
    cpu_split = _split_cpu(r)
    result = RoundResult([], dict(r.methods), dict(r.held), {})
    for _name, j in sorted(all_jobs.items()):
        p = _job_point(r, j, on_gpu, gpu, cpu_split, pid_owner, result)
        if p is not None:
            result.points.append(p)
    for model, (joules, idle) in sorted(gpu.unattributed.items()):
        if joules > 0 or idle > 0:
            result.points.append(point("job", {"job": UNATTRIBUTED, "host": r.host, "kind": "gpu",
                                               "gpu_model": model},
                                       {"energy_j": joules, "gpus": idle, "active_s": r.interval_s},
                                       r.wall_ns))
    if cpu_split is not None and cpu_split.unattributed_j > 0:
        result.points.append(point("job", {"job": UNATTRIBUTED, "host": r.host, "kind": "cpu"},
                                   {"energy_j": cpu_split.unattributed_j, "active_s": r.interval_s,
                                    "estimated_j": cpu_split.unattributed_j * r.cpu_estimated_share
                                    or None}, r.wall_ns))
    return result


def _job_point(r: RoundInput, j: JobState, on_gpu: OnGpu, gpu: _GpuSplit, cpu_split: Split | None,
               pid_owner: Mapping[int, str], result: RoundResult) -> Point | None:
    name = j.name
    if j.reported:
        s, e = _presence(j, r)
        active_s = e - s
    else:
        spans = [on_gpu[g][name] for g in gpu.job_gpus.get(name, ()) if name in on_gpu[g]]
        active_s = max((e - s for s, e, _ in spans), default=0.0)
    used = gpu.job_gpus.get(name, [])
    measured_gpu = any(r.gpus[g].energy_j is not None for g in used if g in r.gpus)
    has_cpu = cpu_split is not None and r.attribute_cpu and bool(
        j.pids or any(o == name for o in pid_owner.values()))
    energy: float | None = None
    estimated_j: float | None = None
    method = _weakest(gpu.methods.get(name, ()))
    if measured_gpu or has_cpu:
        cpu_j = cpu_split.shares_j.get(name, 0.0) if cpu_split is not None else 0.0
        estimated_j = cpu_j * r.cpu_estimated_share or None
        energy = gpu.share_j.get(name, 0.0) + cpu_j
        if method is None and cpu_j > 0:
            method = CPU_TIME
    work = {f: v for f, v in j.work.items() if v > 0} if j.reported else {}
    if method is None:
        method = result.methods.get(name)
    else:
        result.methods[name] = method
    held = result.held.get(name, 0)
    if (method is None and work and r.can_hold and held < MAX_HELD_ROUNDS
            and j.end_s is None):  # a job that has ended reports what it has
        # No energy measured for this job yet (its process has no CPU or GPU share this
        # round): keep the work for a round that has one, so work and energy stay in the same
        # series and PER = SUM(work) / SUM(energy) holds. Only a few rounds: a job that
        # never gets a share still reports its work.
        result.held[name] = held + 1
        if name in r.live:
            result.held_work[name] = work
            return None
    if active_s <= 0 and not work and not energy:
        return None
    readings = [r.gpus[g] for g in used if g in r.gpus]
    models = Counter(x.model for x in readings if x.model)
    tags = {**j.tags, "job": name, "host": r.host, "kind": j.kind, "precision": j.precision,
            "gpu_model": models.most_common(1)[0][0] if models else "", "method": method or ""}
    fields: dict[str, FieldValue | None] = {
        "energy_j": energy, "estimated_j": estimated_j, **work, "active_s": active_s,
        "gpus": len(used),
        "batch_size": j.batch_size, "planned_samples": j.planned_samples,
        "deferrable": None if j.deferrable is None else int(j.deferrable),
        "util_pct": _mean(x.util_pct for x in readings),
        "power_limit_w": _mean(x.power_limit_w for x in readings),
    }
    return point("job", tags, fields, r.wall_ns)


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None
