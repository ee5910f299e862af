"""GPU models with their public figures: board power (TDP), idle draw, power-limit range, peak TFLOPS.

Sources (each figure is the vendor's datasheet unless marked):
- NVIDIA V100 datasheet (PCIe 250 W, SXM2 300 W; fp16 tensor 112 / 125 TFLOPS, fp32 14 / 15.7).
- NVIDIA A100 datasheet (PCIe 250 W, SXM4 400 W; bf16 dense 312, tf32 dense 156 TFLOPS).
- NVIDIA H100 SXM / H200 datasheets (700 W; bf16 dense 989, fp8 dense 1979, tf32 dense 494 TFLOPS).
- NVIDIA L4 (72 W; bf16 dense 121, fp8 242) and L40S (350 W; bf16 dense 362, fp8 733) datasheets.
- AMD Instinct MI300X datasheet (750 W; bf16 dense 1307, fp8 2615, fp32 163 TFLOPS).
- Minimum power limits: ``nvidia-smi -q -d POWER`` "Min Power Limit" as reported for these boards
  (V100 PCIe 100 W, V100 SXM2 150 W, A100 PCIe 150 W, A100 SXM4 100 W, H100/H200 SXM 200 W,
  L4 40 W, L40S 100 W); MI300X: ``power1_cap_min`` is not published, 200 W assumed.
- Idle draw (observed, not a datasheet figure): nvidia-smi on an idle GPU in persistence mode, as
  commonly reported; MI300X from public reviews. Approximate: used only where a fleet has no idle
  GPU of that model to measure, and labelled so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model's public figures. ``peak_tflops`` is dense (no sparsity) per precision."""

    model: str
    tdp_w: float
    idle_w: float
    min_cap_w: float
    peak_tflops: dict[str, float] = field(hash=False)
    mem_clock_mhz: float = 1593
    max_sm_clock_mhz: float = 1410
    vendor: str = "nvidia"  # "amd": read through hwmon (amdgpu), not NVML

    @property
    def bf16_tflops(self) -> float:
        return self.peak("bf16")

    def peak(self, precision: str) -> float:
        """Peak dense TFLOPS for a precision; a precision the GPU lacks runs at the next wider one."""
        for p in {"fp8": ("fp8", "bf16", "fp16"), "int8": ("int8", "fp8", "bf16", "fp16"),
                  "bf16": ("bf16", "fp16"), "fp16": ("fp16", "bf16"),
                  "tf32": ("tf32", "fp32"), "fp32": ("tf32", "fp32")}.get(precision, (precision,)):
            if p in self.peak_tflops:
                return self.peak_tflops[p]
        return self.peak_tflops["fp32"]

    def check_cap(self, cap_w: float) -> float:
        """A power limit NVML would accept; outside [min, max] it answers NVML_ERROR_INVALID_ARGUMENT."""
        if not (self.min_cap_w <= cap_w <= self.tdp_w):
            raise ValueError(f"power limit: {cap_w:g} W is outside {self.model}'s range "
                             f"[{self.min_cap_w:g}, {self.tdp_w:g}] W (NVML_ERROR_INVALID_ARGUMENT)")
        return float(cap_w)


def _s(model: str, tdp: float, idle: float, lo: float, peaks: dict[str, float], mem: float,
       sm: float, vendor: str = "nvidia") -> GpuSpec:
    return GpuSpec(model, tdp, idle, lo, peaks, mem, sm, vendor)


GPU_SPECS: dict[str, GpuSpec] = {
    s.model: s
    for s in (
        _s("Tesla V100-PCIE-32GB", 250, 25, 100, {"fp16": 112, "fp32": 14}, 877, 1380),
        _s("Tesla V100-SXM2-32GB", 300, 40, 150, {"fp16": 125, "fp32": 15.7}, 877, 1530),
        _s("NVIDIA A100-PCIE-40GB", 250, 35, 150, {"bf16": 312, "fp16": 312, "tf32": 156,
                                                    "fp32": 19.5, "int8": 624}, 1215, 1410),
        _s("NVIDIA A100-SXM4-80GB", 400, 55, 100, {"bf16": 312, "fp16": 312, "tf32": 156,
                                                    "fp32": 19.5, "int8": 624}, 1593, 1410),
        _s("NVIDIA H100 80GB HBM3", 700, 70, 200, {"bf16": 989, "fp16": 989, "fp8": 1979,
                                                    "tf32": 494, "fp32": 67}, 2619, 1980),
        _s("NVIDIA H200", 700, 75, 200, {"bf16": 989, "fp16": 989, "fp8": 1979, "tf32": 494,
                                          "fp32": 67}, 3201, 1980),
        _s("NVIDIA L4", 72, 16, 40, {"bf16": 121, "fp16": 121, "fp8": 242, "tf32": 60,
                                      "fp32": 30.3}, 6251, 2040),
        _s("NVIDIA L40S", 350, 35, 100, {"bf16": 362, "fp16": 362, "fp8": 733, "tf32": 183,
                                          "fp32": 91.6}, 9001, 2520),
        _s("AMD Instinct MI300X", 750, 140, 200, {"bf16": 1307, "fp16": 1307, "fp8": 2615,
                                                   "tf32": 654, "fp32": 163}, 1300, 2100, "amd"),
    )
}


def find_model(text: str) -> GpuSpec:
    """The one model whose name contains ``text`` (case-insensitive): "V100-PCIE", "A100-SXM4", "H100"."""
    needle = text.strip().lower()
    hits = [s for name, s in GPU_SPECS.items() if needle and needle in name.lower()]
    if len(hits) > 1:  # "L4" is in "L40S" too: a whole-word match decides
        words = [s for s in hits if re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])",
                                              s.model.lower())]
        hits = words if len(words) == 1 else hits
    if len(hits) != 1:
        known = ", ".join(sorted(GPU_SPECS))
        what = "matches none" if not hits else "is ambiguous: " + ", ".join(s.model for s in hits)
        raise ValueError(f"--gpu: {text!r} {what}; known models: {known}")
    return hits[0]
