"""Simulated GPU fleet: a seeded, deterministic source with real GPU figures and a DVFS power model.

The fleet is the demo and the test double at once. Every quantity is a pure
function of (seed, layout, time), so a backfilled day and the live feed that
follows it agree, and two runs with the same seed write the same numbers.

Physics, per GPU and per 10 s simulation tick (state is constant within a tick,
so energy over any interval is the exact integral of power):

- Power at full clocks is ``idle + u * (tdp - idle)`` for utilisation ``u``; a
  share ``MEM_FRACTION`` of the dynamic part (memory, fabric) does not scale
  with core clock, the rest scales as ``s ** ALPHA`` (voltage tracks frequency).
- When that exceeds the power cap, the clock scale ``s`` drops until the power
  meets the cap (never below ``S_MIN``). Throughput scales as ``s ** beta``, with
  ``beta`` < 1 for memory-bound work, so throughput falls sub-linearly as the cap
  drops and work per joule really depends on the cap.

What is planted, per group of four nodes (see ``fleet_layout``): two training
jobs of one class at different caps (a Pareto frontier, and an H100 class run
at its 700 W default that a lower cap would serve better), an FP32 fine-tune on
tensor-core GPUs beside a bf16 run of the same workload, idle GPUs drawing
power, a deferrable evening batch job, a diurnal inference service whose cap
never binds, and a low-utilisation inference job worth consolidating.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collector.schema import Point, point
from collector.sources.base import Probe, Tick

NS = 1_000_000_000
SIM_TICK_S = 10
MEM_FRACTION = 0.30
ALPHA = 3.0
S_MIN = 0.2
NODE_OTHER_W = 120.0  # NICs, fans, disks: IT power that is neither GPU nor CPU


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model's public figures: board power (TDP), typical idle draw, cap range, dense bf16 TFLOPS."""

    model: str
    tdp_w: float
    idle_w: float
    min_cap_w: float
    bf16_tflops: float
    mem_clock_mhz: float
    max_sm_clock_mhz: float


# Public datasheet figures (board power, dense bf16 tensor TFLOPS); idle draw as
# commonly observed with nvidia-smi on an idle, persistence-mode GPU.
GPU_SPECS: dict[str, GpuSpec] = {
    s.model: s
    for s in (
        GpuSpec("NVIDIA H100 80GB HBM3", 700, 70, 200, 989, 2619, 1980),
        GpuSpec("NVIDIA H200", 700, 75, 200, 989, 3201, 1980),
        GpuSpec("NVIDIA A100-SXM4-80GB", 400, 55, 100, 312, 1593, 1410),
        GpuSpec("NVIDIA L40S", 350, 35, 100, 362, 9001, 2520),
        GpuSpec("NVIDIA L4", 72, 16, 40, 121, 6251, 2040),
    )
}

PRECISION_SPEED = {"bf16": 1.0, "fp16": 1.0, "fp8": 1.6, "fp32": 0.35}


@dataclass(frozen=True)
class JobSpec:
    """A workload: how fast it runs per H100-equivalent GPU at full clocks, and how it behaves."""

    name: str
    kind: str  # train | infer | batch
    precision: str
    util: float  # 0..1, at the job's steady state
    samples_per_s: float  # per GPU, on an H100-class GPU at full clocks, bf16
    tokens_per_sample: float
    flops_per_sample: float
    batch_size: int
    beta: float = 0.9  # how compute-bound: throughput ~ clock ** beta
    diurnal: bool = False
    deferrable: bool = False
    workload: str = ""  # workload class, for comparing like with like


@dataclass(frozen=True)
class Run:
    """A job occupying a GPU group during [offset_s, offset_s + duration_s) of every period."""

    job: JobSpec
    offset_s: int
    duration_s: int
    period_s: int
    service: bool = False  # a long-running service: no run number in its name

    def run_index(self, t_s: float) -> int | None:
        """Which run is active at ``t_s`` (seconds since epoch), or None."""
        k, into = divmod(t_s - self.offset_s, self.period_s)
        if into < self.duration_s:
            return int(k)
        return None


@dataclass(frozen=True)
class Group:
    """GPUs on one node that share a schedule and a power cap."""

    host: str
    model: str
    gpu_indices: tuple[int, ...]
    cap_w: float
    runs: tuple[Run, ...] = ()

    def active(self, t_s: float) -> tuple[Run, int] | None:
        for run in self.runs:
            k = run.run_index(t_s)
            if k is not None:
                return run, k
        return None


