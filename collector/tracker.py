"""The ``jobs`` source: reported work plus attributed energy, one ``job`` point per job per round.

The tracker keeps what jobs reported (collector.ingest feeds it), reads each
round's inputs (energy taps, NVML processes, /proc) and hands them to the pure
:func:`collector.job_round.job_round`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collector.attribution import EnergyTap, GpuProcesses, NvmlProcesses, ProcTree
from collector.idle import DEFAULT_IDLE_POLICY, IDLE_UTIL_MAX_PCT, check_idle_policy, idle_power_w
from collector.job_report import WORK_FIELDS, IngestError, Progress
from collector.job_round import GpuReading, JobState, RoundInput, job_round, with_namespace_teams
from collector.k8s.pods import PodLabels
from collector.logutil import LogOnce
from collector.schema import ESTIMATED, Point
from collector.sources.base import Probe, Source, Tick
from collector.sources.rapl import is_additive_cpu_domain

REPORT_TICKS_KEEP_S = 300.0  # a reported process's baseline waits this long for a round
log = logging.getLogger("wattlens.ingest")

MAX_JOBS = 1024


class JobTracker:
    """The ``jobs`` source: ingested work plus attributed energy, one ``job`` point per job per round.

    ``taps`` are the energy sources of this host wrapped in
    :class:`collector.attribution.EnergyTap`; the tracker must be sampled after
    them in the same round. ``processes`` (NVML compute PIDs) and ``proc``
    (/proc) map GPU processes to jobs; without them, GPUs a job declared
    (``gpus`` in its reports) are its GPUs. ``clock`` must be the agent's
    monotonic clock. A job ends with a ``final`` report or after
    ``job_timeout_s`` without any. ``idle_policy`` shares each device's idle energy
    (:mod:`collector.idle`); ``team_map`` maps a Kubernetes namespace to a team.
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
        pods: PodLabels | None = None,
        idle_policy: str = DEFAULT_IDLE_POLICY,
        team_map: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.pods = pods  # Kubernetes pod tags for job points (collector/k8s)
        self.idle_policy = check_idle_policy(idle_policy)
        self.team_map = dict(team_map or {})
        # The lowest power each device drew at <= 2 % utilisation: its idle draw (collector.idle).
        self._lowest_idle_w: dict[int | str, float] = {}
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
        self._jobs: dict[str, JobState] = {}
        # The attribution method each job was last measured with: a job keeps one series even
        # in a round where its energy share is momentarily zero.
        self._methods: dict[str, str] = {}
        self._cpu_estimated_share = 0.0  # of this round's CPU energy, the part a model estimated
        self._held: dict[str, int] = {}  # rounds a job's work waited for its first energy share
        self._seqs: OrderedDict[tuple[str, int | None], int] = OrderedDict()
        self._last_s: float | None = None
        self._prev_pids: dict[int, set[int]] = {}
        self._prev_ticks: dict[tuple[int, int], float] = {}
        # CPU time of a job's process when its first report named it: the baseline its first
        # round counts from, however late that round comes (a stalled disk can hold the agent's
        # loop for seconds). (pid, start) -> (ticks, when read).
        self._report_ticks: dict[tuple[int, int], tuple[float, float]] = {}
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
                job = self._jobs[progress.job] = JobState(progress.job, first_s=now, last_s=now,
                                                      owner=owner)
            elif job.owner is None and job.reported:
                job.owner = owner
            if progress.pid is not None and progress.pid not in job.pids:
                self._note_report_ticks(progress.pid, now)
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
        return Probe.found(f"job tracker: energy from {sources}; GPUs by {gpu}; {cpu}; "
                           f"idle power shared by {self.idle_policy}")

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
            jobs = {name: j.snapshot() for name, j in self._jobs.items()}
            if t0 is not None and now > t0:
                for j in self._jobs.values():
                    j.work = dict.fromkeys(WORK_FIELDS, 0.0)
                for name in [n for n, j in self._jobs.items()
                             if j.end_s is not None and j.end_s <= now]:
                    del self._jobs[name]
                    self._methods.pop(name, None)
                    self._held.pop(name, None)
            live = frozenset(self._jobs)
        if t0 is None or now <= t0:  # the first round only sets baselines
            self._cpu_ticks_by_job(self._roots(jobs, pids_now, self._proc_jobs(jobs, pids_now),
                                               first=True), 0.0)
            self._prev_pids = {g: set(p) for g, p in (pids_now or {}).items()}
            self._prev_busy = busy
            return []
        pid_job = self._proc_jobs(jobs, pids_now)
        ages = ({pid: self.proc.age_s(pid) for pids in (pids_now or {}).values() for pid in pids
                 if pid in pid_job} if self.proc is not None else {})
        job_ticks = self._cpu_ticks_by_job(self._roots(jobs, pids_now, pid_job), now - t0)
        busy_ticks = busy - self._prev_busy if busy is not None and self._prev_busy is not None \
            else None
        gpu_idle_w, cpu_idle_w = self._idle_draws(tick, gpus, cpu_energy_j, now - t0)
        result = job_round(RoundInput(
            self.host, tick.wall_ns, t0, now, jobs, gpus, cpu_energy_j, pids_now,
            self._prev_pids, utils, pid_job, ages, job_ticks, busy_ticks, self.attribute_cpu,
            bool(self.taps), self._methods, self._held, live, self._cpu_estimated_share,
            self.idle_policy, gpu_idle_w, cpu_idle_w,
            dict(self.proc.teams) if self.proc is not None else {}, self.team_map))
        self._prev_pids = {g: set(p) for g, p in (pids_now or {}).items()}
        self._prev_busy = busy
        self._methods, self._held = result.methods, result.held
        if self.pods is not None and self.processes is not None:
            job_pids: dict[str, set[int]] = {n: set(j.pids) for n, j in jobs.items()}
            for pid, pid_owner in pid_job.items():
                if pid_owner is not None:
                    job_pids.setdefault(pid_owner, set()).add(pid)
            device_pids = getattr(self.processes, "device_pids", dict)
            result.points = with_namespace_teams(
                self.pods.tag(result.points, job_pids, device_pids, now), self.team_map)
        if result.held_work:
            with self._lock:
                for name, work in result.held_work.items():
                    held_job = self._jobs.get(name)
                    if held_job is not None:
                        for f, v in work.items():
                            held_job.work[f] += v
        return result.points

    def _proc_jobs(self, jobs: Mapping[str, JobState],
                   pids_now: Mapping[int, list[int]] | None) -> dict[int, str | None]:
        """The job of each GPU process (now or last round) no reported job claims, from /proc."""
        if self.proc is None:
            return {}
        claimed = {pid for j in jobs.values() for pid in j.pids}
        pids = {pid for p in (pids_now or {}).values() for pid in p}
        pids |= {pid for p in self._prev_pids.values() for pid in p}
        found: dict[int, str | None] = {}
        for pid in sorted(pids - claimed):
            name = self.proc.job_of(pid)
            owner = jobs[name].owner if name is not None and name in jobs else None
            if name is not None and owner is not None and self._uid_of(pid) not in (owner, 0):
                # Its environment names a job another user owns: not that job's energy.
                self._warn.warning(f"foreign {name}", f"job {name}: process {pid} of another "
                                   f"user names it in its environment; not counted for it")
                name = None
            found[pid] = name
        return found

    def _uid_of(self, pid: int) -> int | None:
        assert self.proc is not None
        try:
            return (self.proc.root / str(pid)).stat().st_uid
        except OSError:
            return None

    def _roots(self, jobs: Mapping[str, JobState], pids_now: Mapping[int, list[int]] | None,
               pid_job: Mapping[int, str | None], *, first: bool = False) -> dict[int, str]:
        """The processes whose CPU time (with their descendants') is each job's: the PIDs jobs
        reported, GPU processes of jobs found through /proc, and those running on a GPU now."""
        roots = {pid: j.name for j in jobs.values() for pid in j.pids}
        if not first:
            reported = {n for n, j in jobs.items() if j.reported}
            gpu_pids = {pid for p in (pids_now or {}).values() for pid in p}
            gpu_pids |= {pid for p in self._prev_pids.values() for pid in p}
            for pid in sorted(gpu_pids):
                name = pid_job.get(pid)
                if name is not None and name not in reported and pid not in roots:
                    roots[pid] = name
        for pids in (pids_now or {}).values():
            for pid in pids:
                name = pid_job.get(pid)
                if name is not None and pid not in roots:
                    roots[pid] = name
        return roots

    # --- inputs ----------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        for j in self._jobs.values():
            if j.reported and j.end_s is None and now - j.last_s > self.job_timeout_s:
                j.end_s = j.last_s
                self._warn.warning(f"expired {j.name}", f"job {j.name}: no report for "
                                   f"{self.job_timeout_s:g} s, counted as ended at its last report")

    def _gpu_readings(self, tick: Tick) -> dict[int, GpuReading]:
        out: dict[int, GpuReading] = {}
        for tap in self.taps:
            for p in tap.points_at(tick):
                if p.measurement != "gpu" or p.tag("host") != self.host:
                    continue
                index = p.tag("gpu") or ""
                if not index.isdigit():
                    continue
                out[int(index)] = GpuReading(int(index), p.tag("model") or "", _num(p.field("energy_j")),
                                       _num(p.field("util_pct")), _num(p.field("power_limit_w")),
                                       mig=bool(_num(p.field("mig_instances"))),
                                       sm_clock_mhz=_num(p.field("sm_clock_mhz")))
        return out

    def _cpu_energy(self, tick: Tick) -> float | None:
        """This host's CPU energy this round; sets the share of it that a model estimated."""
        values = [(_num(p.field("energy_j")), p.tag("method") == ESTIMATED)
                  for tap in self.taps for p in tap.points_at(tick)
                  if p.measurement == "cpu" and p.tag("host") == self.host
                  and is_additive_cpu_domain(p.tag("domain") or "")]
        known = [(v, est) for v, est in values if v is not None]
        total = math.fsum(v for v, _ in known)
        self._cpu_estimated_share = (math.fsum(v for v, est in known if est) / total
                                     if total > 0 else float(any(est for _, est in known)))
        return total if known else None

    def _idle_draws(self, tick: Tick, gpus: Mapping[int, GpuReading], cpu_energy_j: float | None,
                    interval_s: float) -> tuple[dict[int, float], float | None]:
        """Each GPU's and the CPU's idle draw (collector.idle.idle_power_w), after noting this
        round's power of every device at <= 2 % utilisation."""
        def seen(key: int | str, energy_j: float | None, util: float | None) -> None:
            if energy_j is not None and util is not None and util <= IDLE_UTIL_MAX_PCT:
                power_w = energy_j / interval_s
                self._lowest_idle_w[key] = min(power_w, self._lowest_idle_w.get(key, power_w))

        for index, g in gpus.items():
            seen(index, g.energy_j, g.util_pct)
        utils = [_num(p.field("util_pct")) for tap in self.taps for p in tap.points_at(tick)
                 if p.measurement == "cpu" and p.tag("host") == self.host]
        known = [u for u in utils if u is not None]
        seen("cpu", cpu_energy_j, max(known) if known else None)
        gpu_idle = {i: w for i, g in gpus.items()
                    if (w := idle_power_w(self._lowest_idle_w.get(i), g.model)[0]) is not None}
        return gpu_idle, idle_power_w(self._lowest_idle_w.get("cpu"), "")[0]

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

    def _note_report_ticks(self, pid: int, now: float) -> None:
        """(Under the lock.) The CPU time a newly reported process has used so far."""
        if self.proc is None or not self.attribute_cpu:
            return
        st = self.proc.stat(pid)
        if st is not None:
            self._report_ticks.setdefault((pid, st.start_ticks), (st.cpu_ticks, now))
        for key in [k for k, (_, t) in self._report_ticks.items() if now - t > REPORT_TICKS_KEEP_S]:
            del self._report_ticks[key]

    def _cpu_ticks_by_job(self, roots: Mapping[int, str], interval_s: float) -> dict[str, float]:
        """CPU time (clock ticks) each job's processes and their descendants used since last round."""
        if self.proc is None or not self.attribute_cpu:
            return {}
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
                    with self._lock:
                        reported = self._report_ticks.pop(key, None)
                    # New since the last round: counted from when its job's report named it, else
                    # all its CPU time is in this interval if it is younger, else from now.
                    age = self.proc.age_s(pid)
                    before = (reported[0] if reported is not None
                              else 0.0 if age is not None and age <= interval_s else st.cpu_ticks)
                ticks[name] = ticks.get(name, 0.0) + max(0.0, st.cpu_ticks - before)
        self._prev_ticks = seen
        return ticks



