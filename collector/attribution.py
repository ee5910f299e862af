"""Per-job energy: each GPU's and the CPU's energy split among the jobs that ran on them, never dropped.

Three parts, each usable alone:

- :func:`split_energy` and :func:`split_by_ticks` are pure: one device's
  energy over one interval in, per-job shares and the unattributed rest out,
  conserving the total (``sum(shares) + unattributed == energy``).
- :class:`ProcTree` maps a PID to a job through ``/proc`` (root injectable):
  ``WATTLENS_JOB`` or ``SLURM_JOB_ID`` in ``/proc/PID/environ``, else a
  Kubernetes pod UID or a Slurm ``job_NNN`` in ``/proc/PID/cgroup``; the team
  from ``WATTLENS_TEAM``, ``SLURM_JOB_ACCOUNT`` or ``SLURM_JOB_USER``; and reads
  process CPU time for the CPU split.

The idle (static) part of each device's energy is shared by the operator's
policy in :mod:`collector.idle`.
- :class:`NvmlProcesses` asks NVML which PIDs compute on each GPU and how much
  of the GPU each one used (``nvmlDeviceGetProcessUtilization``).

The :class:`collector.ingest.JobTracker` source puts them together each round.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from collector.logutil import LogOnce
from collector.schema import Point
from collector.sources.base import Probe, Source, Tick

log = logging.getLogger("wattlens.attribution")

# Attribution methods, weakest last: a job's point reports the weakest one used for it.
EXCLUSIVE = "exclusive"  # the only job on the device while it ran
UTIL_SHARE = "util-share"  # shared, split by each job's NVML process utilisation
EVEN_SPLIT = "even-split"  # shared, split evenly over the time each job was there
CPU_TIME = "cpu-time"  # CPU energy split by process CPU time (/proc/PID/stat)
METHOD_ORDER = (EXCLUSIVE, UTIL_SHARE, CPU_TIME, EVEN_SPLIT)

UNATTRIBUTED = "unattributed"
JOB_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Pod UID in cgroup v1 (`/kubepods/burstable/pod<uid>/...`) and in the systemd
# driver's slices (`kubepods-burstable-pod<uid with _>.slice`).
_K8S_POD_RE = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
# Slurm's cgroup plugins: v1 `/slurm/uid_1000/job_123/step_0`, v2 `.../job_123/step_batch/...`.
_SLURM_CGROUP_RE = re.compile(r"/job_(\d+)(?:/|$)")
_SLURM_ID_RE = re.compile(r"\d{1,20}")


def slurm_job(job_id: str) -> str:
    """The wattlens job name of a Slurm job."""
    return f"slurm-{job_id}"


def k8s_pod_job(uid: str) -> str:
    """The wattlens job name of a Kubernetes pod (its UID, dashes normalised)."""
    return f"k8s-pod-{uid.replace('_', '-')}"


# --- the pure split -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Presence:
    """One job on one device during an interval: when (seconds from the interval start) and how hard.

    ``util`` is a utilisation weight (the NVML SM utilisation of the job's
    processes, any scale); None when the driver does not report it.
    """

    start_s: float
    end_s: float
    util: float | None = None


@dataclass(frozen=True, slots=True)
class Split:
    """One device's energy over one interval: per-job joules, the unattributed rest, and how."""

    shares_j: dict[str, float]
    unattributed_j: float
    method: str | None  # None when no job was there


def _weakest(methods: Iterable[str | None]) -> str | None:
    ranked = [m for m in methods if m is not None]
    return max(ranked, key=METHOD_ORDER.index) if ranked else None


