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
from collector.idle import DEFAULT_IDLE_POLICY, split_idle
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
    team: str = ""  # who pays: the jobs API's ``team`` (else a ``team`` tag, /proc, the namespace)

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
        if p.team is not None:
            self.team = p.team
        if p.pid is not None and len(self.pids) < MAX_PIDS_PER_JOB:
            self.pids.add(p.pid)

    def snapshot(self) -> JobState:
        return JobState(self.name, self.first_s, self.last_s, self.reported, self.end_s, self.kind,
                        self.precision, self.batch_size, self.planned_samples, self.deferrable,
                        self.gpus, dict(self.tags), set(self.pids), dict(self.work), self.owner,
                        self.team)


@dataclass(frozen=True)
class GpuReading:
    index: int
    model: str
    energy_j: float | None
    util_pct: float | None
    power_limit_w: float | None
    mig: bool = False  # split into MIG instances: a job holds its instance's share of the GPU
    sm_clock_mhz: float | None = None  # NVML_CLOCK_SM now: shows a clock lock (nvidia-smi -lgc)


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
    idle_policy: str = DEFAULT_IDLE_POLICY  # how idle (static) energy is shared (collector.idle)
    gpu_idle_w: Mapping[int, float] = field(default_factory=dict)  # GPU index -> idle draw W
    cpu_idle_w: float | None = None  # the host's CPU idle draw (None: unknown, all active)
    proc_teams: Mapping[str, str] = field(default_factory=dict)  # job -> team from /proc (Slurm)
    team_map: Mapping[str, str] = field(default_factory=dict)  # Kubernetes namespace -> team

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
    unattributed: dict[str, list[float]] = field(default_factory=dict)  # model -> [J, idle GPUs, idle J]
    idle_j: dict[str, float] = field(default_factory=dict)  # job -> its share of idle energy

    def add(self, split: Split, idle: bool) -> None:
        for name, joules in split.shares_j.items():
            self.share_j[name] = self.share_j.get(name, 0.0) + joules
            self.methods.setdefault(name, []).append(split.method)
            if idle:
                self.idle_j[name] = self.idle_j.get(name, 0.0) + joules


def _idle_part(energy_j: float, idle_w: float | None, interval_s: float) -> float:
    """The static part of a device's energy: its idle draw over the interval, never above the whole."""
    return min(energy_j, idle_w * interval_s) if idle_w is not None and idle_w > 0 else 0.0


def _host_presences(r: RoundInput, on_gpu: OnGpu) -> dict[str, Presence]:
    """Every job on the host this round and when: reported jobs, jobs on a GPU, jobs using CPU."""
    out: dict[str, Presence] = {}
    for j in r.jobs.values():
        s, e = _presence(j, r)
        if j.reported and e > s:
            out[j.name] = Presence(s, e)
    for here in on_gpu.values():
        for name, (s, e, _pids) in here.items():
            old = out.get(name)
            out[name] = Presence(min(s, old.start_s), max(e, old.end_s)) if old else Presence(s, e)
    for name, ticks in r.job_ticks.items():
        if ticks > 0 and name not in out:
            out[name] = Presence(0.0, r.interval_s)
    return out


def _split_gpus(r: RoundInput, on_gpu: OnGpu, host: Mapping[str, Presence]) -> _GpuSplit:
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
        idle_j = _idle_part(reading.energy_j, r.gpu_idle_w.get(index), r.interval_s)
        split = split_energy(reading.energy_j - idle_j, r.interval_s, presences)
        idle = split_idle(idle_j, r.interval_s, presences, host, r.idle_policy,
                          held_share=reading.mig)
        out.add(split, idle=False)
        out.add(idle, idle=True)
        acc = out.unattributed.setdefault(reading.model, [0.0, 0.0, 0.0])
        acc[0] += split.unattributed_j + idle.unattributed_j
        acc[1] += 0 if here else 1
        acc[2] += idle.unattributed_j
    return out


@dataclass(frozen=True)
class _CpuSplit:
    split: Split  # active and idle shares together
    idle_j: dict[str, float]  # each job's idle share
    unattributed_idle_j: float


def _split_cpu(r: RoundInput, host: Mapping[str, Presence]) -> _CpuSplit | None:
    if r.cpu_energy_j is None:
        return None
    if r.busy_ticks is None:  # no CPU attribution: all of it unattributed, whatever the policy
        return _CpuSplit(Split({}, r.cpu_energy_j, None), {}, 0.0)
    idle_j = _idle_part(r.cpu_energy_j, r.cpu_idle_w, r.interval_s)
    active = split_by_ticks(r.cpu_energy_j - idle_j, max(0.0, r.busy_ticks), dict(r.job_ticks))
    idle = split_idle(idle_j, r.interval_s, host, host, r.idle_policy)
    shares = dict(active.shares_j)
    for name, joules in idle.shares_j.items():
        shares[name] = shares.get(name, 0.0) + joules
    method = CPU_TIME if shares else None
    return _CpuSplit(Split(shares, active.unattributed_j + idle.unattributed_j, method),
                     dict(idle.shares_j), idle.unattributed_j)


