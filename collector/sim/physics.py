"""Power, clock and throughput of a GPU under a power limit: the physics the recommender is tested against.

Model (per GPU, steady state at utilisation ``u``; all figures relative to the model's datasheet):

- Time per unit of work at SM clock share ``f`` (1 = max boost) is ``T(f) = c / f + (1 - c)``:
  a share ``c`` of the work is bound by the SM clock, the rest by memory/interconnect, which a
  power limit does not slow (roofline).
- Power is ``idle + D · [m / T(f) + (1 - m) · g(f)]`` with ``D = u · (a · TDP - idle)`` the dynamic
  draw at full clocks. The memory share ``m`` of it follows the work rate (bytes moved per unit of
  work are fixed); the core share follows ``g(f) = f^α`` (voltage tracks frequency, α = 2.5)
  down to the voltage floor ``F_V``, below which only frequency falls and ``g`` is linear.
- Under a limit the driver lowers clocks until power meets it: ``f`` solves ``P(f) = cap``, so
  power never exceeds the limit (NVIDIA power capping, nvidia-smi ``-pl``); a job that does not
  reach the limit runs at full clocks and is not slowed.

Energy per unit of work ``P(f) · T(f)`` falls as the limit falls (the core's ``f^α`` term) until
idle power over the longer run dominates, then rises again: the U-shape Zeus (NSDI'23) measures.

Calibration (tests/collector/test_sim_physics.py reproduces each):
- MIT Lincoln Laboratory, "Great Power, Great Responsibility" (arXiv 2205.09646): V100 training,
  250 → 150 W: −13.7 % energy, +6.8 % time. ``train`` (a 0.74, m 0.3, c 0.45): −13.6 %, +6.6 %.
- Samsi et al., "From Words to Watts" (arXiv 2310.03003): LLaMA inference on A100, 250 → 175 W:
  about −23 % energy, +6–7 % latency. ``llm-infer`` (a 0.96, m 0.3, c 0.25): −22.5 %, +6.3 %.
- Zeus (You et al., NSDI'23): 15–76 % better energy efficiency at the optimal limit.
  ``llm-train`` on H100 / A100: about 55 % / 50 % at the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.sim.models import GpuSpec

ALPHA = 2.5
F_V = 0.6  # share of max clock below which voltage stays at its floor


@dataclass(frozen=True)
class WorkKind:
    """How a kind of work draws power and responds to clocks, and how much of the peak it uses.

    ``activity`` a: board power at full utilisation and clocks, as a share of TDP;
    ``mem_share`` m; ``clock_bound`` c (see module docstring); ``mfu``: achieved FLOP/s over the
    GPU's dense peak at full clocks (must not exceed ``clock_bound``: only the clock-bound part of
    the time can run at peak).
    """

    name: str
    activity: float
    mem_share: float
    clock_bound: float
    mfu: float
    source: str


KINDS: dict[str, WorkKind] = {k.name: k for k in (
    WorkKind("train", 0.74, 0.30, 0.45, 0.35,
             "MIT LL arXiv 2205.09646 (V100 training 250→150 W: −13.7 % energy, +6.8 % time); "
             "MFU 35 %, in the 30–60 % range of published training runs"),
    WorkKind("llm-train", 0.88, 0.30, 0.45, 0.40,
             "60–70 % TDP: −15..−23 % energy, +7..+13 % time; MFU 40 % (PaLM reports 46 %, "
             "Megatron-LM 40–52 % on A100)"),
    WorkKind("llm-infer", 0.96, 0.30, 0.25, 0.15,
             "Samsi et al. arXiv 2310.03003 (A100 LLaMA inference 250→175 W: about −23 % energy, "
             "+6–7 % latency); 15 % of peak ≈ 3,300 tokens/s of a 7B model per A100, the order vLLM "
             "(Kwon et al., SOSP'23) reports for batched serving"),
    WorkKind("batch-infer", 0.85, 0.30, 0.50, 0.35,
             "offline, prefill-heavy batches: MLPerf Inference v4.0 Llama 2 70B offline ≈ 3,000 "
             "tokens/s per H100 (≈ 42 % of peak); 35 % used"),
    WorkKind("embed", 0.60, 0.30, 0.35, 0.10, "small encoder serving; 10 % of peak at full load"),
)}


@dataclass(frozen=True)
class OperatingPoint:
    """A GPU's steady state: power (W), SM clock share, time per unit of work relative to full clocks."""

    power_w: float
    clock: float
    slowdown: float  # T(f) >= 1

    @property
    def speed(self) -> float:
        """Throughput relative to full clocks (1 / slowdown)."""
        return 1.0 / self.slowdown