H = 3600
GAP_S = 600  # 10 min between runs: shorter than the 15 min idle rule, on purpose

LLM = JobSpec("llm-pretrain", "train", "bf16", 0.97, 24.0, 4096, 6 * 1.3e9 * 4096, 32,
              beta=0.6, workload="llm-1.3b")
BERT_FP32 = JobSpec("bert-ft-fp32", "train", "fp32", 0.96, 900.0, 512, 6 * 3.4e8 * 512, 64,
                    beta=0.85, workload="bert-large")
BERT = JobSpec("bert-ft", "train", "bf16", 0.95, 900.0, 512, 6 * 3.4e8 * 512, 64,
               beta=0.85, workload="bert-large")
EVAL = JobSpec("nightly-eval", "batch", "bf16", 0.9, 300.0, 2048, 2 * 7e9 * 2048, 16,
               beta=0.8, deferrable=True, workload="eval-7b")
BATCH_INFER = JobSpec("batch-infer", "infer", "bf16", 0.7, 200.0, 1024, 2 * 7e9 * 1024, 32,
                      beta=0.6, workload="infer-7b")
CHAT = JobSpec("chat-infer", "infer", "bf16", 0.6, 60.0, 512, 2 * 7e9 * 512, 8, beta=0.45,
               diurnal=True, workload="llm-decode")
EMBED = JobSpec("embed-infer", "infer", "fp16", 0.10, 400.0, 256, 2 * 1.1e8 * 256, 64,
                beta=0.7, workload="embedding")


def _cap(model: str, frac: float) -> float:
    spec = GPU_SPECS[model]
    return round(spec.tdp_w * frac)


def fleet_layout(nodes: int, gpus_per_node: int) -> list[Group]:
    """The deterministic fleet: node roles cycle every four nodes (see module docstring)."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes, gpus_per_node: must be >= 1, got {nodes} x {gpus_per_node}")
    groups: list[Group] = []
    g = gpus_per_node
    half = max(1, g // 2)
    first, second = tuple(range(half)), tuple(range(half, g))
    for i in range(nodes):
        host = f"node-{i:02d}" if nodes <= 100 else f"node-{i:04d}"
        role = i % 4
        phase = (i // 4) * 1800  # stagger the copies of each role
        if role == 0:
            m = "NVIDIA H100 80GB HBM3"
            groups.append(Group(host, m, first, _cap(m, 1.0),
                                (Run(_named(LLM, f"{host}-a"), phase, 8 * H - GAP_S, 8 * H),)))
            if second:
                groups.append(Group(host, m, second, _cap(m, 5 / 7),
                                    (Run(_named(LLM, f"{host}-b"), phase + 2 * H,
                                         8 * H - GAP_S, 8 * H),)))
        elif role == 1:
            m = "NVIDIA A100-SXM4-80GB"
            q = max(1, g // 4)
            groups.append(Group(host, m, first, _cap(m, 1.0),
                                (Run(_named(BERT_FP32, host), phase, 4 * H - GAP_S, 4 * H),)))
            if second:
                mid = second[:q] if len(second) > q else second
                groups.append(Group(host, m, mid, _cap(m, 1.0),
                                    (Run(_named(BERT, host), phase + H, 4 * H - GAP_S, 4 * H),)))
                rest = tuple(x for x in second if x not in mid)
                if rest:
                    groups.append(Group(host, m, rest, _cap(m, 1.0)))  # idle, drawing power
        elif role == 2:
            m = "NVIDIA H100 80GB HBM3"
            groups.append(Group(host, m, first, _cap(m, 4 / 7),
                                (Run(_named(LLM, f"{host}-c"), phase + 4 * H,
                                     8 * H - GAP_S, 8 * H),)))
            if second:
                # A deferrable eval at the evening carbon peak; batch inference otherwise.
                groups.append(Group(host, m, second, _cap(m, 1.0), (
                    Run(_named(EVAL, host), 17 * H, 5 * H - GAP_S, 24 * H),
                    Run(_named(BATCH_INFER, host), 22 * H, 19 * H - GAP_S, 24 * H),
                )))
        else:
            m = "NVIDIA L4"
            q = max(1, g // 4)
            chat = tuple(range(g - q)) if g > 1 else first
            groups.append(Group(host, m, chat, _cap(m, 1.0),
                                (Run(_named(CHAT, host), 0, 24 * H, 24 * H, service=True),)))
            embed = tuple(x for x in range(g) if x not in chat)
            if embed:
                groups.append(Group(host, m, embed, _cap(m, 1.0),
                                    (Run(_named(EMBED, host), 0, 24 * H, 24 * H, service=True),)))
    return groups


def _named(job: JobSpec, suffix: str) -> JobSpec:
    return JobSpec(**{**job.__dict__, "name": f"{job.name}-{suffix}"})


def job_id(run: Run, k: int) -> str:
    """A run's job id: the job name plus its UTC start, e.g. ``bert-ft-node-01-1128-0100``."""
    if run.service:
        return run.job.name
    start = time.gmtime(run.offset_s + k * run.period_s)
    return f"{run.job.name}-{time.strftime('%m%d-%H%M', start)}"


