"""The simulated fleet's layout: jobs, GPU groups with their caps, sites, and the scenarios.

Inefficiencies are planted here, in how the fleet is run, never in the physics: a power cap
left at TDP where the same workload runs at a lower cap elsewhere, FP32 training on tensor-core
GPUs, idle GPUs, a lightly used multi-GPU service, a deferrable job at the evening carbon peak, an
inference service whose cap never binds (next to a twin whose SM clocks the operator locked), a
site with a high PUE. Each group says whether it is a
``control`` (healthy: nothing should flag it) or ``planted``; ``collector.sim.truth`` derives the
true savings from the physics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from collector.sim.models import GPU_SPECS

H = 3600
GAP_S = 600  # 10 min between runs: shorter than the 15 min idle rule, on purpose


@dataclass(frozen=True)
class JobSpec:
    """A job: its id prefix, explicit ``workload`` tag, schema kind, physics kind and work per sample."""

    name: str
    workload: str
    kind: str  # the job point's kind tag: train | infer | batch
    work: str  # collector.sim.physics.KINDS key
    precision: str
    util: float  # 0..1 at steady state (the peak of the day for a diurnal service)
    tokens_per_sample: float
    flops_per_sample: float
    batch_size: int
    diurnal: bool = False
    deferrable: bool = False
    namespace: str = ""  # the Kubernetes namespace it runs in; its team via NAMESPACE_TEAM


# Who runs what, for the showback demo: namespaces mapped to teams the way an operator's
# --team-map would; `search` is left unmapped, so its namespace is its team (the default).
NAMESPACE_TEAM = {"llm-research": "research", "nlp-train": "nlp", "serving": "product",
                  "evals": "research"}


@dataclass(frozen=True)
class Run:
    """A job occupying a GPU group during [offset_s, offset_s + duration_s) of every period."""

    job: JobSpec
    offset_s: int
    duration_s: int
    period_s: int
    service: bool = False  # a long-running service: no run suffix in its id

    def run_index(self, t_s: float) -> int | None:
        k, into = divmod(t_s - self.offset_s, self.period_s)
        return int(k) if into < self.duration_s else None


@dataclass(frozen=True)
class Group:
    """GPUs on one node that share a schedule and a power cap; ``role``: planted | control | ''."""

    host: str
    model: str
    gpu_indices: tuple[int, ...]
    cap_w: float
    runs: tuple[Run, ...] = ()
    role: str = ""
    clock_lock: float | None = None  # SM clocks locked at this share of max (nvidia-smi -lgc)

    def active(self, t_s: float) -> tuple[Run, int] | None:
        for run in self.runs:
            k = run.run_index(t_s)
            if k is not None:
                return run, k
        return None

    @property
    def gpus(self) -> tuple[str, ...]:
        return tuple(f"{self.host}/{i}" for i in self.gpu_indices)


@dataclass(frozen=True)
class Site:
    """A facility: PUE follows outdoor temperature around its mean, peaking mid-afternoon."""

    name: str
    pue_mean: float
    pue_swing: float = 0.12

    def pue(self, t_s: float) -> float:
        hour = (t_s % 86400) / 3600
        return self.pue_mean + self.pue_swing * math.sin(2 * math.pi * (hour - 9) / 24)


@dataclass(frozen=True)
class Fleet:
    scenario: str
    groups: tuple[Group, ...]
    site_of: dict[str, Site]  # host -> site


def job_id(run: Run, k: int) -> str:
    """A run's job id: the job name plus its UTC start, e.g. ``bert-ft-node-01-1128-0100``."""
    if run.service:
        return run.job.name
    start = time.gmtime(run.offset_s + k * run.period_s)
    return f"{run.job.name}-{time.strftime('%m%d-%H%M', start)}"


def _named(job: JobSpec, suffix: str) -> JobSpec:
    return replace(job, name=f"{job.name}-{suffix}")


def _cap(model: str, frac: float) -> float:
    return float(round(GPU_SPECS[model].tdp_w * frac))


# --- jobs (flops per sample: 6·N·tokens for training, 2·N·tokens for inference) -------------------
LLM = JobSpec("llm-pretrain", "llm-1.3b", "train", "llm-train", "bf16", 0.97, 4096,
              6 * 1.3e9 * 4096, 32, namespace="llm-research")
BERT_FP32 = JobSpec("bert-ft-fp32", "bert-large", "train", "train", "fp32", 0.96, 512,
                    6 * 3.4e8 * 512, 64, namespace="nlp-train")