def _t(f: float, c: float) -> float:
    return c / f + 1.0 - c


def _g(f: float) -> float:
    return f**ALPHA if f >= F_V else F_V ** (ALPHA - 1) * f


def _power(spec: GpuSpec, dyn_w: float, kind: WorkKind, f: float) -> float:
    m = kind.mem_share
    return spec.idle_w + dyn_w * (m / _t(f, kind.clock_bound) + (1 - m) * _g(f))


def operating_point(spec: GpuSpec, kind: WorkKind, util: float, cap_w: float) -> OperatingPoint:
    """Power, clock and slowdown of a GPU at utilisation ``util`` (0..1) under limit ``cap_w``."""
    u = min(max(util, 0.0), 1.0)
    dyn_w = u * max(kind.activity * spec.tdp_w - spec.idle_w, 0.0)
    full = _power(spec, dyn_w, kind, 1.0)
    if full <= cap_w or dyn_w <= 0:
        return OperatingPoint(full, 1.0, 1.0)
    lo, hi = 1e-6, 1.0  # bisection: power rises monotonically with f
    for _ in range(50):
        mid = (lo + hi) / 2
        if _power(spec, dyn_w, kind, mid) <= cap_w:
            lo = mid
        else:
            hi = mid
    return OperatingPoint(_power(spec, dyn_w, kind, lo), lo, _t(lo, kind.clock_bound))


def locked_clock_point(spec: GpuSpec, kind: WorkKind, util: float, clock: float) -> OperatingPoint:
    """The state with SM clocks locked at share ``clock`` of max (nvidia-smi -lgc), no binding cap."""
    u = min(max(util, 0.0), 1.0)
    dyn_w = u * max(kind.activity * spec.tdp_w - spec.idle_w, 0.0)
    return OperatingPoint(_power(spec, dyn_w, kind, clock), clock, _t(clock, kind.clock_bound))


# 8-bit math has twice the 16-bit peak but end-to-end gains of ~1.3-1.5x are what is published
# for H100 FP8 (NVIDIA Transformer Engine, TensorRT-LLM): 8-bit runs reach 0.7 of the MFU of 16-bit.
LOW_PRECISION_MFU = 0.7


def work_rate_flops(spec: GpuSpec, kind: WorkKind, precision: str, util: float,
                    op: OperatingPoint) -> float:
    """Achieved FLOP/s: MFU × peak at full clocks, scaled by load and by the clock slowdown."""
    mfu = kind.mfu * (LOW_PRECISION_MFU if precision in ("fp8", "int8", "int4") else 1.0)
    return mfu * spec.peak(precision) * 1e12 * min(max(util, 0.0), 1.0) * op.speed


@dataclass(frozen=True)
class CapRow:
    """One row of ``wattlens simulate caps``: per unit of work = one second of work at full clocks."""

    cap_w: float
    power_w: float
    throughput: float  # work/s relative to full clocks and full limit
    energy_per_work_j: float
    time_per_work_s: float


def cap_table(spec: GpuSpec, kind: WorkKind, step_w: float | None = None,
              util: float = 1.0) -> list[CapRow]:
    """Every cap from the model's minimum to its TDP, in ``step_w`` steps (default ~5 % of TDP)."""
    step = step_w or max(1.0, round(spec.tdp_w / 20))
    caps = []
    c = spec.min_cap_w
    while c < spec.tdp_w:
        caps.append(c)
        c += step
    caps.append(spec.tdp_w)
    rows = []
    for cap in caps:
        op = operating_point(spec, kind, util, cap)
        rows.append(CapRow(cap, op.power_w, op.speed, op.power_w * op.slowdown, op.slowdown))
    return rows