def job_round(r: RoundInput) -> RoundResult:
    """The job points of one round: each job's attributed energy with the work it reported."""
    pid_owner = {pid: j.name for j in r.jobs.values() for pid in j.pids}
    on_gpu, discovered = _who_is_on_gpus(r, pid_owner)
    all_jobs = {**r.jobs, **{n: d for n, d in discovered.items() if n not in r.jobs}}
    pid_owner |= {pid: d.name for d in discovered.values() for pid in d.pids}
    host = _host_presences(r, on_gpu)
    gpu = _split_gpus(r, on_gpu, host)
    cpu = _split_cpu(r, host)
    cpu_split = cpu.split if cpu is not None else None
    for name, joules in (cpu.idle_j if cpu is not None else {}).items():
        gpu.idle_j[name] = gpu.idle_j.get(name, 0.0) + joules
    result = RoundResult([], dict(r.methods), dict(r.held), {})
    for _name, j in sorted(all_jobs.items()):
        p = _job_point(r, j, on_gpu, gpu, cpu_split, pid_owner, result)
        if p is not None:
            result.points.append(p)
    policy = {"idle_policy": r.idle_policy}
    for model, (joules, idle, idle_j) in sorted(gpu.unattributed.items()):
        if joules > 0 or idle > 0:
            result.points.append(point("job", {"job": UNATTRIBUTED, "host": r.host, "kind": "gpu",
                                               "gpu_model": model, **policy},
                                       {"energy_j": joules, "gpus": idle, "active_s": r.interval_s,
                                        "idle_j": idle_j}, r.wall_ns))
    if cpu is not None and cpu.split.unattributed_j > 0:
        rest = cpu.split.unattributed_j
        result.points.append(point("job", {"job": UNATTRIBUTED, "host": r.host, "kind": "cpu", **policy},
                                   {"energy_j": rest, "active_s": r.interval_s,
                                    "idle_j": cpu.unattributed_idle_j,
                                    "estimated_j": rest * r.cpu_estimated_share or None}, r.wall_ns))
    return result


def job_team(tags: Mapping[str, str], proc_team: str | None, team_map: Mapping[str, str]) -> str:
    """Who pays for a job: its ``team`` (jobs API or tag), else the team its processes'
    environment names (WATTLENS_TEAM, Slurm account, Slurm user), else its Kubernetes
    namespace through ``team_map`` (the namespace itself when unmapped); "" when none is known."""
    if tags.get("team"):
        return tags["team"]
    if proc_team:
        return proc_team
    namespace = tags.get("namespace", "")
    return team_map.get(namespace, namespace)


def with_namespace_teams(points: Iterable[Point], team_map: Mapping[str, str]) -> list[Point]:
    """The points, each ``job`` point that has a namespace (the Kubernetes pod tags, added after
    the round) but no team given the namespace's team (:func:`job_team`)."""
    out = []
    for p in points:
        if p.measurement == "job" and p.tag("namespace") and not p.tag("team"):
            tags = p.tag_map
            tags["team"] = job_team(tags, None, team_map)
            p = point(p.measurement, tags, p.field_map, p.time_ns)
        out.append(p)
    return out


def _mask(gpus: Iterable[int]) -> int | None:
    """Bit i for GPU i (analytics.levels splits a job's work over these); None for no GPU, or
    for an index a 64-bit integer field cannot carry."""
    indices = set(gpus)
    if not indices or max(indices) > 62 or min(indices) < 0:
        return None
    return sum(1 << g for g in indices)


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
    has_cpu = cpu_split is not None and (name in cpu_split.shares_j or (r.attribute_cpu and bool(
        j.pids or any(o == name for o in pid_owner.values()))))
    measured_gpu = measured_gpu or name in gpu.share_j  # an idle share of a GPU it did not use
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
            "gpu_model": models.most_common(1)[0][0] if models else "", "method": method or "",
            "idle_policy": r.idle_policy}
    tags["team"] = job_team({**tags, "team": j.team or tags.get("team", "")},
                            r.proc_teams.get(name), r.team_map)
    fields: dict[str, FieldValue | None] = {
        "energy_j": energy, "estimated_j": estimated_j, **work, "active_s": active_s,
        "idle_j": gpu.idle_j.get(name, 0.0) if energy is not None else None,
        "gpus": len(used),
        "gpu_mask": _mask(used),
        "batch_size": j.batch_size, "planned_samples": j.planned_samples,
        "deferrable": None if j.deferrable is None else int(j.deferrable),
        "util_pct": _mean(x.util_pct for x in readings),
        "power_limit_w": _mean(x.power_limit_w for x in readings),
        "sm_clock_mhz": _mean(x.sm_clock_mhz for x in readings),
    }
    return point("job", tags, fields, r.wall_ns)


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None