# --- physics -----------------------------------------------------------------
def dvfs(spec: GpuSpec, util: float, cap_w: float, beta: float) -> tuple[float, float, float]:
    """(power_w, clock scale s, throughput factor) for a GPU at utilisation ``util`` under ``cap_w``."""
    u = min(max(util, 0.0), 1.0)
    dynamic = spec.tdp_w - spec.idle_w
    static = spec.idle_w + MEM_FRACTION * u * dynamic
    core = (1 - MEM_FRACTION) * u * dynamic
    if static + core <= cap_w or core <= 0:
        return static + core, 1.0, 1.0
    s = max(S_MIN, ((max(cap_w - static, 0.0)) / core) ** (1 / ALPHA))
    return static + core * s**ALPHA, s, s**beta


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


def pue(t_s: float) -> float:
    """Facility PUE: cooling follows outdoor temperature, peaking mid-afternoon."""
    hour = (t_s % 86400) / 3600
    return 1.30 + 0.12 * math.sin(2 * math.pi * (hour - 9) / 24)


def _noise(seed: int, a: int, b: int) -> float:
    """Deterministic noise in [-1, 1] from (seed, a, b): splitmix64."""
    x = (seed * 0x9E3779B97F4A7C15 + a * 0xBF58476D1CE4E5B9 + b * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return (x / 2**63) - 1.0


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
    gpu_s: float = 0.0
    gpus: set[int] = field(default_factory=set)


class SimulatedFleet:
    """The `sim` source: N nodes x G GPUs with jobs, CPUs, a facility and a carbon region."""

    name = "sim"

    def __init__(
        self,
        nodes: int = 4,
        gpus_per_node: int = 8,
        seed: int = 1,
        interval_s: float = 1.0,
        site: str = "dc-1",
        region: str = "grid-west",
    ) -> None:
        self.groups = fleet_layout(nodes, gpus_per_node)
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.seed = seed
        self.interval_s = interval_s
        self.site = site
        self.region = region
        self._last_ns: int | None = None
        self._hosts = sorted({g.host for g in self.groups})
        self._uuid = {
            (grp.host, i): _uuid(seed, grp.host, i) for grp in self.groups for i in grp.gpu_indices
        }

    # --- Source protocol -----------------------------------------------------
    def probe(self) -> Probe:
        n = sum(len(g.gpu_indices) for g in self.groups)
        return Probe.found(f"simulated fleet: {self.nodes} nodes, {n} GPUs, seed {self.seed}")

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
        gid = hash_gpu(grp.host, gpu)
        n = _noise(self.seed, gid, tick_index)
        if active is None:
            power = spec.idle_w * (1 + 0.02 * n)
            return GpuState(power, 0.0, 0.0, 210.0, 0.0, None)
        run, _k = active
        job = run.job
        util = job.util * (0.15 + 0.85 * diurnal_load(t_s)) if job.diurnal else job.util
        util = min(1.0, max(0.0, util + 0.015 * n))
        power, s, speed = dvfs(spec, util, grp.cap_w, job.beta)
        power *= 1 + 0.01 * n
        rate = (
            job.samples_per_s * (spec.bf16_tflops / 989) * PRECISION_SPEED[job.precision]
            * speed * util / max(job.util, 1e-9)
        )
        return GpuState(
            power_w=power,
            util_pct=100 * util,
            mem_util_pct=100 * util * (0.45 + 0.1 * n),
            sm_clock_mhz=spec.max_sm_clock_mhz * s,
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
        last_tick = segments[-1][0]
        out: list[Point] = []
        jobs: dict[tuple[str, int], _JobAcc] = {}
        node_gpu_power: dict[str, float] = dict.fromkeys(self._hosts, 0.0)
        # Per host and simulation tick: summed GPU power and utilisation, for the
        # CPU model and the facility, integrated tick by tick like the GPUs.
        seg_gpu_w: dict[str, list[float]] = {h: [0.0] * len(segments) for h in self._hosts}
        seg_busy: dict[str, list[float]] = {h: [0.0] * len(segments) for h in self._hosts}
        for grp in self.groups:
            spec = GPU_SPECS[grp.model]
            for gpu in grp.gpu_indices:
                energy_j = 0.0
                state = None
                host_w, host_busy = seg_gpu_w[grp.host], seg_busy[grp.host]
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
                            acc = jobs[key] = _JobAcc(run, rk, grp.host, grp.model, grp.cap_w)
                        acc.energy_j += state.power_w * overlap_s
                        acc.samples += state.samples_per_s * overlap_s
                        acc.util_sum += state.util_pct * overlap_s
                        acc.gpu_s += overlap_s
                        acc.gpus.add(gpu)
                assert state is not None and k == last_tick
                node_gpu_power[grp.host] += state.power_w
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
                     "power_limit_w": grp.cap_w},
                    end_ns,
                ))
        for acc in jobs.values():
            job = acc.run.job
            n_gpus = len(acc.gpus)
            planned = None
            if not acc.run.service:
                spec = GPU_SPECS[acc.model]
                full_rate = job.samples_per_s * spec.bf16_tflops / 989 * PRECISION_SPEED[
                    job.precision] * n_gpus
                planned = round(full_rate * acc.run.duration_s * 0.9)
            out.append(point(
                "job",
                {"job": job_id(acc.run, acc.k), "host": acc.host, "kind": job.kind,
                 "precision": job.precision, "gpu_model": acc.model},
                {"energy_j": acc.energy_j, "samples": acc.samples,
                 "tokens": acc.samples * job.tokens_per_sample,
                 "steps": acc.samples / job.batch_size,
                 "flops": acc.samples * job.flops_per_sample,
                 "active_s": acc.gpu_s / max(n_gpus, 1),
                 "gpus": n_gpus, "batch_size": job.batch_size, "power_limit_w": acc.cap_w,
                 "util_pct": round(acc.util_sum / acc.gpu_s, 2) if acc.gpu_s else 0.0,
                 "deferrable": 1 if job.deferrable else 0,
                 "planned_samples": planned},
                end_ns,
            ))
        it_power_w = 0.0
        it_energy_j = 0.0
        facility_energy_j = 0.0
        gpus_here = max(1, self.gpus_per_node)
        for host in self._hosts:
            pkg_energy_j = dram_energy_j = 0.0
            for i, (k, overlap_s) in enumerate(segments):
                pkg_w, dram_w, cpu_util = self._cpu_power(host, k, seg_busy[host][i] / gpus_here)
                pkg_energy_j += pkg_w * overlap_s
                dram_energy_j += dram_w * overlap_s
                node_w = seg_gpu_w[host][i] + pkg_w + dram_w + NODE_OTHER_W
                it_energy_j += node_w * overlap_s
                facility_energy_j += node_w * overlap_s * pue(k * SIM_TICK_S)
            for domain, watts, joules in (("package-0", pkg_w / 2, pkg_energy_j / 2),
                                          ("package-1", pkg_w / 2, pkg_energy_j / 2),
                                          ("dram", dram_w, dram_energy_j)):
                out.append(point(
                    "cpu", {"host": host, "domain": domain, "method": "simulated"},
                    {"power_w": round(watts, 3), "energy_j": joules,
                     "util_pct": round(cpu_util, 2)},
                    end_ns,
                ))
            it_power_w += node_gpu_power[host] + pkg_w + dram_w + NODE_OTHER_W
        p = pue(last_tick * SIM_TICK_S)
        out.append(point(
            "facility", {"site": self.site},
            {"it_power_w": round(it_power_w, 2), "facility_power_w": round(it_power_w * p, 2),
             "it_energy_j": it_energy_j, "facility_energy_j": facility_energy_j},
            end_ns,
        ))
        intensity, renewable = carbon_intensity(end_ns / NS, self.seed)
        out.append(point(
            "carbon", {"region": self.region},
            {"intensity_g_per_kwh": intensity, "renewable_pct": renewable}, end_ns,
        ))
        return out


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
    **_ignored: Any,
) -> SimulatedFleet:
    """Factory for the registry; ignores options meant for real sensors (e.g. ``host``)."""
    return SimulatedFleet(nodes=nodes, gpus_per_node=gpus_per_node, seed=seed,
                          interval_s=interval_s)
