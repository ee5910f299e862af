"""Job progress ingest (POST /v1/jobs/{id}/progress) and the `jobs` source that turns it into job points.

Any program, in any language, reports what it got done::

    curl --unix-socket /run/wattlens/ingest.sock -X POST http://agent/v1/jobs/bert-ft/progress \\
         -H 'Content-Type: application/json' -d '{"samples": 64, "tokens": 32768, "steps": 1}'

Counts are increments since the caller's previous report. The :class:`JobTracker`
source adds them up, and each sampling round emits one ``job`` point per job
with the work done in the interval, the wall time it ran (``active_s``) and
the energy :mod:`collector.attribution` gives it, so energy and work always
travel together. Validation is strict and every bad request is a 4xx with a
one-line JSON message naming the field; requests never touch the sampling
thread beyond one short lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.attribution import (
    CPU_TIME,
    JOB_ID_RE,
    UNATTRIBUTED,
    EnergyTap,
    GpuProcesses,
    NvmlProcesses,
    Presence,
    ProcTree,
    Split,
    _weakest,
    split_by_ticks,
    split_energy,
)
from collector.auth import check_request, check_token
from collector.http_server import Peer, Request, Response
from collector.logutil import LogOnce
from collector.schema import FieldValue, Point, point
from collector.sources.base import Probe, Source, Tick
from collector.sources.rapl import is_additive_cpu_domain

log = logging.getLogger("wattlens.ingest")

MAX_BODY_BYTES = 64 * 1024
MAX_KEYS = 32
MAX_TAGS = 8
MAX_GPUS = 64
MAX_GPU_INDEX = 1023
MAX_COUNT = 1e30  # per report; far above any real interval's FLOPs
MAX_BATCH_SIZE = 10_000_000
MAX_PID = 1 << 22  # Linux pid_max ceiling
MAX_SEQ = (1 << 63) - 1
MAX_PIDS_PER_JOB = 256
MAX_JOBS = 1024
WORK_FIELDS = ("samples", "tokens", "steps", "flops")
MAX_HELD_ROUNDS = 3  # rounds a job's first work may wait for its first energy share
KINDS = ("train", "finetune", "infer", "eval", "batch", "other")
# Compute precision: the dtype matmuls ran in; "amp-" when autocast mixed it with fp32.
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "amp-bf16", "amp-fp16")
# Tags a caller may not set: the schema's own job tags and the attribution method.
RESERVED_TAGS = frozenset({"job", "host", "kind", "precision", "gpu_model", "method"})
_TAG_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9._:/@+-]{1,64}")
_KEYS = frozenset({*WORK_FIELDS, "kind", "precision", "batch_size", "gpus", "planned_samples",
                   "tags", "deferrable", "pid", "seq", "final"})


class IngestError(ValueError):
    """A request the agent refuses: HTTP ``status`` and a one-line message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Progress:
    """One validated progress report: work increments plus optional metadata (None = unchanged)."""

    job: str
    samples: float = 0.0
    tokens: float = 0.0
    steps: float = 0.0
    flops: float = 0.0
    kind: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    gpus: tuple[int, ...] | None = None
    planned_samples: float | None = None
    tags: Mapping[str, str] | None = None
    deferrable: bool | None = None
    pid: int | None = None
    seq: int | None = None
    final: bool = False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_job_id(job: Any) -> str:
    """The job id, or IngestError(400): 1-128 characters of [A-Za-z0-9._:-], not 'unattributed'."""
    if not isinstance(job, str) or not JOB_ID_RE.fullmatch(job):
        raise IngestError(400, f"job id: must be 1-128 characters of A-Z a-z 0-9 . _ : -, "
                               f"got {_show(job)}")
    if job == UNATTRIBUTED:
        raise IngestError(400, f"job id: {UNATTRIBUTED!r} is reserved for energy no job used")
    return job