BERT = JobSpec("bert-ft", "bert-large", "train", "train", "bf16", 0.95, 512, 6 * 3.4e8 * 512, 64,
               namespace="nlp-train")
SERVE = JobSpec("serve", "llm-7b-serve", "infer", "llm-infer", "fp8", 0.9, 1024,
                2 * 7e9 * 1024, 32, namespace="serving")
EVAL = JobSpec("nightly-eval", "eval-7b", "batch", "batch-infer", "fp8", 0.9, 2048,
               2 * 7e9 * 2048, 16, deferrable=True, namespace="evals")
CHAT = JobSpec("chat-infer", "chat-7b", "infer", "llm-infer", "fp8", 0.6, 512, 2 * 7e9 * 512, 8,
               diurnal=True, namespace="serving")
EMBED = JobSpec("embed-infer", "embedding", "infer", "embed", "int8", 0.10, 256,
                2 * 1.1e8 * 256, 64, namespace="search")


def _split(g: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    half = max(1, g // 2)
    return tuple(range(half)), tuple(range(half, g)), max(1, g // 4)


def _host(i: int, nodes: int) -> str:
    return f"node-{i:02d}" if nodes <= 100 else f"node-{i:04d}"


def _default(i: int, host: str, g: int, phase: int) -> list[Group]:
    """Four roles: H100 training (cap left at TDP vs 70 %), A100 (FP32, bf16 control, idle),
    H100 serving (fp8 at TDP vs 60 %, a bf16 twin, a deferrable eval), L4 services."""
    first, second, q = _split(g)
    mid, rest = second[:q] if len(second) > q else second, second[q:] if len(second) > q else ()
    role = i % 4
    out: list[Group] = []
    if role == 0:
        m = "NVIDIA H100 80GB HBM3"
        out.append(Group(host, m, first, _cap(m, 1.0), (
            Run(_named(LLM, f"{host}-a"), phase, 8 * H - GAP_S, 8 * H),), "planted"))
        if second:
            out.append(Group(host, m, second, _cap(m, 0.7), (
                Run(_named(LLM, f"{host}-b"), phase + 2 * H, 8 * H - GAP_S, 8 * H),), "control"))
    elif role == 1:
        m = "NVIDIA A100-SXM4-80GB"
        out.append(Group(host, m, first, _cap(m, 1.0), (
            Run(_named(BERT_FP32, host), phase, 4 * H - GAP_S, 4 * H),), "planted"))
        if mid:  # at 75 % of TDP: the limit sits just above what the job draws
            out.append(Group(host, m, mid, _cap(m, 0.75), (
                Run(_named(BERT, host), phase + H, 4 * H - GAP_S, 4 * H),), "control"))
        if rest:
            out.append(Group(host, m, rest, _cap(m, 1.0), (), "planted"))  # idle, drawing power
    elif role == 2:
        m = "NVIDIA H100 80GB HBM3"
        out.append(Group(host, m, first, _cap(m, 1.0), (
            Run(_named(SERVE, f"{host}-a"), 0, 24 * H, 24 * H, service=True),), "planted"))
        if mid:
            out.append(Group(host, m, mid, _cap(m, 0.6), (
                Run(_named(SERVE, f"{host}-b"), 0, 24 * H, 24 * H, service=True),), "control"))
        if rest:
            bf16 = replace(SERVE, name="serve-bf16", precision="bf16")
            out.append(Group(host, m, rest, _cap(m, 1.0), (
                Run(_named(EVAL, host), 17 * H, 5 * H - GAP_S, 24 * H),
                Run(_named(bf16, host), 22 * H, 19 * H - GAP_S, 24 * H)), "planted"))
    else:
        m = "NVIDIA L4"
        chat = tuple(range(g - q)) if g > 1 else first
        out.append(Group(host, m, chat, _cap(m, 1.0), (
            Run(_named(CHAT, host), 0, 24 * H, 24 * H, service=True),), "planted"))
        embed = tuple(x for x in range(g) if x not in chat)
        if embed:
            out.append(Group(host, m, embed, _cap(m, 1.0), (
                Run(_named(EMBED, host), 0, 24 * H, 24 * H, service=True),), "planted"))
    return out


def _v100_lab(i: int, host: str, g: int, phase: int) -> list[Group]:
    """V100 PCIe training at 250 W vs 150 W (the MIT LL setting); V100 SXM2 FP32 vs fp16, idle."""
    first, second, q = _split(g)
    mid, rest = second[:q] if len(second) > q else second, second[q:] if len(second) > q else ()
    bert16 = replace(BERT, precision="fp16")
    if i % 2 == 0:
        m = "Tesla V100-PCIE-32GB"
        out = [Group(host, m, first, 250.0, (
            Run(_named(bert16, f"{host}-a"), phase, 6 * H - GAP_S, 6 * H),), "planted")]
        if second:
            out.append(Group(host, m, second, 150.0, (
                Run(_named(bert16, f"{host}-b"), phase + H, 6 * H - GAP_S, 6 * H),), "control"))
        return out
    m = "Tesla V100-SXM2-32GB"
    out = [Group(host, m, first, 300.0, (
        Run(_named(BERT_FP32, host), phase, 4 * H - GAP_S, 4 * H),), "planted")]
    if mid:
        out.append(Group(host, m, mid, 230.0, (
            Run(_named(bert16, host), phase + H, 4 * H - GAP_S, 4 * H),), "control"))
    if rest:
        out.append(Group(host, m, rest, 300.0, (), "planted"))
    return out


def _a100_serving(i: int, host: str, g: int, phase: int) -> list[Group]:
    """A100 PCIe int8 serving at 250 W vs 175 W (the Samsi et al. setting); a lightly used embedder."""
    first, second, _ = _split(g)
    serve8 = replace(SERVE, precision="int8")
    if i % 2 == 0:
        m = "NVIDIA A100-PCIE-40GB"
        out = [Group(host, m, first, 250.0, (
            Run(_named(serve8, f"{host}-a"), 0, 24 * H, 24 * H, service=True),), "planted")]
        if second:
            out.append(Group(host, m, second, 175.0, (
                Run(_named(serve8, f"{host}-b"), 0, 24 * H, 24 * H, service=True),), "control"))
        return out
    m = "NVIDIA A100-SXM4-80GB"
    bert = Group(host, m, first, 300.0, (
        Run(_named(BERT, host), phase, 4 * H - GAP_S, 4 * H),), "control")
    if not second:
        return [bert]
    return [bert, Group(host, m, second, 400.0, (
        Run(_named(EMBED, host), 0, 24 * H, 24 * H, service=True),), "planted")]


def _mixed(i: int, host: str, g: int, phase: int) -> list[Group]:
    """H200 training (700 W vs 420 W), L40S fp8 serving (350 W vs 250 W), MI300X with idle GPUs."""
    first, second, _ = _split(g)
    role = i % 3
    if role == 0:
        m, lo = "NVIDIA H200", 420.0
        job, runs = LLM, lambda j, o: (Run(j, phase + o, 8 * H - GAP_S, 8 * H),)
    elif role == 1:
        m, lo = "NVIDIA L40S", 250.0
        job, runs = SERVE, lambda j, o: (Run(j, 0, 24 * H, 24 * H, service=True),)
    else:
        m = "AMD Instinct MI300X"
        out = [Group(host, m, first, 750.0, (
            Run(_named(LLM, host), phase, 8 * H - GAP_S, 8 * H),), "control")]
        if second:
            out.append(Group(host, m, second, 750.0, (), "planted"))
        return out
    out = [Group(host, m, first, GPU_SPECS[m].tdp_w, runs(_named(job, f"{host}-a"), 0), "planted")]
    if second:
        out.append(Group(host, m, second, lo, runs(_named(job, f"{host}-b"), H), "control"))
    return out


def _healthy(i: int, host: str, g: int, phase: int) -> list[Group]:
    """Nothing to flag: one cap per class, fp8/bf16 everywhere, every GPU busy."""
    role = i % 3
    every = tuple(range(g))
    if role == 0:
        m = "NVIDIA H100 80GB HBM3"
        return [Group(host, m, every, 490.0, (
            Run(_named(LLM, host), phase, 8 * H - GAP_S, 8 * H),), "control")]
    if role == 1:
        m = "NVIDIA A100-SXM4-80GB"
        return [Group(host, m, every, 300.0, (
            Run(_named(BERT, host), phase, 4 * H - GAP_S, 4 * H),), "control")]
    m = "NVIDIA L40S"
    return [Group(host, m, every, 250.0, (
        Run(_named(SERVE, host), 0, 24 * H, 24 * H, service=True),), "control")]


def _autopilot(i: int, host: str, g: int, phase: int) -> list[Group]:
    """The autopilot's yardstick (docs/autopilot.md): every limit at TDP, on nodes by role:
    0 compute-bound training (bert, A100) next to a twin that did not opt in; 1 LLM training
    (H100); 2 latency-sensitive LLM serving (H100); 3 a service whose second phase (after 2 h)
    is far heavier than its first. Opted-in jobs are named ``ap-*``."""
    first, second, _ = _split(g)
    role = i % 4
    if role == 0:
        m = "NVIDIA A100-SXM4-80GB"
        out = [Group(host, m, first, 400.0, (
            Run(replace(BERT, name=f"ap-bert-{host}"), phase, 12 * H, 24 * H),))]
        if second:
            out.append(Group(host, m, second, 400.0, (
                Run(replace(BERT, name=f"bert-ft-{host}"), phase, 12 * H, 24 * H),)))
        return out
    m = "NVIDIA H100 80GB HBM3"
    every = tuple(range(g))
    if role == 1:
        return [Group(host, m, every, 700.0, (
            Run(replace(LLM, name=f"ap-llm-{host}"), phase, 12 * H, 24 * H),))]
    if role == 2:
        return [Group(host, m, every, 700.0, (
            Run(replace(SERVE, name=f"ap-serve-{host}"), 0, 24 * H, 24 * H, service=True),))]
    light = replace(BERT, name=f"ap-phase-{host}", util=0.45)
    heavy = replace(LLM, name=f"ap-phase-{host}", kind="train")
    return [Group(host, m, every, 700.0, (
        Run(light, 0, 2 * H, 24 * H, service=True),
        Run(heavy, 2 * H, 22 * H, 24 * H, service=True)))]


def _clock_lock(i: int, host: str, g: int, phase: int) -> list[Group]:
    """Classes whose caps never bind, half at full clocks (planted) and half with SM clocks locked
    at 80 % by the operator (control: a measured lock): bert-large bf16 training on A100 SXM4 at
    400 W, diurnal chat serving on L4."""
    first, second, _ = _split(g)
    if i % 2 == 0:
        m = "NVIDIA A100-SXM4-80GB"
        out = [Group(host, m, first, 400.0, (
            Run(_named(BERT, f"{host}-a"), phase, 4 * H - GAP_S, 4 * H),), "planted")]
        if second:
            out.append(Group(host, m, second, 400.0, (
                Run(_named(BERT, f"{host}-b"), phase + H, 4 * H - GAP_S, 4 * H),), "control",
                clock_lock=0.8))
        return out
    m = "NVIDIA L4"
    out = [Group(host, m, first, 72.0, (
        Run(_named(CHAT, f"{host}-a"), 0, 24 * H, 24 * H, service=True),), "planted")]
    if second:
        out.append(Group(host, m, second, 72.0, (
            Run(_named(CHAT, f"{host}-b"), 0, 24 * H, 24 * H, service=True),), "control",
            clock_lock=0.8))
    return out


Builder = Callable[[int, str, int, int], list[Group]]
# scenario -> (layout per node, site of node i)
SCENARIOS: dict[str, tuple[Builder, Callable[[int], Site]]] = {
    "default": (_default, lambda i: Site("edge-1", 1.72, 0.08) if i % 4 == 3 else Site("dc-1", 1.30)),
    "v100-lab": (_v100_lab, lambda i: Site("lab-1", 1.62, 0.10)),
    "a100-serving": (_a100_serving, lambda i: Site("dc-1", 1.25)),
    "mixed": (_mixed, lambda i: Site("dc-2", 1.20) if i % 3 else Site("dc-3", 1.68, 0.06)),
    "healthy": (_healthy, lambda i: Site("dc-1", 1.18, 0.05)),
    "autopilot": (_autopilot, lambda i: Site("dc-1", 1.25)),
    "clock-lock": (_clock_lock, lambda i: Site("dc-1", 1.25)),
}


def build_fleet(nodes: int, gpus_per_node: int, scenario: str = "default", seed: int = 1) -> Fleet:
    """The deterministic fleet of a scenario; the seed staggers schedules (seed 1: the reference)."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes, gpus_per_node: must be >= 1, got {nodes} x {gpus_per_node}")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    builder, site = SCENARIOS[scenario]
    shift = ((seed - 1) % 4) * 1800
    groups: list[Group] = []
    sites: dict[str, Site] = {}
    for i in range(nodes):
        host = _host(i, nodes)
        for grp in builder(i, host, gpus_per_node, (i // 4) * 1800 + shift):
            GPU_SPECS[grp.model].check_cap(grp.cap_w)  # a limit NVML would refuse is a layout bug
            groups.append(grp)
        sites[host] = site(i)
    return Fleet(scenario, tuple(groups), sites)


def fleet_layout(nodes: int, gpus_per_node: int, scenario: str = "default") -> list[Group]:
    """The groups of a scenario (see ``build_fleet``)."""
    return list(build_fleet(nodes, gpus_per_node, scenario).groups)
