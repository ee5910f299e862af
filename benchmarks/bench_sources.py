"""Per-sample cost of each sensor source, and the energy error of 1 Hz power integration on a bursty load.

Run from the repository root: ``python benchmarks/bench_sources.py``. Prints
Markdown tables. Costs use a fake NVML and sysfs trees in a temp directory, so
they measure wattlens's own overhead (a real NVML call adds its driver time:
``scripts/gpu_check.py`` measures that on a GPU machine).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, for tests.*

from collector.counters import PowerIntegrator
from collector.sources.base import Source
from collector.sources.cpu_estimate import CpuEstimateSource
from collector.sources.hwmon import HwmonSource
from collector.sources.nvml import NvmlSource
from collector.sources.rapl import RaplSource
from tests.collector.sources.fake_pynvml import FakeGpu, FakeNvml
from tests.collector.sources.trees import (
    amdgpu,
    hwmon,
    proc,
    stat,
    tick,
    two_socket_server,
)


def per_sample_us(source: Source, devices: int, rounds: int, repeats: int = 5,
                  between: Callable[[int], None] | None = None) -> float:
    """Median over repeats of (time of `rounds` samples) / (rounds x devices), in µs."""
    source.probe()
    t = 0.0
    source.sample(tick(t))
    results = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for i in range(rounds):
            t += 1.0
            if between is not None:
                between(i)
            source.sample(tick(t))
        elapsed_ns = time.perf_counter_ns() - started
        results.append(elapsed_ns / 1e3 / (rounds * devices))
    source.close()
    return statistics.median(results)


def bench_costs(rounds: int) -> list[tuple[str, str, int, float]]:
    rows: list[tuple[str, str, int, float]] = []
    fake = FakeNvml([FakeGpu(uuid=f"GPU-{i}") for i in range(8)])

    def burn(_: int) -> None:
        for g in fake.gpus:
            g.consume_mj(300_000)

    rows.append(("nvml (fake binding)", "8 GPUs", 8,
                 per_sample_us(NvmlSource("h", nvml=fake), 8, rounds, between=burn)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rapl = two_socket_server(root / "powercap")
        rows.append(("rapl", "2 packages + core + 2 dram", 5,
                     per_sample_us(RaplSource(host="h", root=rapl), 5, rounds)))
        amdgpu(root / "hw", 0, "0000:03:00.0", 200_000_000)
        amdgpu(root / "hw", 1, "0000:43:00.0", 200_000_000)
        hwmon(root / "hw", 2, "ina3221", {
            "in1_label": "VDD_IN", "in1_input": 5000, "curr1_input": 1200,
            "in2_label": "VDD_CPU_GPU_CV", "in2_input": 5000, "curr2_input": 400,
            "in3_label": "VDD_SOC", "in3_input": 5000, "curr3_input": 300,
        })
        hwmon(root / "hw", 3, "power_meter", {"power1_average": 450_000_000})
        rows.append(("hwmon", "2 amdgpu + 3 INA3221 rails + BMC", 6,
                     per_sample_us(HwmonSource(host="h", root=root / "hw" / "class"), 6, rounds)))
        cpus = 128
        procdir = proc(root / "proc", "AMD EPYC 7763 64-Core Processor",
                       [c // 64 for c in range(cpus)])
        texts = [stat([(i + c, i, 2 * i, 0) for c in range(cpus)]) for i in range(2)]
        cpuinfo_text = (procdir / "cpuinfo").read_text()
        calls = [0]

        def read_proc(path: Path) -> str:
            # /proc/stat advances between samples; served from memory so the
            # cost is parsing, not writing the fixture.
            if path.name == "cpuinfo":
                return cpuinfo_text
            calls[0] += 1
            return texts[calls[0] % 2]

        rows.append(("cpu-estimate", "2 packages, 128 CPUs", 2,
                     per_sample_us(CpuEstimateSource(host="h", proc_root=procdir,
                                                     read_text=read_proc), 2, rounds)))
    return rows


# --- integration error on a bursty load --------------------------------------------------


def bursty_power(seed: int, duration_s: float, step_s: float = 0.1) -> list[float]:
    """Power (W) held for each 100 ms step: bursts between idle and full load, like training."""
    rng = random.Random(seed)
    steps = round(duration_s / step_s)
    out = []
    level = 300.0
    for _ in range(steps):
        if rng.random() < 0.3:  # a new phase: compute burst, communication lull, or in between
            level = rng.choice([90.0, 250.0, 450.0, 700.0]) * rng.uniform(0.9, 1.1)
        out.append(level)
    return out


def integration_errors(seed: int, duration_s: float) -> dict[str, tuple[float, float]]:
    """Per method: (relative error of total energy, RMS relative error of each 1 s interval).

    Power ``power[i]`` holds over step i. The sampler reads at steps ``phase +
    k x stride``; each 1 s interval between two 1 Hz grid points is compared with
    the exact energy over the same interval (what the counter reports).
    """
    step_s = 0.1
    power = bursty_power(seed, duration_s, step_s)
    per_s = round(1.0 / step_s)
    phase = per_s + random.Random(seed + 1).randrange(per_s)  # where the sampler lands
    grid = list(range(phase, len(power), per_s))
    true_j = [sum(power[a:b]) * step_s for a, b in itertools.pairwise(grid)]

    def instant(t_idx: int) -> float:
        return power[t_idx]

    lag_rng = random.Random(seed + 2)

    def trailing_1s(t_idx: int) -> float:
        # The mean over one second, which the driver refreshes on its own clock:
        # the window ends 0-200 ms before the read, unsynchronised with us.
        end = t_idx - lag_rng.randrange(3)
        return sum(power[end - per_s:end]) / per_s

    methods: dict[str, tuple[Callable[[int], float], int, bool]] = {
        "1 Hz instant power, trapezoid": (instant, per_s, True),
        "1 Hz 1-s average power (NVML, Ampere+), trapezoid": (trailing_1s, per_s, True),
        "1 Hz 1-s average power (NVML, Ampere+), rectangle": (trailing_1s, per_s, False),
        "10 Hz instant power, trapezoid": (instant, 1, True),
    }
    out: dict[str, tuple[float, float]] = {}
    for name, (reader, stride, trapezoid) in methods.items():
        integrator = PowerIntegrator()
        est_j = [0.0] * len(true_j)
        for t_idx in range(phase, grid[-1] + 1, stride):
            reading = reader(t_idx)
            if trapezoid:
                energy = integrator.update(t_idx * step_s, reading)
            else:
                energy = None if t_idx == phase else reading * stride * step_s
            if energy is not None:
                est_j[(t_idx - phase - 1) // per_s] += energy
        rel = [(e - t) / t for e, t in zip(est_j, true_j, strict=True)]
        rms = (sum(r * r for r in rel) / len(rel)) ** 0.5
        out[name] = ((sum(est_j) - sum(true_j)) / sum(true_j), rms)
    return out


def bench_integration(seeds: int, duration_s: float) -> list[tuple[str, float, float, float]]:
    runs = [integration_errors(seed, duration_s) for seed in range(seeds)]
    rows = []
    for name in runs[0]:
        totals = [abs(r[name][0]) for r in runs]
        rms = [r[name][1] for r in runs]
        rows.append((name, statistics.mean(totals), max(totals), statistics.mean(rms)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="samples per timing repeat")
    parser.add_argument("--seeds", type=int, default=20, help="bursty runs to average")
    parser.add_argument("--duration-s", type=float, default=600.0, help="length of each run")
    args = parser.parse_args(argv)

    print(f"Python {sys.version.split()[0]}, {args.rounds} samples x 5 repeats (median)\n")
    print("| source | devices | µs per device per sample |")
    print("|---|---|---:|")
    for name, what, _, us in bench_costs(args.rounds):
        print(f"| {name} | {what} | {us:.1f} |")
    print(f"\nBursty load: power changes every 100 ms; {args.seeds} runs x "
          f"{args.duration_s:.0f} s; truth = the energy counter (exact integral)\n")
    print("| method | mean abs error, total | worst error, total | RMS error per 1 s interval |")
    print("|---|---:|---:|---:|")
    for name, mean_total, worst_total, rms in bench_integration(args.seeds, args.duration_s):
        print(f"| {name} | {mean_total:.3%} | {worst_total:.3%} | {rms:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