def split_energy(energy_j: float, interval_s: float, presences: Mapping[str, Presence]) -> Split:
    """Split ``energy_j`` used over ``interval_s`` among the jobs present, assuming even power.

    The interval is cut at every job start and end. Each piece's energy
    (proportional to its length) goes to the jobs present during it: by their
    ``util`` weights when any of them has a positive one, evenly otherwise; a
    piece with no job is unattributed. So a job that ran half the interval
    alone gets half the energy, and the idle half is reported, not dropped.
    """
    if not (math.isfinite(energy_j) and energy_j >= 0):
        raise ValueError(f"energy_j: must be a non-negative finite number, got {energy_j!r}")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval_s: must be positive, got {interval_s!r}")
    spans: dict[str, tuple[float, float, float | None]] = {}
    for job, p in presences.items():
        start = min(max(p.start_s, 0.0), interval_s)
        end = min(max(p.end_s, 0.0), interval_s)
        util = p.util if p.util is not None and math.isfinite(p.util) and p.util >= 0 else None
        if end > start:
            spans[job] = (start, end, util)
    cuts = sorted({0.0, interval_s, *(s for s, _, _ in spans.values()),
                   *(e for _, e, _ in spans.values())})
    shares: dict[str, float] = dict.fromkeys(spans, 0.0)
    used: set[str] = set()
    for a, b in itertools.pairwise(cuts):
        piece_j = energy_j * (b - a) / interval_s
        here = [j for j, (s, e, _) in spans.items() if s <= a and e >= b]
        if not here:
            continue
        weights = {j: spans[j][2] or 0.0 for j in here}
        total_w = math.fsum(weights.values())
        if len(here) == 1:
            used.add(EXCLUSIVE)
            shares[here[0]] += piece_j
        elif total_w > 0:
            used.add(UTIL_SHARE)
            for j in here:
                # The fraction first: piece_j * w would lose precision when w is subnormal.
                shares[j] += piece_j * (weights[j] / total_w)
        else:
            used.add(EVEN_SPLIT)
            for j in here:
                shares[j] += piece_j / len(here)
    # The rest by difference, so the total is conserved to the last bit that matters.
    unattributed = max(0.0, energy_j - math.fsum(shares.values()))
    return Split(shares, unattributed, _weakest(used))


def split_by_ticks(energy_j: float, busy_ticks: float, job_ticks: Mapping[str, float]) -> Split:
    """Split a host's CPU energy by each job's share of the CPU time busy on the host.

    ``busy_ticks`` is the host's busy CPU time in the interval (``/proc/stat``),
    ``job_ticks`` each job's processes' CPU time (``utime + stime``), same unit.
    What other processes used (and the idle floor, when no job ran) is
    unattributed. If the jobs add up to more than the host saw (sampling
    skew), shares are scaled down to the whole.
    """
    if not (math.isfinite(energy_j) and energy_j >= 0):
        raise ValueError(f"energy_j: must be a non-negative finite number, got {energy_j!r}")
    ticks = {j: t for j, t in job_ticks.items() if math.isfinite(t) and t > 0}
    whole = max(busy_ticks if math.isfinite(busy_ticks) else 0.0, math.fsum(ticks.values()))
    if whole <= 0 or not ticks:
        return Split({}, energy_j, None)
    # The fraction first: energy * t / whole underflows for subnormal ticks (1.5 * 5e-324
    # rounds to 1e-323, and / 5e-324 gives 2.0 J out of 1.5 J).
    shares = {j: energy_j * (t / whole) for j, t in ticks.items()}
    total = math.fsum(shares.values())
    if total > energy_j:  # rounding may still overshoot by an ulp: the parts never exceed the whole
        shares = {j: e * (energy_j / total) for j, e in shares.items()}
    return Split(shares, max(0.0, energy_j - math.fsum(shares.values())), CPU_TIME)


# --- /proc ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    """What attribution needs from /proc/PID/stat: parent, CPU time and start time (clock ticks)."""

    ppid: int
    cpu_ticks: float
    start_ticks: int


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat; the command name may hold spaces and parentheses, so split at the last ')'."""
    rest = text[text.rindex(")") + 1:].split()
    # Fields from 3 (state) on: ppid is field 4, utime 14, stime 15, starttime 22.
    return ProcStat(ppid=int(rest[1]), cpu_ticks=float(rest[11]) + float(rest[12]),
                    start_ticks=int(rest[19]))


_ENV_KEYS = (b"WATTLENS_JOB", b"SLURM_JOB_ID", b"WATTLENS_TEAM", b"SLURM_JOB_ACCOUNT",
             b"SLURM_JOB_USER")
TEAM_RE = re.compile(r"[A-Za-z0-9._:/@+-]{1,64}")  # the value rule of every job tag


def _environ(data: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in _ENV_KEYS:
            env[key.decode()] = value.decode("utf-8", "replace")
    return env


def team_from_environ(data: bytes) -> str | None:
    """The team a process environment names: ``WATTLENS_TEAM``, else Slurm's account
    (``SLURM_JOB_ACCOUNT``), else the Slurm user (``SLURM_JOB_USER``); None if none is valid."""
    env = _environ(data)
    for key in ("WATTLENS_TEAM", "SLURM_JOB_ACCOUNT", "SLURM_JOB_USER"):
        if TEAM_RE.fullmatch(env.get(key, "")):
            return env[key]
    return None


def job_from_environ(data: bytes) -> str | None:
    """The job named by a process environment (NUL-separated ``KEY=value``), or None."""
    env = _environ(data)
    name = env.get("WATTLENS_JOB", "")
    if JOB_ID_RE.fullmatch(name) and name != UNATTRIBUTED:
        return name
    slurm = env.get("SLURM_JOB_ID", "")
    if _SLURM_ID_RE.fullmatch(slurm):
        return slurm_job(slurm)
    return None


def job_from_cgroup(text: str) -> str | None:
    """The job a /proc/PID/cgroup places a process in (Kubernetes pod, Slurm job), or None."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        pod = _K8S_POD_RE.search(path)
        if pod:
            return k8s_pod_job(pod.group(1))
        slurm = _SLURM_CGROUP_RE.search(path)
        if slurm:
            return slurm_job(slurm.group(1))
    return None


