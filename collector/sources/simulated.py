"""The `sim` source: a seeded, deterministic simulated fleet, calibrated to published measurements.

The fleet is the demo, the test double and the yardstick for recommendations. Every quantity is a
pure function of (scenario, seed, layout, time), so a backfilled day and the live feed that follows
it agree, and two runs with the same seed write the same numbers.

- GPU models and their datasheet figures: ``collector.sim.models``.
- Power, clocks and throughput under a power limit (calibrated to MIT LL, Samsi et al., Zeus):
  ``collector.sim.physics``. State is constant within a 10 s simulation tick, so energy over any
  interval is the exact integral of power.
- The fleet (jobs, caps, sites, scenarios) and what is planted in it: ``collector.sim.fleet``;
  the planted inefficiencies' true savings: ``collector.sim.truth``. docs/simulator.md.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.atomicfile import replace_text
from collector.idle import ALLOCATION
from collector.job_round import job_team
from collector.schema import Point, point
from collector.sim.fleet import NAMESPACE_TEAM, Fleet, Group, JobSpec, Run, build_fleet, fleet_layout, job_id
from collector.sim.models import GPU_SPECS, GpuSpec
from collector.sim.physics import KINDS, locked_clock_point, operating_point, work_rate_flops
from collector.sources.base import Probe, Tick

NS = 1_000_000_000
SIM_TICK_S = 10
NODE_OTHER_W = 120.0  # NICs, fans, disks: IT power that is neither GPU nor CPU

__all__ = [
    "GPU_SPECS",
    "NS",
    "SIM_TICK_S",
    "GpuSpec",
    "Group",
    "JobSpec",
    "Run",
    "SimulatedFleet",
    "carbon_intensity",
    "fleet_layout",
    "job_id",
    "rate_at",
]


def diurnal_load(t_s: float) -> float:
    """Inference demand, 0.05..0.95, peaking at 15:00 UTC."""
    hour = (t_s % 86400) / 3600
    return 0.5 + 0.45 * math.sin(2 * math.pi * (hour - 9) / 24)


def carbon_intensity(t_s: float, seed: int) -> tuple[float, float]:
    """(g CO2/kWh, renewable %) for the region, hourly: a solar dip at midday, an evening peak."""
    hour = int(t_s // 3600)
    h = hour % 24
    solar = max(0.0, math.sin(math.pi * (h - 6) / 12)) if 6 <= h <= 18 else 0.0
    evening = math.exp(-((h - 19) ** 2) / 4)
    noise = _noise(seed, 7, hour)
    intensity = 390 - 190 * solar + 90 * evening + 15 * noise
    renewable = min(95.0, max(5.0, 30 + 45 * solar - 8 * evening + 3 * noise))
    return round(intensity, 1), round(renewable, 1)


def _noise(seed: int, a: int, b: int) -> float:
    """Deterministic noise in [-1, 1] from (seed, a, b): splitmix64."""
    x = (seed * 0x9E3779B97F4A7C15 + a * 0xBF58476D1CE4E5B9 + b * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return (x / 2**63) - 1.0


def job_util(job: JobSpec, t_s: float, noise: float) -> float:
    """A job's utilisation (0..1) at ``t_s``: its steady level, following demand for a diurnal service."""
    util = job.util * (0.15 + 0.85 * diurnal_load(t_s)) if job.diurnal else job.util
    return round(min(1.0, max(0.0, util + 0.015 * noise)), 4)  # rounded: rate_at's cache hits


@functools.lru_cache(maxsize=65536)
def rate_at(spec: GpuSpec, job: JobSpec, util: float, cap_w: float,
            clock_lock: float | None = None) -> tuple[float, float, float]:
    """(power W, SM clock share, samples/s) of one GPU running ``job`` at ``util`` under ``cap_w``,
    with SM clocks locked at share ``clock_lock`` of max where the group's are (the lower of the
    locked clock and the clock the limit allows: the driver honours both)."""
    kind = KINDS[job.work]
    op = operating_point(spec, kind, util, cap_w)
    if clock_lock is not None and clock_lock < op.clock:
        op = locked_clock_point(spec, kind, util, clock_lock)
    rate = work_rate_flops(spec, kind, job.precision, util, op) / job.flops_per_sample
    return op.power_w, op.clock, rate


