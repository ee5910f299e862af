"""Check NVML power and energy on this machine's GPUs: idle, then under a torch matmul load.

Usage: ``python scripts/gpu_check.py [--seconds 30] [--interval-s 0.1]``. For each
GPU it prints power, the energy counter's energy, energy integrated from power
(at the sampling rate and at 1 Hz) and their differences, per phase; then the
cost of each NVML call and of one wattlens sample, in µs. Needs an NVIDIA GPU
and driver; the load phase needs torch with CUDA (it is skipped without).
CI does not run this.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

from collector.counters import PowerIntegrator
from collector.sources.base import Tick
from collector.sources.nvml import NvmlSource


@dataclass
class Phase:
    """What one GPU did during one phase."""

    powers_w: list[float] = field(default_factory=list)
    start_mj: int | None = None
    end_mj: int | None = None
    fast: PowerIntegrator = field(default_factory=PowerIntegrator)
    slow: PowerIntegrator = field(default_factory=PowerIntegrator)
    fast_j: float = 0.0
    slow_j: float = 0.0
    last_slow_s: float = -1e9
    slow_start_mj: int | None = None  # the counter at the first and last 1 Hz sample,
    slow_end_mj: int | None = None  # so the 1 Hz integral is compared over its own span
    check_rel_diff: float | None = None  # the source's own quality point


def timed(costs: dict[str, list[float]], name: str, fn: Callable[..., Any], *args: Any) -> Any:
    started = time.perf_counter_ns()
    try:
        return fn(*args)
    finally:
        costs.setdefault(name, []).append((time.perf_counter_ns() - started) / 1e3)


def matmul_load(stop: threading.Event, ready: threading.Event, errors: list[str]) -> None:
    """Keep every visible GPU busy with bf16 matmuls until ``stop``."""
    try:
        import torch  # only here: the agent never imports torch
    except ImportError as exc:
        errors.append(f"torch not importable ({exc}): pip install torch")
        ready.set()
        return
    if not torch.cuda.is_available():
        errors.append("torch has no CUDA here (CPU-only build, or no visible GPU)")
        ready.set()
        return
    mats = [torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.bfloat16)
            for i in range(torch.cuda.device_count())]
    ready.set()
    while not stop.is_set():
        for a in mats:
            for _ in range(4):
                torch.matmul(a, a)
        for i in range(len(mats)):
            torch.cuda.synchronize(i)


def run_phase(nv: Any, handles: list[Any], source: NvmlSource, seconds: float, interval_s: float,
              costs: dict[str, list[float]], counters: list[bool]) -> list[Phase]:
    phases = [Phase() for _ in handles]
    fields = [nv.NVML_FI_DEV_POWER_INSTANT, nv.NVML_FI_DEV_POWER_AVERAGE]
    started = time.monotonic()
    next_sample = started
    next_tick = started
    while True:
        now = time.monotonic()
        if now - started > seconds:
            break
        for h, phase, has_counter in zip(handles, phases, counters, strict=True):
            power_w = timed(costs, "nvmlDeviceGetPowerUsage", nv.nvmlDeviceGetPowerUsage, h) / 1e3
            phase.powers_w.append(power_w)
            mj = None
            if has_counter:
                mj = timed(costs, "nvmlDeviceGetTotalEnergyConsumption",
                           nv.nvmlDeviceGetTotalEnergyConsumption, h)
                phase.start_mj = mj if phase.start_mj is None else phase.start_mj
                phase.end_mj = mj
            try:
                timed(costs, "nvmlDeviceGetFieldValues (2 fields)", nv.nvmlDeviceGetFieldValues,
                      h, fields)
            except nv.NVMLError:
                pass
            phase.fast_j += phase.fast.update(now, power_w) or 0.0
            if now - phase.last_slow_s >= 1.0 - interval_s / 2:
                phase.slow_j += phase.slow.update(now, power_w) or 0.0
                phase.last_slow_s = now
                if mj is not None:
                    phase.slow_start_mj = mj if phase.slow_start_mj is None else phase.slow_start_mj
                    phase.slow_end_mj = mj
        if now >= next_tick:  # the real source, at 1 Hz, as the agent runs it
            points = timed(costs, "NvmlSource.sample (all GPUs)", source.sample,
                           Tick(time.time_ns(), time.monotonic()))
            for p in points:
                if p.measurement == "quality":
                    rel = p.field("energy_check_rel_diff")
                    phases[int(p.tag("device") or 0)].check_rel_diff = (
                        float(rel) if isinstance(rel, float) else None)
            next_tick += 1.0
        next_sample += interval_s
        time.sleep(max(0.0, next_sample - time.monotonic()))
    return phases


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def span_j(start_mj: int | None, end_mj: int | None) -> float | None:
    return None if start_mj is None or end_mj is None else (end_mj - start_mj) / 1e3


def report(names: list[str], results: dict[str, list[Phase]], counters: list[bool]) -> None:
    for i, name in enumerate(names):
        print(f"\nGPU {i}  {name}  (energy counter: {'yes' if counters[i] else 'no'})")
        header = (f"{'phase':<6} {'mean W':>8} {'max W':>8} {'counter J':>11} {'integ. J':>10} "
                  f"{'diff':>8} {'1 Hz J':>10} {'diff':>8} {'source check':>13}")
        print(header)
        for phase_name, phases in results.items():
            ph = phases[i]
            counter_j = span_j(ph.start_mj, ph.end_mj)
            slow_counter_j = span_j(ph.slow_start_mj, ph.slow_end_mj)
            mean_w = statistics.mean(ph.powers_w) if ph.powers_w else 0.0
            max_w = max(ph.powers_w, default=0.0)

            def rel(x: float, ref: float | None = counter_j) -> float | None:
                return None if not ref else (x - ref) / ref

            print(f"{phase_name:<6} {mean_w:>8.1f} {max_w:>8.1f} "
                  f"{'-' if counter_j is None else f'{counter_j:.1f}':>11} {ph.fast_j:>10.1f} "
                  f"{pct(rel(ph.fast_j)):>8} {ph.slow_j:>10.1f} {pct(rel(ph.slow_j, slow_counter_j)):>8} "
                  f"{pct(ph.check_rel_diff):>13}")


def main(argv: list[str] | None = None, nvml: Any = None) -> int:
    """Run the check; ``nvml`` replaces the pynvml module (for a dry run against a fake)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="total: half idle, half load")
    parser.add_argument("--interval-s", type=float, default=0.1, help="fast sampling interval")
    args = parser.parse_args(argv)
    phase_s = args.seconds / 2

    source = NvmlSource("gpu-check", nvml=nvml, quality_interval_s=max(1.0, phase_s - 1.0))
    probe = source.probe()
    if not probe.ok:
        print(f"gpu_check: no NVIDIA GPU to check here: {probe.detail}", file=sys.stderr)
        return 1
    print(f"nvml: {probe.detail}")
    nv = nvml if nvml is not None else importlib.import_module("pynvml")
    nv.nvmlInit()  # the probe found NVML; init is reference-counted
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
    names = [str(nv.nvmlDeviceGetName(h)) for h in handles]
    counters = [method == "counter" for _, _, _, method in source.gpus()]
    costs: dict[str, list[float]] = {}
    results: dict[str, list[Phase]] = {}

    source.sample(Tick(time.time_ns(), time.monotonic()))
    print(f"idle phase: {phase_s:.0f} s (leave the GPUs alone)")
    results["idle"] = run_phase(nv, handles, source, phase_s, args.interval_s, costs, counters)

    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # torch numbering = NVML numbering
    stop, ready = threading.Event(), threading.Event()
    errors: list[str] = []
    loader = threading.Thread(target=matmul_load, args=(stop, ready, errors), daemon=True)
    loader.start()
    ready.wait(120)
    if errors:
        print(f"load phase skipped: {errors[0]}")
    else:
        print(f"load phase: {phase_s:.0f} s of bf16 8192x8192 matmuls on every GPU")
        results["load"] = run_phase(nv, handles, source, phase_s, args.interval_s, costs, counters)
    stop.set()
    loader.join(30)

    report(names, results, counters)
    print(f"\nintegrated at {1 / args.interval_s:.0f} Hz and at 1 Hz; diff = (integrated - "
          "counter) / counter over the same span; 'source check' = the source's own quality "
          "point (energy_check_rel_diff, 1 Hz)")
    print("\nsampling cost per call (µs)")
    print(f"{'call':<40} {'median':>8} {'p95':>8} {'calls':>7}")
    for name, values in costs.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"{name:<40} {statistics.median(values):>8.1f} {p95:>8.1f} {len(values):>7}")
    per_gpu = costs.get("NvmlSource.sample (all GPUs)")
    if per_gpu:
        print(f"{'NvmlSource.sample per GPU':<40} {statistics.median(per_gpu) / len(handles):>8.1f}")
    source.close()
    nv.nvmlShutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