class ProcTree:
    """Reads processes under a /proc root (injectable for tests and containers).

    ``job_of`` results are cached per (PID, start time), so a reused PID is
    looked up afresh and a long-lived process is read once.
    """

    def __init__(self, root: str | os.PathLike[str] = "/proc", *, clock_ticks_per_s: float | None = None,
                 cache_size: int = 4096) -> None:
        self.root = Path(root)
        self.clock_ticks_per_s = clock_ticks_per_s or float(os.sysconf("SC_CLK_TCK"))
        self._cache: OrderedDict[tuple[int, int], str | None] = OrderedDict()
        self._cache_size = cache_size
        # job -> team its processes' environment named (WATTLENS_TEAM, Slurm account or user)
        self.teams: dict[str, str] = {}

    def _read(self, *parts: str) -> str | None:
        try:
            with open(self.root.joinpath(*parts), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:  # gone, or not ours to read: both mean "unknown"
            return None

    def stat(self, pid: int) -> ProcStat | None:
        """The process's stat, or None when it is gone or unreadable."""
        text = self._read(str(pid), "stat")
        if text is None:
            return None
        try:
            return parse_stat(text)
        except (ValueError, IndexError):
            return None

    def job_of(self, pid: int) -> str | None:
        """The job a process belongs to (environment first, then cgroup), or None."""
        st = self.stat(pid)
        key = (pid, st.start_ticks if st else -1)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        job: str | None = None
        team: str | None = None
        try:
            with open(self.root / str(pid) / "environ", "rb") as f:
                data = f.read(1 << 20)
            job, team = job_from_environ(data), team_from_environ(data)
        except OSError:
            pass  # another user's process: environ is private, the cgroup is not
        if job is None:
            cgroup = self._read(str(pid), "cgroup")
            job = job_from_cgroup(cgroup) if cgroup else None
        if st is not None:
            self._cache[key] = job
            if team is not None and job is not None:
                self.teams[job] = team
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
                while len(self.teams) > self._cache_size:
                    self.teams.pop(next(iter(self.teams)))
        return job

    def uptime_s(self) -> float | None:
        """Seconds since boot (/proc/uptime), the clock process start times count from."""
        text = self._read("uptime")
        try:
            return float(text.split()[0]) if text else None
        except (ValueError, IndexError):
            return None

    def age_s(self, pid: int) -> float | None:
        """How long a process has existed, or None when unknown."""
        st = self.stat(pid)
        up = self.uptime_s()
        if st is None or up is None:
            return None
        return max(0.0, up - st.start_ticks / self.clock_ticks_per_s)

    def busy_ticks(self) -> float | None:
        """Busy CPU time of the whole host so far (the aggregate ``cpu`` line of /proc/stat)."""
        text = self._read("stat")
        if text is None:
            return None
        for line in text.splitlines():
            if line.startswith("cpu "):
                values = [float(x) for x in line.split()[1:9]] + [0.0] * 8
                user, nice, system, _idle, _iowait, irq, softirq, _steal = values[:8]
                return user + nice + system + irq + softirq
        return None

    def children(self) -> dict[int, list[int]]:
        """Parent PID -> child PIDs for every process (one scan of /proc/*/stat)."""
        out: dict[int, list[int]] = {}
        try:
            entries = [e for e in os.listdir(self.root) if e.isdigit()]
        except OSError:
            return out
        for entry in entries:
            st = self.stat(int(entry))
            if st is not None:
                out.setdefault(st.ppid, []).append(int(entry))
        return out

    def child_pids(self, pid: int) -> list[int] | None:
        """A process's children from /proc/PID/task/*/children, or None where the kernel lacks
        that file (CONFIG_PROC_CHILDREN) and a full scan (:meth:`children`) is needed."""
        task_dir = self.root / str(pid) / "task"
        try:
            tids = os.listdir(task_dir)
        except FileNotFoundError:
            return None
        except OSError:
            return []
        out: list[int] = []
        for tid in tids:
            try:
                with open(task_dir / tid / "children", encoding="ascii") as f:
                    out.extend(int(x) for x in f.read().split())
            except FileNotFoundError:
                if (task_dir / tid).exists():
                    return None  # the thread is there, the file is not: no kernel support
            except (OSError, ValueError):
                continue  # the thread exited meanwhile
        return out

    def descendants(self, pids: Iterable[int], children: Mapping[int, list[int]] | None = None
                    ) -> set[int]:
        """The PIDs and all their descendants (DataLoader workers, torchrun ranks).

        Follows /proc/PID/task/*/children (a few reads per process of the tree);
        falls back to one scan of every process when the kernel does not have it.
        """
        seen: set[int] = set()
        stack = list(pids)
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            kids = children.get(pid, []) if children is not None else self.child_pids(pid)
            if kids is None:
                children = self.children()
                kids = children.get(pid, [])
            stack.extend(kids)
        return seen


# --- NVML processes ------------------------------------------------------------------


class GpuProcesses(Protocol):
    """Which PIDs compute on each GPU, and their utilisation; what attribution asks of the GPU side."""

    def compute_pids(self) -> dict[int, list[int]]: ...

    def utilization(self) -> dict[int, dict[int, float]]: ...


class NvmlProcesses:
    """Compute PIDs per GPU from an :class:`collector.sources.nvml.NvmlSource`, plus per-process SM use.

    PIDs come from the source's ``compute_pids()`` (MIG-aware). Utilisation
    comes from ``nvmlDeviceGetProcessUtilization(handle, lastSeenTimeStamp)``:
    the mean ``smUtil`` of each PID's samples since the previous call. GPUs
    or drivers without it (MIG, vGPU, old drivers) map to no entry, and the
    split there is even. ``nvml`` defaults to the module the source loaded.
    """

    def __init__(self, source: Any, nvml: Any = None) -> None:
        self.source = source
        self._nvml = nvml
        self._last_ts: dict[int, int] = {}
        self._unsupported: set[int] = set()
        self._warn = LogOnce(log)

    def compute_pids(self) -> dict[int, list[int]]:
        pids: dict[int, list[int]] = self.source.compute_pids()
        return pids

    def device_pids(self) -> dict[str, list[int]]:
        """Device UUID (GPU, or MIG instance) -> PIDs, for Kubernetes pod tags."""
        fn = getattr(self.source, "device_pids", None)
        return fn() if callable(fn) else {}

    def _module(self) -> Any:
        return self._nvml if self._nvml is not None else getattr(self.source, "_nvml", None)

    def utilization(self) -> dict[int, dict[int, float]]:
        # MIG GPUs have no per-process utilisation; each PID weighs its instance's share instead.
        mig = getattr(self.source, "mig_pid_weights", None)
        out: dict[int, dict[int, float]] = mig() if callable(mig) else {}
        nv = self._module()
        fn = getattr(nv, "nvmlDeviceGetProcessUtilization", None) if nv is not None else None
        if fn is None:
            return out
        not_found = getattr(nv, "NVML_ERROR_NOT_FOUND", 6)
        for index in self.compute_pids():
            if index in self._unsupported or index in out:
                continue
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                samples = fn(handle, self._last_ts.get(index, 0))
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) == not_found:
                    out[index] = {}  # supported, but no process used the GPU since the last call
                    continue
                self._unsupported.add(index)
                self._warn.warning(f"gpu {index}", f"attribution: gpu {index}: no per-process "
                                                   f"utilisation ({exc}); splitting evenly")
                continue
            sums: dict[int, list[float]] = {}
            for s in samples:
                ts = int(getattr(s, "timeStamp", 0))
                self._last_ts[index] = max(self._last_ts.get(index, 0), ts)
                util = float(getattr(s, "smUtil", 0))
                if math.isfinite(util) and 0 <= util <= 100:
                    sums.setdefault(int(s.pid), []).append(util)
            out[index] = {pid: math.fsum(v) / len(v) for pid, v in sums.items()}
        return out


# --- energy tap ----------------------------------------------------------------------


class EnergyTap:
    """Wraps a source and keeps its latest points, so the job tracker sees this round's energy.

    Transparent to the agent: same name, probe and close; the points pass
    through unchanged. Place the tracker after every tapped source.
    """

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name
        self.last_tick: Tick | None = None
        self.last_points: list[Point] = []

    def probe(self) -> Probe:
        return self.inner.probe()

    def sample(self, tick: Tick) -> list[Point]:
        self.last_tick, self.last_points = tick, []
        points = self.inner.sample(tick)
        self.last_points = points
        return points

    def points_at(self, tick: Tick) -> list[Point]:
        """The inner source's points of ``tick``, or none when it failed or was not sampled then."""
        return self.last_points if self.last_tick == tick else []

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the protocol (compute_pids, gpus) is the inner source's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