@dataclass(frozen=True)
class GpuState:
    """One GPU during one simulation tick."""

    power_w: float
    util_pct: float
    mem_util_pct: float
    sm_clock_mhz: float
    samples_per_s: float
    job: tuple[Run, int] | None


@dataclass
class _JobAcc:
    run: Run
    k: int
    host: str
    model: str
    cap_w: float
    energy_j: float = 0.0
    samples: float = 0.0
    util_sum: float = 0.0  # util_pct x GPU-seconds
    clock_sum: float = 0.0  # SM clock MHz x GPU-seconds
    gpu_s: float = 0.0
    gpus: set[int] = field(default_factory=set)


class SimulatedFleet:
    """The `sim` source: N nodes x G GPUs with jobs, CPUs, facilities and a carbon region."""

    name = "sim"

    def __init__(
        self,
        nodes: int = 4,
        gpus_per_node: int = 8,
        seed: int = 1,
        interval_s: float = 1.0,
        site: str | None = None,
        region: str = "grid-west",
        scenario: str = "default",
        cap_state: Path | None = None,
    ) -> None:
        self.fleet: Fleet = build_fleet(nodes, gpus_per_node, scenario, seed)
        self.groups = list(self.fleet.groups)
        self.scenario = scenario
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.seed = seed
        self.interval_s = interval_s
        self.region = region
        self._site_name = {h: (site or s.name) for h, s in self.fleet.site_of.items()}
        self._last_ns: int | None = None
        self._hosts = sorted({g.host for g in self.groups} | set(self.fleet.site_of))
        self._uuid = {
            (grp.host, i): _uuid(seed, grp.host, i) for grp in self.groups for i in grp.gpu_indices
        }
        self._group_of = {(grp.host, i): grp for grp in self.groups for i in grp.gpu_indices}
        # Power limits set through the simulated NVML (collector.sim.nvml): (host, gpu) ->
        # [(first simulation tick it holds for, limit W)], oldest first. Like a real GPU's limit it
        # outlives the agent: kept in ``cap_state`` (a JSON file) when one is given.
        self.cap_state = cap_state
        self._cap_changes: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self._load_caps()

    # --- power limits set at run time ---------------------------------------------------------
    def group_of(self, host: str, gpu: int) -> Group:
        """The group GPU ``gpu`` of ``host`` belongs to; KeyError when there is no such GPU."""
        return self._group_of[(host, gpu)]

    def cap_at(self, host: str, gpu: int, tick_index: int) -> float:
        """The power limit of a GPU during simulation tick ``tick_index``."""
        cap = self._group_of[(host, gpu)].cap_w
        for first, watts in self._cap_changes.get((host, gpu), ()):
            if first > tick_index:
                break
            cap = watts
        return cap

    def set_cap(self, host: str, gpu: int, cap_w: float, at_ns: int | None = None) -> None:
        """Set a GPU's power limit from the first simulation tick that starts at or after ``at_ns``
        (default: the end of the last sampled interval), so stored data never changes after the
        fact. Outside the model's [min, max] it raises ValueError (NVML_ERROR_INVALID_ARGUMENT)."""
        grp = self._group_of[(host, gpu)]
        cap = GPU_SPECS[grp.model].check_cap(cap_w)
        when = at_ns if at_ns is not None else self._last_ns
        if when is None:
            import time

            when = time.time_ns()
        first = -(-when // (SIM_TICK_S * NS))
        changes = [c for c in self._cap_changes.get((host, gpu), []) if c[0] < first]
        changes.append((first, cap))
        self._cap_changes[(host, gpu)] = changes
        self._save_caps()

    def current_cap(self, host: str, gpu: int) -> float:
        """The limit a GPU has now: the latest one set, else the fleet's layout."""
        changes = self._cap_changes.get((host, gpu))
        return changes[-1][1] if changes else self._group_of[(host, gpu)].cap_w

    def _load_caps(self) -> None:
        if self.cap_state is None or not self.cap_state.exists():
            return
        try:
            raw = json.loads(self.cap_state.read_text(encoding="utf-8"))
            for key, changes in raw.get("caps", {}).items():
                host, _, gpu = key.rpartition("/")
                if (host, int(gpu)) in self._group_of:
                    self._cap_changes[(host, int(gpu))] = [(int(k), float(w)) for k, w in changes]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"simulated GPU state {self.cap_state}: unreadable ({exc}); "
                             "delete it to start from the fleet's layout") from None

    def _save_caps(self) -> None:
        if self.cap_state is None:
            return
        body = {"caps": {f"{h}/{g}": changes for (h, g), changes in self._cap_changes.items()}}
        replace_text(self.cap_state, json.dumps(body))

    def uuid(self, host: str, gpu: int) -> str:
        """The GPU's simulated UUID (the ``uuid`` tag of its points)."""
        return self._uuid[(host, gpu)]

    # --- Source protocol -----------------------------------------------------
    def probe(self) -> Probe:
        n = sum(len(g.gpu_indices) for g in self.groups)
        return Probe.found(f"simulated fleet ({self.scenario}): {self.nodes} nodes, {n} GPUs, "
                           f"seed {self.seed}")

    def sample(self, tick: Tick) -> list[Point]:
        end = tick.wall_ns
        start = self._last_ns if self._last_ns is not None else end - int(self.interval_s * NS)
        self._last_ns = end
        if end <= start:
            return []
        return self.points_between(start, end)

    def close(self) -> None:
        pass

    # --- the model -----------------------------------------------------------
    def gpu_state(self, grp: Group, gpu: int, tick_index: int) -> GpuState:
        """The state of one GPU during simulation tick ``tick_index`` (t = index * SIM_TICK_S)."""
        spec = GPU_SPECS[grp.model]
        t_s = tick_index * SIM_TICK_S
        active = grp.active(t_s)
        n = _noise(self.seed, hash_gpu(grp.host, gpu), tick_index)
        cap_w = self.cap_at(grp.host, gpu, tick_index) if self._cap_changes else grp.cap_w
        if active is None:
            power = min(spec.idle_w * (1 + 0.02 * n), cap_w)
            return GpuState(power, 0.0, 0.0, 210.0, 0.0, None)
        util = job_util(active[0].job, t_s, n)
        power, clock, rate = rate_at(spec, active[0].job, util, cap_w, grp.clock_lock)
        return GpuState(
            power_w=power,
            util_pct=100 * util,
            mem_util_pct=100 * util * (0.45 + 0.1 * n),
            sm_clock_mhz=spec.max_sm_clock_mhz * clock,
            samples_per_s=rate,
            job=active,
        )

    def _cpu_power(self, host: str, tick_index: int, busy: float) -> tuple[float, float, float]:
        """(package W, dram W, CPU util %) of a node whose GPUs are ``busy`` (0..1) in a tick."""
        n = _noise(self.seed, hash_gpu(host, 99), tick_index)
        cpu_util = min(100.0, max(0.0, 100 * (0.04 + 0.45 * busy) + 2 * n))
        return 65 + 1.6 * cpu_util, 18 + 0.12 * cpu_util, cpu_util

    def _segments(self, start_ns: int, end_ns: int) -> Iterator[tuple[int, float]]:
        """(tick index, seconds of overlap) for the ticks covering [start_ns, end_ns)."""
        first = start_ns // (SIM_TICK_S * NS)
        last = (end_ns - 1) // (SIM_TICK_S * NS)
        for k in range(first, last + 1):
            lo = max(start_ns, k * SIM_TICK_S * NS)
            hi = min(end_ns, (k + 1) * SIM_TICK_S * NS)
            if hi > lo:
                yield k, (hi - lo) / NS

    def points_between(self, start_ns: int, end_ns: int) -> list[Point]:
        """Every point for the interval (start_ns, end_ns], time-stamped end_ns.

        Increments (energy_j, samples, ...) are exact integrals over the interval;
        gauges (power_w, util_pct, ...) are the state at the end of it.
        """
        segments = list(self._segments(start_ns, end_ns))
        jobs: dict[tuple[str, int], _JobAcc] = {}
        # Per host and simulation tick: summed GPU power and utilisation, for the
        # CPU model and the facility, integrated tick by tick like the GPUs.
        seg_gpu_w: dict[str, list[float]] = {h: [0.0] * len(segments) for h in self._hosts}
        seg_busy: dict[str, list[float]] = {h: [0.0] * len(segments) for h in self._hosts}
        out = self._gpu_points(segments, end_ns, jobs, seg_gpu_w, seg_busy)
        out += [self._job_point(acc, end_ns) for acc in jobs.values()]
        out += self._node_points(segments, end_ns, seg_gpu_w, seg_busy)
        intensity, renewable = carbon_intensity(end_ns / NS, self.seed)
        out.append(point(
            "carbon", {"region": self.region},
            {"intensity_g_per_kwh": intensity, "renewable_pct": renewable}, end_ns,
        ))
        return out

    def _gpu_points(self, segments: list[tuple[int, float]], end_ns: int,
                    jobs: dict[tuple[str, int], _JobAcc], seg_gpu_w: dict[str, list[float]],
                    seg_busy: dict[str, list[float]]) -> list[Point]:
        out = []
        for grp in self.groups:
            spec = GPU_SPECS[grp.model]
            host_w, host_busy = seg_gpu_w[grp.host], seg_busy[grp.host]
            for gpu in grp.gpu_indices:
                energy_j = 0.0
                state = None
                for i, (k, overlap_s) in enumerate(segments):
                    state = self.gpu_state(grp, gpu, k)
                    energy_j += state.power_w * overlap_s
                    host_w[i] += state.power_w
                    host_busy[i] += state.util_pct / 100
                    if state.job is not None:
                        run, rk = state.job
                        key = (run.job.name, rk)
                        acc = jobs.get(key)
                        if acc is None:
                            acc = jobs[key] = _JobAcc(run, rk, grp.host, grp.model,
                                                      self.cap_at(grp.host, gpu, segments[-1][0]))
                        acc.energy_j += state.power_w * overlap_s
                        acc.samples += state.samples_per_s * overlap_s
                        acc.util_sum += state.util_pct * overlap_s
                        acc.clock_sum += state.sm_clock_mhz * overlap_s
                        acc.gpu_s += overlap_s
                        acc.gpus.add(gpu)
                assert state is not None
                temp_c = 30 + 45 * (state.power_w - spec.idle_w * 0.5) / spec.tdp_w
                out.append(point(
                    "gpu",
                    {"host": grp.host, "gpu": str(gpu), "uuid": self._uuid[(grp.host, gpu)],
                     "model": grp.model, "method": "simulated"},
                    {"power_w": round(state.power_w, 3), "energy_j": energy_j,
                     "util_pct": round(state.util_pct, 2),
                     "mem_util_pct": round(state.mem_util_pct, 2),
                     "sm_clock_mhz": round(state.sm_clock_mhz),
                     "mem_clock_mhz": spec.mem_clock_mhz, "temp_c": round(temp_c, 1),
                     "power_limit_w": self.cap_at(grp.host, gpu, segments[-1][0])},
                    end_ns,
                ))
        return out

    def _job_point(self, acc: _JobAcc, end_ns: int) -> Point:
        job = acc.run.job
        n_gpus = len(acc.gpus)
        planned = None
        if not acc.run.service:
            # The plan: 90 % of what the job would do in its slot at full clocks.
            spec = GPU_SPECS[acc.model]
            full = rate_at(spec, job, job.util, spec.tdp_w)[2]
            planned = round(full * n_gpus * acc.run.duration_s * 0.9)
        return point(
            "job",
            {"job": job_id(acc.run, acc.k), "host": acc.host, "kind": job.kind,
             "precision": job.precision, "gpu_model": acc.model, "workload": job.workload,
             "namespace": job.namespace,
             "team": job_team({"namespace": job.namespace}, None, NAMESPACE_TEAM),
             # A run holds its GPUs alone: all their energy is its, idle draw included, which
             # is the allocation policy (collector.idle); idle_j is that draw's part.
             "idle_policy": ALLOCATION},
            {"energy_j": acc.energy_j, "samples": acc.samples,
             "tokens": acc.samples * job.tokens_per_sample,
             "steps": acc.samples / job.batch_size,
             "flops": acc.samples * job.flops_per_sample,
             "active_s": acc.gpu_s / max(n_gpus, 1),
             "gpus": n_gpus, "batch_size": job.batch_size, "power_limit_w": acc.cap_w,
             "util_pct": round(acc.util_sum / acc.gpu_s, 2) if acc.gpu_s else 0.0,
             "sm_clock_mhz": round(acc.clock_sum / acc.gpu_s, 1) if acc.gpu_s else None,
             "deferrable": 1 if job.deferrable else 0,
             "planned_samples": planned, "gpu_mask": sum(1 << g for g in acc.gpus),
             "idle_j": min(acc.energy_j, GPU_SPECS[acc.model].idle_w * acc.gpu_s)},
            end_ns,
        )

    def _node_points(self, segments: list[tuple[int, float]], end_ns: int,
                     seg_gpu_w: dict[str, list[float]],
                     seg_busy: dict[str, list[float]]) -> list[Point]:
        """CPU points per host and one facility point per site (IT and facility energy, × PUE)."""
        out = []
        sites: dict[str, list[float]] = {}  # site -> [it W now, it J, facility J, PUE now]
        gpus_here = max(1, self.gpus_per_node)
        last_t = segments[-1][0] * SIM_TICK_S
        for host in self._hosts:
            site = self.fleet.site_of[host]
            acc = sites.setdefault(self._site_name[host], [0.0, 0.0, 0.0, site.pue(last_t)])
            pkg_energy_j = dram_energy_j = 0.0
            pkg_w = dram_w = cpu_util = node_w = 0.0
            for i, (k, overlap_s) in enumerate(segments):
                pkg_w, dram_w, cpu_util = self._cpu_power(host, k, seg_busy[host][i] / gpus_here)
                pkg_energy_j += pkg_w * overlap_s
                dram_energy_j += dram_w * overlap_s
                node_w = seg_gpu_w[host][i] + pkg_w + dram_w + NODE_OTHER_W
                acc[1] += node_w * overlap_s
                acc[2] += node_w * overlap_s * site.pue(k * SIM_TICK_S)
            acc[0] += node_w
            for domain, watts, joules in (("package-0", pkg_w / 2, pkg_energy_j / 2),
                                          ("package-1", pkg_w / 2, pkg_energy_j / 2),
                                          ("dram", dram_w, dram_energy_j)):
                out.append(point(
                    "cpu", {"host": host, "domain": domain, "method": "simulated"},
                    {"power_w": round(watts, 3), "energy_j": joules,
                     "util_pct": round(cpu_util, 2)},
                    end_ns,
                ))
        for name, (it_w, it_j, fac_j, p) in sorted(sites.items()):
            out.append(point(
                "facility", {"site": name},
                {"it_power_w": round(it_w, 2), "facility_power_w": round(it_w * p, 2),
                 "it_energy_j": it_j, "facility_energy_j": fac_j},
                end_ns,
            ))
        return out


@functools.lru_cache(maxsize=65536)
def hash_gpu(host: str, gpu: int) -> int:
    h = 1469598103934665603
    for ch in f"{host}/{gpu}":
        h = ((h ^ ord(ch)) * 1099511628211) & (2**64 - 1)
    return h


def _uuid(seed: int, host: str, gpu: int) -> str:
    x = hash_gpu(host, gpu) ^ (seed * 0x9E3779B97F4A7C15 & (2**64 - 1))
    y = hash_gpu(f"{seed}", gpu) ^ x
    h = f"{x:016x}{y:016x}"
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def from_options(
    nodes: int = 4,
    gpus_per_node: int = 8,
    seed: int = 1,
    interval_s: float = 1.0,
    scenario: str = "default",
    cap_state: Path | None = None,
    **_ignored: Any,
) -> SimulatedFleet:
    """Factory for the registry; ignores options meant for real sensors (e.g. ``host``)."""
    return SimulatedFleet(nodes=nodes, gpus_per_node=gpus_per_node, seed=seed,
                          interval_s=interval_s, scenario=scenario, cap_state=cap_state)
