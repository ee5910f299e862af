"""A hand-made two-host store whose PER, energy and idle figures are easy to compute by hand."""

from __future__ import annotations

from pathlib import Path

from collector.schema import point
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
T0 = 1_795_737_600 * NS  # 2026-11-27T00:00Z
STEP = 600
N = 12  # two hours of 10-minute points
A100, L4 = "NVIDIA A100-SXM4-80GB", "NVIDIA L4"


def write_small_fleet(path: Path) -> SQLiteStore:
    """h1: GPU 0 busy with job-a (train), GPU 1 idle; h2: GPU 0 with job-b (infer), CPU estimated."""
    store = SQLiteStore(path)
    pts = []
    for k in range(1, N + 1):
        t = T0 + k * STEP * NS
        for host, gpu, model, energy, util, limit in (("h1", "0", A100, 6000.0, 90.0, 400.0),
                                                       ("h1", "1", A100, 30000.0, 0.0, 400.0),
                                                       ("h2", "0", L4, 1200.0, 50.0, 72.0)):
            pts.append(point("gpu", {"host": host, "gpu": gpu, "model": model, "method": "counter"},
                             {"energy_j": energy, "power_w": energy / STEP, "util_pct": util,
                              "power_limit_w": limit}, t))
        pts.append(point("cpu", {"host": "h1", "domain": "package-0", "method": "counter"},
                         {"energy_j": 300.0, "power_w": 0.5}, t))
        pts.append(point("cpu", {"host": "h2", "domain": "package-0", "method": "estimated"},
                         {"energy_j": 100.0, "power_w": 1 / 6}, t))
        pts.append(point("job", {"job": "job-a", "host": "h1", "kind": "train", "precision": "bf16",
                                 "gpu_model": A100},
                         {"energy_j": 6000.0, "samples": 600.0, "flops": 600.0 * 1e9,
                          "active_s": float(STEP), "gpus": 1, "batch_size": 10,
                          "power_limit_w": 400.0, "util_pct": 90.0}, t))
        pts.append(point("job", {"job": "job-b", "host": "h2", "kind": "infer", "precision": "fp16",
                                 "gpu_model": L4},
                         {"energy_j": 1200.0, "samples": 2400.0, "active_s": float(STEP), "gpus": 1,
                          "batch_size": 8, "power_limit_w": 72.0, "util_pct": 50.0}, t))
        pts.append(point("facility", {"site": "s"}, {"it_energy_j": 37600.0,
                                                     "facility_energy_j": 56400.0}, t))
    store.write(pts)
    return store