def _number(name: str, value: Any, *, maximum: float = MAX_COUNT) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise IngestError(400, f"{name}: must be a number, got {_show(value)}")
    result = float(value)
    if not math.isfinite(result) or result < 0 or result > maximum:
        raise IngestError(400, f"{name}: must be a finite number from 0 to {maximum:g}, "
                               f"got {_show(value)}")
    return result


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise IngestError(400, f"{name}: must be an integer from {lo} to {hi}, got {_show(value)}")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise IngestError(400, f"{name}: must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _no_constants(name: str) -> Any:
    raise IngestError(400, f"body: {name} is not valid JSON; send finite numbers")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise IngestError(400, f"{_show(key)}: appears twice in the JSON object")
        out[key] = value
    return out


def parse_progress(job: str, body: bytes) -> Progress:
    """Validate a progress report for ``job``; raise IngestError (4xx) naming the first bad field."""
    job = check_job_id(job)
    if len(body) > MAX_BODY_BYTES:
        raise IngestError(413, f"body: {len(body)} bytes is above the limit of {MAX_BODY_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants,
                          object_pairs_hook=_unique_keys)
    except IngestError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(400, f"body: not valid UTF-8 JSON ({message[:80]})") from None
    if not isinstance(data, dict):
        raise IngestError(400, f"body: must be a JSON object, got {type(data).__name__}")
    if len(data) > MAX_KEYS:
        raise IngestError(400, f"body: at most {MAX_KEYS} keys, got {len(data)}")
    for key in data:
        if key not in _KEYS:
            raise IngestError(400, f"{_show(key)}: unknown field; known: {', '.join(sorted(_KEYS))}")
    opt: dict[str, Any] = {f: _number(f, data[f]) for f in WORK_FIELDS if f in data}
    if "kind" in data:
        opt["kind"] = _choice("kind", data["kind"], KINDS)
    if "precision" in data:
        opt["precision"] = _choice("precision", data["precision"], PRECISIONS)
    if "batch_size" in data:
        opt["batch_size"] = _integer("batch_size", data["batch_size"], 1, MAX_BATCH_SIZE)
    if "planned_samples" in data:
        opt["planned_samples"] = _number("planned_samples", data["planned_samples"])
    if "deferrable" in data:
        if not isinstance(data["deferrable"], bool):
            raise IngestError(400, f"deferrable: must be true or false, got {_show(data['deferrable'])}")
        opt["deferrable"] = data["deferrable"]
    if "final" in data:
        if not isinstance(data["final"], bool):
            raise IngestError(400, f"final: must be true or false, got {_show(data['final'])}")
        opt["final"] = data["final"]
    if "pid" in data:
        opt["pid"] = _integer("pid", data["pid"], 1, MAX_PID)
    if "seq" in data:
        opt["seq"] = _integer("seq", data["seq"], 0, MAX_SEQ)
    if "gpus" in data:
        gpus = data["gpus"]
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise IngestError(400, f"gpus: must be a list of at most {MAX_GPUS} GPU indices, "
                                   f"got {_show(gpus)}")
        indices = tuple(_integer("gpus[]", g, 0, MAX_GPU_INDEX) for g in gpus)
        if len(set(indices)) != len(indices):
            raise IngestError(400, f"gpus: indices must be unique, got {_show(gpus)}")
        opt["gpus"] = tuple(sorted(indices))
    if "tags" in data:
        opt["tags"] = check_tags(data["tags"])
    return Progress(job, **opt)


def check_tags(tags: Any) -> dict[str, str]:
    """User tags: at most 8, keys [a-z][a-z0-9_]*, bounded values, not the schema's own tags."""
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise IngestError(400, f"tags: must be an object of at most {MAX_TAGS} string tags, "
                               f"got {_show(tags)}")
    for key, value in tags.items():
        if not _TAG_KEY_RE.fullmatch(key) or key in RESERVED_TAGS:
            raise IngestError(400, f"tags: key must match [a-z][a-z0-9_]{{0,31}} and not be one of "
                                   f"{', '.join(sorted(RESERVED_TAGS))}, got {_show(key)}")
        if not isinstance(value, str) or not _TAG_VALUE_RE.fullmatch(value):
            raise IngestError(400, f"tags.{key}: must be 1-64 characters of A-Z a-z 0-9 . _ : / @ + -,"
                                   f" got {_show(value)}")
    return dict(tags)


# --- the jobs source -------------------------------------------------------------------------


@dataclass
class _Job:
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


@dataclass
class _Gpu:
    index: int
    model: str
    energy_j: float | None
    util_pct: float | None
    power_limit_w: float | None


class WorkFeed(Protocol):
    """A source of job work the tracker samples with it (e.g. a scraped inference server)."""

    def attach(self, tracker: JobTracker) -> None: ...


class JobTracker:
    """The ``jobs`` source: ingested work plus attributed energy, one ``job`` point per job per round.

    ``taps`` are the energy sources of this host wrapped in
    :class:`collector.attribution.EnergyTap`; the tracker must be sampled after
    them in the same round. ``processes`` (NVML compute PIDs) and ``proc``
    (/proc) map GPU processes to jobs; without them, GPUs a job declared
    (``gpus`` in its reports) are its GPUs. ``clock`` must be the agent's
    monotonic clock. A job ends with a ``final`` report or after
    ``job_timeout_s`` without any.
    """

    name = "jobs"

    def __init__(
        self,
        host: str,
        *,
        taps: Sequence[EnergyTap] = (),
        processes: GpuProcesses | None = None,
        proc: ProcTree | None = None,
        clock: Callable[[], float] = time.monotonic,
        job_timeout_s: float = 60.0,
        max_jobs: int = MAX_JOBS,
        attribute_cpu: bool = True,
    ) -> None:
        self.host = host
        self.taps = list(taps)
        self.processes = processes
        self.proc = proc
        self.clock = clock
        self.job_timeout_s = job_timeout_s
        self.max_jobs = max_jobs
        self.attribute_cpu = attribute_cpu
        self.reports_accepted = 0
        self.reports_duplicate = 0
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        # The attribution method each job was last measured with: a job keeps one series even
        # in a round where its energy share is momentarily zero.
        self._methods: dict[str, str] = {}
        self._held: dict[str, int] = {}  # rounds a job's work waited for its first energy share
        self._seqs: OrderedDict[tuple[str, int | None], int] = OrderedDict()
        self._last_s: float | None = None
        self._prev_pids: dict[int, set[int]] = {}
        self._prev_ticks: dict[tuple[int, int], float] = {}
        self._prev_busy: float | None = None
        self._warn = LogOnce(log)

    # --- ingest side (any thread) ------------------------------------------------------
    def record(self, progress: Progress, owner: int | None = None) -> bool:
        """Add one report; False when it repeats one already counted (same pid and seq).

        ``owner`` is the poster's UID where the kernel told it (Unix socket), None for a
        token holder. A job belongs to the first UID that posts to it; raises
        IngestError(403) for another non-root UID, and IngestError(429) when
        ``max_jobs`` jobs are already active.
        """
        now = self.clock()
        with self._lock:
            job = self._jobs.get(progress.job)
            if (job is not None and owner not in (None, 0) and job.owner is not None
                    and job.owner != owner):
                raise IngestError(403, f"job: {progress.job!r} belongs to another user "
                                       f"(uid {job.owner}); choose another job name")
            key = (progress.job, progress.pid)
            if progress.seq is not None:
                last = self._seqs.get(key)
                if last is not None and progress.seq <= last:
                    self.reports_duplicate += 1
                    return False
            job = self._jobs.get(progress.job)
            if job is None:
                if sum(1 for j in self._jobs.values() if j.reported) >= self.max_jobs:
                    raise IngestError(429, f"job: {self.max_jobs} jobs are active on this agent, "
                                           f"the limit; end some (final: true) or wait")
                job = self._jobs[progress.job] = _Job(progress.job, first_s=now, last_s=now,
                                                      owner=owner)
            elif job.owner is None and job.reported:
                job.owner = owner
            job.apply(progress)
            job.last_s = now
            job.end_s = now if progress.final else None
            if progress.seq is not None:
                self._seqs[key] = progress.seq
                self._seqs.move_to_end(key)
                while len(self._seqs) > 8 * self.max_jobs:
                    self._seqs.popitem(last=False)
            self.reports_accepted += 1
            return True

    def active_jobs(self) -> list[dict[str, Any]]:
        """The reported jobs not yet emitted as ended: name, kind, precision, declared GPUs."""
        with self._lock:
            return [{"job": j.name, "kind": j.kind, "precision": j.precision, "gpus": list(j.gpus),
                     "ended": j.end_s is not None}
                    for j in sorted(self._jobs.values(), key=lambda j: j.name) if j.reported]

    # --- Source protocol ---------------------------------------------------------------
    def probe(self) -> Probe:
        gpu = "NVML compute processes" if self.processes is not None else "declared GPUs only"
        cpu = "CPU time from /proc" if self.proc is not None and self.attribute_cpu else "no CPU"
        sources = ", ".join(t.name for t in self.taps) or "none"
        return Probe.found(f"job tracker: energy from {sources}; GPUs by {gpu}; {cpu}")

    def close(self) -> None:
        with self._lock:
            self._jobs.clear()

    def sample(self, tick: Tick) -> list[Point]:
        now = tick.mono_s
        t0, self._last_s = self._last_s, now
        gpus = self._gpu_readings(tick)
        cpu_energy_j = self._cpu_energy(tick)
        pids_now, utils = self._gpu_processes()
        busy = self.proc.busy_ticks() if self.proc is not None and self.attribute_cpu else None
        with self._lock:
            self._expire(now)
            jobs = {name: _snapshot(j) for name, j in self._jobs.items()}
            if t0 is not None and now > t0:
                for j in self._jobs.values():
                    j.work = dict.fromkeys(WORK_FIELDS, 0.0)
                for name in [n for n, j in self._jobs.items()
                             if j.end_s is not None and j.end_s <= now]:
                    del self._jobs[name]
                    self._methods.pop(name, None)
                    self._held.pop(name, None)
        pid_owner = {pid: j.name for j in jobs.values() for pid in j.pids}
        if t0 is None or now <= t0:  # the first round only sets baselines
            self._prev_pids = {g: set(p) for g, p in (pids_now or {}).items()}
            self._cpu_ticks_by_job(jobs, pid_owner, pids_now or {}, 0.0)
            self._prev_busy = busy
            return []
        interval_s = now - t0
        return self._round(tick, t0, interval_s, jobs, pid_owner, gpus, cpu_energy_j, pids_now,
                           utils, busy)

    # --- one round ---------------------------------------------------------------------------
    def _round(self, tick: Tick, t0: float, interval_s: float, jobs: dict[str, _Job],
               pid_owner: dict[int, str], gpus: dict[int, _Gpu], cpu_energy_j: float | None,
               pids_now: dict[int, list[int]] | None, utils: dict[int, dict[int, float]],
               busy: float | None) -> list[Point]:
        def presence_of(j: _Job) -> tuple[float, float]:
            start = max(j.first_s, t0) - t0
            end = (min(j.end_s, tick.mono_s) if j.end_s is not None else tick.mono_s) - t0
            return start, max(start, end)

        # GPU index -> job -> (presence, job pids seen on it)
        on_gpu: dict[int, dict[str, tuple[float, float, set[int]]]] = {}
        for j in jobs.values():
            if j.reported:
                for g in j.gpus:
                    s, e = presence_of(j)
                    on_gpu.setdefault(g, {})[j.name] = (s, e, set())
        discovered: dict[str, _Job] = {}
        for g in sorted(set(pids_now or {}) | set(self._prev_pids)):
            now_set = set((pids_now or {}).get(g, ()))
            prev_set = self._prev_pids.get(g, set())
            for pid in now_set | prev_set:
                name = pid_owner.get(pid) or (self.proc.job_of(pid) if self.proc else None)
                if name is None:
                    continue
                here = on_gpu.setdefault(g, {})
                known = jobs.get(name)
                if known is not None and known.reported:
                    s, e = presence_of(known)
                else:
                    # Seen through /proc only: from the previous round (or its start) to this one
                    # (or, gone now, an unknown moment in between: counted as half the interval).
                    age = self.proc.age_s(pid) if self.proc and pid in now_set else None
                    s = 0.0 if pid in prev_set or age is None else max(0.0, interval_s - age)
                    e = interval_s if pid in now_set else interval_s / 2
                    job = discovered.get(name) or jobs.get(name)
                    if job is None:
                        job = discovered[name] = _Job(name, first_s=t0, last_s=t0, reported=False)
                    job.pids.add(pid)
                    old = here.get(name)
                    if old is not None:
                        s, e = min(s, old[0]), max(e, old[1])
                old_pids = here[name][2] if name in here else set()
                here[name] = (s, e, old_pids | {pid})
        self._prev_pids = {g: set(p) for g, p in (pids_now or {}).items()}
        all_jobs = {**jobs, **{n: d for n, d in discovered.items() if n not in jobs}}
        pid_owner = {**pid_owner, **{pid: d.name for d in discovered.values() for pid in d.pids}}

        gpu_share: dict[str, float] = {}
        gpu_methods: dict[str, list[str | None]] = {}
        job_gpus: dict[str, list[int]] = {}
        unattributed_gpu: dict[str, list[float]] = {}  # model -> [energy, idle GPUs]
        for index, here in sorted(on_gpu.items()):
            for name in here:
                job_gpus.setdefault(name, []).append(index)
        for index, reading in sorted(gpus.items()):
            here = on_gpu.get(index, {})
            if reading.energy_j is None:
                continue
            gpu_utils = utils.get(index)
            presences: dict[str, Presence] = {}
            for name, (s, e, pids) in here.items():
                util = (math.fsum(gpu_utils.get(p, 0.0) for p in pids)
                        if gpu_utils is not None and pids else None)
                presences[name] = Presence(s, e, util)
            if any(p.util is None for p in presences.values()):
                presences = {n: Presence(p.start_s, p.end_s) for n, p in presences.items()}
            split = split_energy(reading.energy_j, interval_s, presences)
            for name, joules in split.shares_j.items():
                gpu_share[name] = gpu_share.get(name, 0.0) + joules
                gpu_methods.setdefault(name, []).append(split.method)
            acc = unattributed_gpu.setdefault(reading.model, [0.0, 0.0])
            acc[0] += split.unattributed_j
            acc[1] += 0 if here else 1
        cpu_split: Split | None = None
        job_ticks = self._cpu_ticks_by_job(all_jobs, pid_owner, pids_now or {}, interval_s)
        if cpu_energy_j is not None and busy is not None and self._prev_busy is not None:
            cpu_split = split_by_ticks(cpu_energy_j, max(0.0, busy - self._prev_busy), job_ticks)
        elif cpu_energy_j is not None:
            cpu_split = Split({}, cpu_energy_j, None)
        self._prev_busy = busy

        points: list[Point] = []
        for name, j in sorted(all_jobs.items()):
            if j.reported:
                s, e = presence_of(j)
                active_s = e - s
            else:
                spans = [on_gpu[g][name] for g in job_gpus.get(name, ()) if name in on_gpu[g]]
                active_s = max((e - s for s, e, _ in spans), default=0.0)
            used = job_gpus.get(name, [])
            measured_gpu = any(gpus[g].energy_j is not None for g in used if g in gpus)
            has_cpu = cpu_split is not None and self.attribute_cpu and bool(
                j.pids or any(o == name for o in pid_owner.values()))
            energy: float | None = None
            method = _weakest(gpu_methods.get(name, ()))
            if measured_gpu or has_cpu:
                cpu_j = cpu_split.shares_j.get(name, 0.0) if cpu_split is not None else 0.0
                energy = gpu_share.get(name, 0.0) + cpu_j
                if method is None and cpu_j > 0:
                    method = CPU_TIME
            work = {f: v for f, v in j.work.items() if v > 0} if j.reported else {}
            if method is None:
                method = self._methods.get(name)
            else:
                self._methods[name] = method
            held = self._held.get(name, 0)
            if (method is None and work and self.taps and held < MAX_HELD_ROUNDS
                    and j.end_s is None):  # a job that has ended reports what it has
                # No energy measured for this job yet (its process has no CPU or GPU share
                # this round): keep the work for a round that has one, so work and energy
                # stay in the same series and PER = SUM(work) / SUM(energy) holds. Only a
                # few rounds: a job that never gets a share still reports its work.
                self._held[name] = held + 1
                with self._lock:
                    live = self._jobs.get(name)
                    if live is not None:
                        for f, v in work.items():
                            live.work[f] += v
                        continue
            if active_s <= 0 and not work and not energy:
                continue
            readings = [gpus[g] for g in used if g in gpus]
            models = Counter(r.model for r in readings if r.model)
            tags = {**j.tags, "job": name, "host": self.host, "kind": j.kind,
                    "precision": j.precision,
                    "gpu_model": models.most_common(1)[0][0] if models else "",
                    "method": method or ""}
            fields: dict[str, FieldValue | None] = {
                "energy_j": energy, **work, "active_s": active_s, "gpus": len(used),
                "batch_size": j.batch_size, "planned_samples": j.planned_samples,
                "deferrable": None if j.deferrable is None else int(j.deferrable),
                "util_pct": _mean(r.util_pct for r in readings),
                "power_limit_w": _mean(r.power_limit_w for r in readings),
            }
            points.append(point("job", tags, fields, tick.wall_ns))
        for model, (joules, idle) in sorted(unattributed_gpu.items()):
            if joules > 0 or idle > 0:
                points.append(point("job", {"job": UNATTRIBUTED, "host": self.host, "kind": "gpu",
                                            "gpu_model": model},
                                    {"energy_j": joules, "gpus": idle, "active_s": interval_s},
                                    tick.wall_ns))
        if cpu_split is not None and cpu_split.unattributed_j > 0:
            points.append(point("job", {"job": UNATTRIBUTED, "host": self.host, "kind": "cpu"},
                                {"energy_j": cpu_split.unattributed_j, "active_s": interval_s},
                                tick.wall_ns))
        return points

    # --- inputs ----------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for j in self._jobs.values():
            if j.reported and j.end_s is None and now - j.last_s > self.job_timeout_s:
                j.end_s = j.last_s
                self._warn.warning(f"expired {j.name}", f"job {j.name}: no report for "
                                   f"{self.job_timeout_s:g} s, counted as ended at its last report")

    def _gpu_readings(self, tick: Tick) -> dict[int, _Gpu]:
        out: dict[int, _Gpu] = {}
        for tap in self.taps:
            for p in tap.points_at(tick):
                if p.measurement != "gpu" or p.tag("host") != self.host:
                    continue
                index = p.tag("gpu") or ""
                if not index.isdigit():
                    continue
                out[int(index)] = _Gpu(int(index), p.tag("model") or "", _num(p.field("energy_j")),
                                       _num(p.field("util_pct")), _num(p.field("power_limit_w")))
        return out

    def _cpu_energy(self, tick: Tick) -> float | None:
        values = [_num(p.field("energy_j")) for tap in self.taps for p in tap.points_at(tick)
                  if p.measurement == "cpu" and p.tag("host") == self.host
                  and is_additive_cpu_domain(p.tag("domain") or "")]
        known = [v for v in values if v is not None]
        return math.fsum(known) if known else None

    def _gpu_processes(self) -> tuple[dict[int, list[int]] | None, dict[int, dict[int, float]]]:
        if self.processes is None:
            return None, {}
        try:
            pids = self.processes.compute_pids()
            utils = self.processes.utilization()
        except Exception as exc:  # NVML hiccup: attribute by declared GPUs this round
            self._warn.warning("processes", f"jobs: GPU process list unavailable: {exc}")
            return None, {}
        self._warn.clear("processes", "jobs: GPU process list available again")
        return pids, utils

    def _cpu_ticks_by_job(self, jobs: Mapping[str, _Job], pid_owner: Mapping[int, str],
                          pids_now: Mapping[int, list[int]], interval_s: float) -> dict[str, float]:
        """CPU time (clock ticks) each job's processes and their descendants used since last round."""
        if self.proc is None or not self.attribute_cpu:
            return {}
        roots: dict[int, str] = dict(pid_owner)
        for pids in pids_now.values():
            for pid in pids:
                if pid not in roots:
                    name = self.proc.job_of(pid)
                    if name is not None:
                        roots[pid] = name
        if not roots:
            self._prev_ticks = {}
            return {}
        ticks: dict[str, float] = {}
        seen: dict[tuple[int, int], float] = {}
        for root, name in roots.items():
            for pid in self.proc.descendants([root]):
                st = self.proc.stat(pid)
                if st is None:
                    continue
                key = (pid, st.start_ticks)
                if key in seen:
                    continue
                seen[key] = st.cpu_ticks
                before = self._prev_ticks.get(key)
                if before is None:
                    # New since the last round: all its CPU time is in this interval if it is younger.
                    age = self.proc.age_s(pid)
                    before = 0.0 if age is not None and age <= interval_s else st.cpu_ticks
                ticks[name] = ticks.get(name, 0.0) + max(0.0, st.cpu_ticks - before)
        self._prev_ticks = seen
        return ticks


def _snapshot(j: _Job) -> _Job:
    return _Job(j.name, j.first_s, j.last_s, j.reported, j.end_s, j.kind, j.precision,
                j.batch_size, j.planned_samples, j.deferrable, j.gpus, dict(j.tags), set(j.pids),
                dict(j.work), j.owner)


def _num(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return math.fsum(known) / len(known) if known else None


# --- HTTP -------------------------------------------------------------------------------------


Reply = tuple[int, dict[str, str], bytes]


def _json(status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, (
        json.dumps(payload, separators=(",", ":")) + "\n").encode()


class IngestApp:
    """The agent's job endpoints, as plain functions of a request; mount them with :meth:`mount`.

    - ``POST /v1/jobs/{id}/progress``: a progress report (see :func:`parse_progress`).
    - ``GET /v1/jobs``: the jobs the agent is tracking.

    Over the agent's Unix socket (the jobs API's default) no token is needed: the
    kernel says which UID posts (``peer``), a process may claim only PIDs of its own
    UID, and a job belongs to the UID that first posted to it (root may do both).
    Over TCP every request needs ``Authorization: Bearer $WATTLENS_AGENT_TOKEN``,
    from loopback too; an agent without a token refuses job ingest over TCP (403).
    """

    PROGRESS = re.compile(r"/v1/jobs/([^/]*)/progress")

    def __init__(self, tracker: JobTracker, *, token: str | None = None, proc_root: str = "/proc",
                 socket_path: str | None = None) -> None:
        self.tracker = tracker
        if token is None:
            token = os.environ.get("WATTLENS_AGENT_TOKEN") or None
        self._token = check_token(token or None)
        self.proc_root = proc_root
        self.socket_path = socket_path
        self.rejected = 0

    def _auth(self, headers: Mapping[str, str], peer: Peer | None, client: str) -> Reply | None:
        if peer is not None:
            return None
        if self._token is None:
            where = f" over the Unix socket {self.socket_path}" if self.socket_path else \
                " over the agent's Unix socket"
            return _json(403, {"error": "job ingest over TCP is off: this agent has no "
                                        f"WATTLENS_AGENT_TOKEN; local jobs post{where}"})
        denied = check_request(client, headers.get("authorization"), self._token,
                               loopback_free=False, what="job ingest over TCP")
        if denied is None:
            return None
        return _json(denied.status, {"error": denied.message},
                     {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
               client: str, peer: Peer | None = None) -> Reply:
        """Answer one request: (status, headers, body). Never raises for bad input."""
        reply = self._handle(method, path.split("?", 1)[0], {k.lower(): v for k, v in headers.items()},
                             body, client, peer)
        if 400 <= reply[0] < 500:
            self.rejected += 1
        return reply

    def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                client: str, peer: Peer | None) -> Reply:
        match = self.PROGRESS.fullmatch(path)
        if match is None and path != "/v1/jobs":
            return _json(404, {"error": f"path: no such endpoint {path[:80]!r}; "
                                        "use POST /v1/jobs/{id}/progress"})
        want = "POST" if match else "GET"
        if method != want:
            return _json(405, {"error": f"method: {method[:16]!r} not allowed on {path[:80]}; "
                                        f"use {want}"}, {"Allow": want})
        denied = self._auth(headers, peer, client)
        if denied is not None:
            return denied
        if match is None:
            return _json(200, {"jobs": self.tracker.active_jobs()})
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            return _json(415, {"error": f"content-type: must be application/json, "
                                        f"got {content_type[:40]!r}"})
        try:
            progress = parse_progress(match.group(1), body)
            uid = peer.uid if peer is not None else None
            if uid is not None and uid != 0 and progress.pid is not None:
                check_pid_owner(progress.pid, uid, self.proc_root)
            counted = self.tracker.record(progress, owner=uid)
        except IngestError as exc:
            if exc.status == 403:
                log.warning("ingest: refused %s from uid %s: %s", match.group(1)[:64],
                            peer.uid if peer else client, exc)
            return _json(exc.status, {"error": str(exc)})
        return _json(200, {"ok": True, "duplicate": not counted})

    def mount(self, server: Any) -> None:
        """Mount the endpoints on the agent's HTTP server (``collector.exporter.Exporter`` or its
        ``RouteServer``): anything with ``route(method, pattern, handler(Request) -> Response)``."""
        server.route("POST", "/v1/jobs/{id}/progress", self._route)
        server.route("GET", "/v1/jobs", self._route)

    def _route(self, request: Request) -> Response:
        status, headers, body = self.handle(request.method, request.path, request.headers,
                                            request.body, request.client, request.peer)
        content_type = headers.pop("Content-Type", "application/json")
        return Response(status, body, content_type, headers)


def check_pid_owner(pid: int, uid: int, proc_root: str = "/proc") -> None:
    """Raise IngestError unless process ``pid`` exists and belongs to ``uid``."""
    try:
        owner = os.stat(os.path.join(proc_root, str(pid))).st_uid
    except FileNotFoundError:
        raise IngestError(400, f"pid: no process {pid} on this host") from None
    except OSError as exc:
        raise IngestError(400, f"pid: cannot read process {pid}: {exc.strerror}") from None
    if owner != uid:
        raise IngestError(403, f"pid: process {pid} belongs to another user; a job may claim "
                               f"only its own processes (uid {uid})")


def with_jobs(
    sources: Sequence[Source],
    host: str,
    *,
    proc_root: str = "/proc",
    feeds: Sequence[Source] = (),
    clock: Callable[[], float] = time.monotonic,
    job_timeout_s: float = 60.0,
) -> tuple[list[Source], JobTracker]:
    """The agent's sources with job tracking added: each tapped, then ``feeds``, then the tracker.

    ``feeds`` are work sources such as :class:`collector.sources.promscrape.PromScrapeSource`:
    they are attached to the tracker so their work lands in its job points. The
    first source with ``compute_pids()`` (NVML) tells which processes use each GPU.
    """
    taps = [EnergyTap(s) for s in sources]
    nvml = next((s for s in sources if callable(getattr(s, "compute_pids", None))), None)
    tracker = JobTracker(host, taps=taps, processes=NvmlProcesses(nvml) if nvml else None,
                         proc=ProcTree(proc_root), clock=clock, job_timeout_s=job_timeout_s)
    for feed in feeds:
        attach = getattr(feed, "attach", None)
        if callable(attach):
            attach(tracker)
    return [*taps, *feeds, tracker], tracker
