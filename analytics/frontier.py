"""Per GPU model and workload class: the (time, energy) per unit Pareto frontier over power caps, and the best cap."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analytics.objective import check_lambda, tradeoff_cost
from analytics.per import primary_unit
from analytics.queries import GpuBucket, JobBucket
from analytics.timeutil import Window
from collector.store.base import Store

_PRECISION_TOKENS = re.compile(r"-(fp32|fp16|bf16|fp8|int8|int4|tf32|amp|mixed)(?=-|$)")


def base_workload(workload: str) -> str:
    """A workload tag without precision tokens, to compare like with like: ``bert-ft-fp32`` -> ``bert-ft``.

    Applied to the explicit ``workload`` tag (never to a job id), so that a reporter that named its
    workloads after their precision still has its twins found."""
    return _PRECISION_TOKENS.sub("", workload) or workload


@dataclass(frozen=True)
class FrontierPoint:
    """One power cap of a class: time and energy per unit of work, per GPU, over all its jobs there."""

    cap_w: float
    time_s_per_unit: float  # GPU-seconds per unit of work
    energy_j_per_unit: float
    work: float
    energy_j: float
    gpu_s: float
    peak_power_w: float  # highest bucket-mean power per GPU seen at this cap
    jobs: tuple[str, ...]
    hosts: tuple[str, ...]
    gpus: tuple[str, ...] = ()  # "host/index" the jobs ran on, where the job points say (gpu_mask)

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.gpu_s if self.gpu_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"cap_w": self.cap_w, "time_s_per_unit": self.time_s_per_unit,
                "energy_j_per_unit": self.energy_j_per_unit, "work": self.work,
                "energy_j": self.energy_j, "gpu_s": self.gpu_s, "peak_power_w": self.peak_power_w,
                "mean_power_w": self.mean_power_w, "jobs": list(self.jobs),
                "hosts": list(self.hosts), "gpus": list(self.gpus)}


@dataclass(frozen=True)
class Frontier:
    """A workload class on one GPU model, its points over the caps seen, and P_max for cost(λ)."""

    gpu_model: str
    kind: str
    workload: str
    precision: str
    unit: str
    p_max_w: float
    points: tuple[FrontierPoint, ...]  # every cap seen, by cap

    @property
    def key(self) -> str:
        """A stable identity for the class: model|kind|workload|precision."""
        return f"{self.gpu_model}|{self.kind}|{self.workload}|{self.precision}"

    @property
    def label(self) -> str:
        return f"{self.workload} ({self.kind}, {self.precision}) on {self.gpu_model}"

    @property
    def frontier(self) -> tuple[FrontierPoint, ...]:
        """The Pareto-optimal points: no other point is at least as fast and as frugal, and better in one."""
        return pareto(self.points)

    def to_dict(self, lam: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gpu_model": self.gpu_model, "kind": self.kind, "workload": self.workload,
            "precision": self.precision, "unit": self.unit, "p_max_w": self.p_max_w,
            "points": [p.to_dict() for p in self.points],
            "frontier_caps_w": [p.cap_w for p in self.frontier]}
        if lam is not None:
            best = best_cap(self, lam)
            out["lambda"] = lam
            out["best_cap_w"] = best.cap_w if best else None
            out["cost_j_per_unit"] = {str(p.cap_w): point_cost(self, p, lam) for p in self.points}
        return out


def pareto(points: Iterable[FrontierPoint]) -> tuple[FrontierPoint, ...]:
    """Non-dominated points in (time, energy) per unit, fastest first."""
    pts = list(points)
    out = []
    for p in pts:
        dominated = any(
            q is not p and q.time_s_per_unit <= p.time_s_per_unit
            and q.energy_j_per_unit <= p.energy_j_per_unit
            and (q.time_s_per_unit < p.time_s_per_unit or q.energy_j_per_unit < p.energy_j_per_unit)
            for q in pts)
        if not dominated:
            out.append(p)
    return tuple(sorted(out, key=lambda p: (p.time_s_per_unit, p.energy_j_per_unit, p.cap_w)))


def point_cost(frontier: Frontier, p: FrontierPoint, lam: float) -> float:
    """cost(λ) per unit of work at one cap: λ·E + (1−λ)·P_max·T (J per unit)."""
    return tradeoff_cost(p.energy_j_per_unit, p.time_s_per_unit, frontier.p_max_w, lam)


def best_cap(frontier: Frontier, lam: float) -> FrontierPoint | None:
    """The frontier point minimising cost(λ); ties go to the lower energy, then the lower cap."""
    check_lambda(lam, unit_interval=True)
    pts = frontier.frontier
    if not pts:
        return None
    return min(pts, key=lambda p: (point_cost(frontier, p, lam), p.energy_j_per_unit, p.cap_w))


def break_even_lambda(a: FrontierPoint, b: FrontierPoint, p_max_w: float) -> float | None:
    """The λ at which caps ``a`` and ``b`` cost the same; None if one dominates for every λ."""
    dt = b.time_s_per_unit - a.time_s_per_unit
    de = a.energy_j_per_unit - b.energy_j_per_unit
    denom = de + p_max_w * dt
    if denom == 0:
        return None
    lam = p_max_w * dt / denom
    return lam if 0 <= lam <= 1 else None


def job_class(b: JobBucket) -> tuple[str, str, str, str]:
    """(gpu_model, kind, workload, precision): what a frontier compares like with like. The workload
    is the job's explicit ``workload`` tag (its own id where none was set); job ids are never parsed."""
    return (b.gpu_model, b.kind, b.workload_class, b.precision)


