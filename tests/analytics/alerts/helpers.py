"""Data for the alert tests: the simulated fleet written into a store, and hand-made points."""

from __future__ import annotations

from collections.abc import Iterable

from collector.schema import Point, point
from collector.sources.simulated import SIM_TICK_S, SimulatedFleet
from collector.store.sqlite import SQLiteStore

NS = 1_000_000_000
MIN = 60 * NS
STEP_NS = SIM_TICK_S * NS
# In fleet_layout, node-01 (role 1) leaves its last GPUs idle but powered: with 8 GPUs per
# node those are GPUs 6 and 7. Every other GPU idles only between runs (10 min < 15 min).
IDLE_GPUS = {"node-01/gpu6", "node-01/gpu7"}


def aligned(ns: int) -> int:
    """``ns`` rounded down to a simulation tick."""
    return ns // STEP_NS * STEP_NS


def write_fleet(store: SQLiteStore, start_ns: int, end_ns: int, nodes: int = 2,
                gpus_per_node: int = 8, seed: int = 1) -> SimulatedFleet:
    """Write the simulated fleet's points for [start_ns, end_ns) in 10 s steps."""
    fleet = SimulatedFleet(nodes=nodes, gpus_per_node=gpus_per_node, seed=seed)
    points: list[Point] = []
    t = aligned(start_ns)
    while t + STEP_NS <= end_ns:
        points.extend(fleet.points_between(t, t + STEP_NS))
        t += STEP_NS
    store.write(points)
    return fleet


def gpu_points(host: str, gpu: str, start_ns: int, end_ns: int, power_w: float, util_pct: float,
               power_limit_w: float = 400.0, model: str = "NVIDIA A100-SXM4-80GB",
               uuid: str | None = None) -> list[Point]:
    """One GPU's points every 10 s in [start_ns, end_ns): constant power and utilisation."""
    out = []
    t = aligned(start_ns) + STEP_NS
    while t <= end_ns:
        out.append(point("gpu", {"host": host, "gpu": gpu, "uuid": uuid or f"GPU-{host}-{gpu}",
                                 "model": model, "method": "simulated"},
                         {"power_w": power_w, "energy_j": power_w * SIM_TICK_S,
                          "util_pct": util_pct, "power_limit_w": power_limit_w}, t))
        t += STEP_NS
    return out


def job_points(job: str, host: str, times_ns: Iterable[int], energy_j: float, samples: float,
               deferrable: bool = False) -> list[Point]:
    """A job's points, one per given time, each with the same energy and work increments."""
    return [point("job", {"job": job, "host": host, "kind": "train", "precision": "bf16",
                          "gpu_model": "NVIDIA H100 80GB HBM3"},
                  {"energy_j": energy_j, "samples": samples, "active_s": float(SIM_TICK_S),
                   "gpus": 1, "deferrable": 1 if deferrable else 0}, t)
            for t in times_ns]


def carbon_points(region: str, times_ns: Iterable[int], intensity: float) -> list[Point]:
    return [point("carbon", {"region": region}, {"intensity_g_per_kwh": intensity}, t)
            for t in times_ns]


def trailing_idle_s(store: SQLiteStore, start_ns: int, end_ns: int, util_below_pct: float = 5.0,
                    above_w: float = 40.0) -> dict[str, float]:
    """Per "host/gpuN": how long its points have been idle but powered up to the last one.

    Read from the stored points in 10 s buckets, independently of the alert engine, so a test
    can compare the engine's verdicts with the data whatever the simulated schedule is doing
    at the time of day the test runs.
    """
    from collector.store.base import AggregateQuery

    rows = store.query(AggregateQuery("gpu", (("mean", "util_pct"), ("mean", "power_w")), start_ns,
                                      end_ns, group_by=("host", "gpu"), bucket_s=SIM_TICK_S))
    series: dict[str, list[tuple[int, bool]]] = {}
    for r in rows:
        idle = (r.values["mean_util_pct"] or 0.0) < util_below_pct and (r.values["mean_power_w"] or 0.0) > above_w
        series.setdefault(f"{r.tags['host']}/gpu{r.tags['gpu']}", []).append((r.time_ns or 0, idle))
    out: dict[str, float] = {}
    for target, points in series.items():
        points.sort()
        run = 0
        for _, idle in reversed(points):
            if not idle:
                break
            run += 1
        out[target] = run * SIM_TICK_S
    return out