def with_jobs(
    sources: Sequence[Source],
    host: str,
    *,
    proc_root: str = "/proc",
    feeds: Sequence[Source] = (),
    clock: Callable[[], float] = time.monotonic,
    job_timeout_s: float = 60.0,
    kubelet_socket: str | None = None,
    idle_policy: str = DEFAULT_IDLE_POLICY,
    team_map: Mapping[str, str] | None = None,
) -> tuple[list[Source], JobTracker]:
    """The agent's sources with job tracking added: each tapped, then ``feeds``, then the tracker.

    ``feeds`` are work sources such as :class:`collector.sources.promscrape.PromScrapeSource`:
    they are attached to the tracker so their work lands in its job points. The
    first source with ``compute_pids()`` (NVML) tells which processes use each GPU.
    ``kubelet_socket`` ("off" or None: none) tags job points with the Kubernetes pod
    holding their GPUs, from the kubelet's PodResources API at that path.
    """
    taps = [EnergyTap(s) for s in sources]
    nvml = next((s for s in sources if callable(getattr(s, "compute_pids", None))), None)
    pods = None
    if nvml is not None and kubelet_socket not in (None, "off"):
        from collector.k8s.podresources import PodResourcesClient

        pods = PodLabels(PodResourcesClient(kubelet_socket))
    tracker = JobTracker(host, taps=taps, processes=NvmlProcesses(nvml) if nvml else None,
                         proc=ProcTree(proc_root), clock=clock, job_timeout_s=job_timeout_s,
                         pods=pods, idle_policy=idle_policy, team_map=team_map)
    for feed in feeds:
        attach = getattr(feed, "attach", None)
        if callable(attach):
            attach(tracker)
    return [*taps, *feeds, tracker], tracker


def _num(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