def mask_gpus(host: str, mask: int) -> list[str]:
    """``host/index`` for each bit set in a job's ``gpu_mask``."""
    return [f"{host}/{i}" for i in range(mask.bit_length()) if mask >> i & 1]


def _gpu_key(g: str) -> tuple[str, int, str]:
    host, _, idx = g.rpartition("/")
    return (host, int(idx), "") if idx.isdigit() else (host, 1 << 30, idx)


def max_power_by_model(gpus: Iterable[GpuBucket]) -> dict[str, float]:
    """The highest power limit each GPU model showed: P_max in cost(λ)."""
    out: dict[str, float] = {}
    for g in gpus:
        if g.power_limit_w is not None:
            out[g.model] = max(out.get(g.model, 0.0), g.power_limit_w)
    return out


def build_frontiers(jobs: Sequence[JobBucket], p_max_by_model: Mapping[str, float] | None = None,
                    classes: Mapping[str, str] | None = None) -> list[Frontier]:
    """Group job buckets by class and cap; one Frontier per class with work, sorted by key.

    Time per unit is GPU-seconds (active_s × gpus) per unit of the class's primary
    work unit; P_max is the model's highest power limit seen on its GPUs, else the
    class's highest cap. ``classes`` maps a job id to a workload name (overrides its
    ``workload`` tag).
    """
    grouped: dict[tuple[str, str, str, str], list[JobBucket]] = defaultdict(list)
    for b in jobs:
        if b.power_limit_w is None or b.active_s <= 0:
            continue
        model, kind, workload, precision = job_class(b)
        if classes and b.job in classes:
            workload = classes[b.job]
        grouped[(model, kind, workload, precision)].append(b)
    out = []
    for (model, kind, workload, precision), buckets in sorted(grouped.items()):
        totals: dict[str, float] = defaultdict(float)
        for b in buckets:
            for u, w in b.work.items():
                totals[u] += w
        unit = primary_unit(totals)
        if unit is None:
            continue
        caps: dict[float, dict[str, Any]] = {}
        for b in buckets:
            cap = float(round(b.power_limit_w or 0.0))
            c = caps.setdefault(cap, {"work": 0.0, "energy": 0.0, "gpu_s": 0.0, "peak": 0.0,
                                      "jobs": set(), "hosts": set(), "gpus": set()})
            if b.gpu_mask is not None:
                c["gpus"].update(mask_gpus(b.host, b.gpu_mask))
            gpu_s = b.active_s * max(b.gpus, 1)
            c["work"] += b.work.get(unit, 0.0)
            c["energy"] += b.energy_j
            c["gpu_s"] += gpu_s
            c["peak"] = max(c["peak"], b.energy_j / gpu_s)
            c["jobs"].add(b.job)
            c["hosts"].add(b.host)
        points = tuple(
            FrontierPoint(cap, c["gpu_s"] / c["work"], c["energy"] / c["work"], c["work"],
                          c["energy"], c["gpu_s"], c["peak"], tuple(sorted(c["jobs"])),
                          tuple(sorted(c["hosts"])), tuple(sorted(c["gpus"], key=_gpu_key)))
            for cap, c in sorted(caps.items()) if c["work"] > 0 and c["energy"] > 0)
        if not points:
            continue
        p_max = (p_max_by_model or {}).get(model) or max(p.cap_w for p in points)
        out.append(Frontier(model, kind, workload, precision, unit, p_max, points))
    return out


def frontiers(store: Store, window: Window, bucket_s: int = 300) -> list[Frontier]:
    """Every class's frontier over the window, read through analytics.queries."""
    from analytics import queries

    jobs = queries.job_buckets(store, window, bucket_s)
    gpus = queries.gpu_buckets(store, window, max(bucket_s, 3600))
    return build_frontiers(jobs, max_power_by_model(gpus))
